"""edgert against LiteRT on one model, measured in the same run: the data behind `edgert bench`.

Latency: the three runtimes (edgert, LiteRT with XNNPACK, LiteRT builtin kernels without
delegates) are timed in one process, round-robin, so machine noise hits all of them alike.
Memory and start-up: each runtime is loaded in a fresh subprocess (a process's RSS cannot be
split between runtimes that share it): load time, process RSS split into private (anonymous)
and file-backed pages, and for edgert the cold start (empty numba cache: kernels compile) and
the warm start (kernels load from the cache).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("edgert", "litert_xnnpack", "litert_builtin")
_LITERT_KERNELS = {"litert_xnnpack": "xnnpack", "litert_builtin": "builtin"}


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def latency(model: str | Path, *, threads: int = 1, runs: int = 50, warmup: int = 5,
            executor_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median and p90 latency (ms) of each runtime on the same seeded input, interleaved."""
    from edgert.reference import random_inputs, reference_interpreter
    from edgert.runtime.executor import Executor

    ex = Executor({"model": model}, threads=threads, **(executor_options or {}))
    inputs = random_inputs([(s.shape, s.dtype) for s in ex.input_specs("model")], seed=0)
    calls = {"edgert": lambda: ex.run("model", inputs, copy=False)}
    for name, kernels in _LITERT_KERNELS.items():
        ip = reference_interpreter(model, kernels=kernels, threads=threads)
        details = ip.get_input_details()

        def call(ip=ip, details=details):
            for d, v in zip(details, inputs):
                ip.set_tensor(d["index"], v)
            ip.invoke()
        calls[name] = call
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    for _ in range(runs):
        for name, fn in calls.items():
            t = time.perf_counter_ns()
            fn()
            samples[name].append((time.perf_counter_ns() - t) / 1e6)
    out = {name: {"median_ms": statistics.median(s), "p90_ms": _percentile(s, 90)} for name, s in samples.items()}
    for name in _LITERT_KERNELS:
        out[name]["edgert_ratio"] = out["edgert"]["median_ms"] / out[name]["median_ms"]
    out["edgert"]["arena_bytes"] = ex.arena_bytes
    out["edgert"]["lower_bound_bytes"] = ex.plans["model"].lower_bound_bytes
    return out


def _probe(runtime: str, model: str, threads: int, cache_dir: str | None) -> dict[str, Any]:
    """Load one runtime in a fresh interpreter process and report its start-up and memory."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    proc = subprocess.run([sys.executable, "-m", "edgert.bench", "--probe", runtime, model, str(threads)],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"bench probe {runtime} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def startup_and_memory(model: str | Path, *, threads: int = 1) -> dict[str, Any]:
    """Per runtime: load seconds and RSS after 3 inferences; edgert cold (compiling) and warm (cached)."""
    model = str(model)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgert-bench-cache-") as cache:
        cold = _probe("edgert", model, threads, cache)
        warm = _probe("edgert", model, threads, cache)
    out["edgert"] = {**warm, "cold_start_s": cold["load_s"], "warm_start_s": warm["load_s"]}
    for name in _LITERT_KERNELS:
        out[name] = _probe(name, model, threads, None)
    return out


def _probe_main(runtime: str, model: str, threads: int) -> None:
    t0 = time.perf_counter()
    from edgert.reference import random_inputs
    from edgert.serve.memory import ProcessMemory

    if runtime == "edgert":
        from edgert.runtime.executor import Executor

        ex = Executor({"model": model}, threads=threads)
        load_s = time.perf_counter() - t0
        inputs = random_inputs([(s.shape, s.dtype) for s in ex.input_specs("model")], seed=0)
        for _ in range(3):
            ex.run("model", inputs, copy=False)
        extra = {"arena_bytes": ex.arena_bytes}
    else:
        from edgert.reference import reference_interpreter

        ip = reference_interpreter(model, kernels=_LITERT_KERNELS[runtime], threads=threads)
        load_s = time.perf_counter() - t0
        inputs = random_inputs([(tuple(d["shape"]), d["dtype"]) for d in ip.get_input_details()], seed=0)
        for _ in range(3):
            for d, v in zip(ip.get_input_details(), inputs):
                ip.set_tensor(d["index"], v)
            ip.invoke()
        extra = {"arena_bytes": int(ip._interpreter.GetArenaSize()) if hasattr(ip._interpreter, "GetArenaSize") else None}
    mem = ProcessMemory.of()
    print(json.dumps({"load_s": load_s, "rss_bytes": mem.rss, "private_bytes": mem.private,
                      "file_backed_bytes": mem.file_backed, **extra}))


def bench(model: str | Path, *, threads: int = 1, runs: int = 50, memory: bool = True,
          executor_options: dict[str, Any] | None = None) -> dict[str, Any]:
    result = {"model": str(model), "threads": threads, "runs": runs,
              "latency": latency(model, threads=threads, runs=runs, executor_options=executor_options)}
    if memory:
        result["startup_memory"] = startup_and_memory(model, threads=threads)
    return result


def format_bench(r: dict[str, Any]) -> str:
    lines = [f"{r['model']}  threads={r['threads']} runs={r['runs']}",
             f"{'runtime':<16}{'median ms':>11}{'p90 ms':>10}{'edgert/x':>10}"]
    lat = r["latency"]
    for name in RUNTIMES:
        ratio = lat[name].get("edgert_ratio")
        lines.append(f"{name:<16}{lat[name]['median_ms']:>11.3f}{lat[name]['p90_ms']:>10.3f}"
                     + (f"{ratio:>10.2f}" if ratio is not None else f"{'':>10}"))
    lines.append(f"edgert arena {lat['edgert']['arena_bytes']:,} bytes (lower bound {lat['edgert']['lower_bound_bytes']:,})")
    sm = r.get("startup_memory")
    if sm:
        lines.append(f"{'runtime':<16}{'load s':>9}{'RSS MiB':>10}{'private':>10}{'file':>9}")
        for name in RUNTIMES:
            m = sm[name]
            lines.append(f"{name:<16}{m['load_s']:>9.2f}{m['rss_bytes'] / 2**20:>10.1f}"
                         f"{m['private_bytes'] / 2**20:>10.1f}{m['file_backed_bytes'] / 2**20:>9.1f}")
        e = sm["edgert"]
        lines.append(f"edgert start: cold (compiling kernels) {e['cold_start_s']:.2f} s, warm (numba cache) {e['warm_start_s']:.2f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--probe":
        _probe_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: python -m edgert.bench --probe RUNTIME MODEL THREADS (use `edgert bench`)")
