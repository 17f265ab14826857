"""One aligned buffer per executor and the views into it: [ persistent | activations + scratch ]."""

from __future__ import annotations

import numpy as np

ALIGN = 64


def align_up(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


class Arena:
    """A single 64-byte aligned byte buffer; every tensor a request touches is a view into it.

    Pages are zero-filled lazily by the OS (np.zeros -> calloc), so RSS grows to the planned size
    during warm-up and stays there.
    """

    def __init__(self, persistent_bytes: int, activation_bytes: int):
        self.persistent_bytes = align_up(persistent_bytes)
        self.activation_bytes = align_up(activation_bytes)
        total = self.persistent_bytes + self.activation_bytes
        raw = np.zeros(total + ALIGN, dtype=np.uint8)
        start = (-raw.ctypes.data) % ALIGN
        self.buffer = raw[start:start + total]
        assert self.buffer.ctypes.data % ALIGN == 0

    @property
    def nbytes(self) -> int:
        return self.buffer.nbytes

    def region(self, name: str) -> np.ndarray:
        """The bytes of one region: "persistent" or "activation"."""
        if name == "persistent":
            return self.buffer[:self.persistent_bytes]
        if name == "activation":
            return self.buffer[self.persistent_bytes:]
        raise ValueError(f"unknown arena region {name!r}")

    def view(self, region: np.ndarray, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A C-contiguous array of `shape`/`dtype` at byte `offset` of `region`."""
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
        if offset < 0 or offset + n > region.nbytes:
            raise ValueError(f"view [{offset}, {offset + n}) outside region of {region.nbytes} bytes")
        return region[offset:offset + n].view(dtype).reshape(shape)
