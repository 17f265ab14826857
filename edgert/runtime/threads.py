"""The `threads` setting: numba's parallel loops and the BLAS library numpy uses for GEMM-shaped kernels."""

from __future__ import annotations

import ctypes
import os

# numba's OpenMP threading layer spins its idle threads by default; with OpenBLAS's own threads
# spinning beside them on a small board, every parallel kernel then waits for a scheduler tick
# (measured: MobileNet v2 0.35 at 2 threads, 194 ms instead of 1 ms). Passive waiting avoids it.
# Set before numba starts its thread pool (at the first parallel kernel), unless the user chose.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

# Symbols OpenBLAS builds export for the thread count (numpy 2 wheels ship scipy-openblas).
_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads")


def _blas_setter():
    """The thread-count setter of the BLAS loaded into this process, if any (read from /proc/self/maps)."""
    import numpy  # noqa: F401  (ensures numpy's BLAS is loaded)

    try:
        with open("/proc/self/maps") as f:
            libs = {parts[5] for line in f if len(parts := line.split()) >= 6 and "blas" in parts[5].lower()}
    except OSError:
        return None
    for lib in sorted(libs):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in _BLAS_SETTERS:
            fn = getattr(handle, sym, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                return fn
    return None


def set_threads(threads: int) -> int:
    """Use `threads` threads in numba parallel kernels and BLAS for the calling thread; returns what was set.

    numba's setting is per calling thread, so the thread that runs requests must call this.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    n = min(threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    setter = _blas_setter()
    if setter is not None:
        setter(n)
    return n
