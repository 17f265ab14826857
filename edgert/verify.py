"""Our outputs against LiteRT's reference kernels on seeded inputs: the data behind `edgert verify`.

The tolerance is the project's correctness rule:
- float outputs: max abs error <= 1e-4 * max(1, range of |reference|);
- integer (quantized) outputs: equal, or off by exactly one quantization step on at most 1% of
  elements.
Stateful models are fed a sequence of inputs, both runtimes keeping their state across calls.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

FLOAT_RTOL = 1e-4
QUANT_MAX_OFF_BY_ONE = 0.01


@dataclass(frozen=True)
class OutputCheck:
    name: str
    dtype: str
    shape: list[int]
    max_abs_error: float
    max_rel_error: float
    tolerance: float
    off_by_one_fraction: float
    ok: bool


def float_tolerance(ref: np.ndarray) -> float:
    a = np.abs(ref.astype(np.float64))
    span = float(a.max() - a.min()) if a.size else 0.0
    return FLOAT_RTOL * max(1.0, span)


def compare_output(name: str, ours: np.ndarray, ref: np.ndarray) -> OutputCheck:
    """One output against the reference under the project's tolerance rule."""
    if ours.shape != ref.shape or ours.dtype != ref.dtype:
        return OutputCheck(name, str(ref.dtype), list(ref.shape), float("inf"), float("inf"), 0.0, 1.0, False)
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    max_abs = float(diff.max()) if diff.size else 0.0
    nonfinite = not np.array_equal(np.isfinite(ours), np.isfinite(ref)) if ref.dtype.kind == "f" else False
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.maximum(np.abs(ref.astype(np.float64)), 1e-12)
    finite = np.isfinite(rel)
    max_rel = float(rel[finite].max()) if finite.any() else 0.0
    if ref.dtype.kind == "f":
        tol = float_tolerance(ref)
        both_finite = np.isfinite(ours) & np.isfinite(ref)
        max_abs = float(diff[both_finite].max()) if both_finite.any() else 0.0
        ok = not nonfinite and max_abs <= tol and np.array_equal(ours[~both_finite], ref[~both_finite])
        return OutputCheck(name, str(ref.dtype), list(ref.shape), max_abs, max_rel, tol, 0.0, bool(ok))
    off = float(np.count_nonzero(diff)) / max(diff.size, 1)
    ok = max_abs <= 1 and off <= QUANT_MAX_OFF_BY_ONE
    return OutputCheck(name, str(ref.dtype), list(ref.shape), max_abs, max_rel, 1.0, off, bool(ok))


def verify_model(path: str | Path, *, runs: int = 3, seed: int = 0, executor_options: dict[str, Any] | None = None,
                 executor: Any = None) -> dict[str, Any]:
    """Run `runs` seeded requests through edgert and LiteRT BUILTIN_REF; per output, the worst error seen."""
    from edgert.reference import random_inputs, reference_interpreter
    from edgert.runtime.executor import Executor

    ex = executor or Executor({"model": path}, **(executor_options or {}))
    name = ex.models[0]
    ip = reference_interpreter(path, kernels="ref")
    in_details, out_details = ip.get_input_details(), ip.get_output_details()
    specs = ex.input_specs(name)
    worst: dict[int, OutputCheck] = {}
    for r in range(runs):
        inputs = random_inputs([(s.shape, s.dtype) for s in specs], seed=seed + r)
        for d, value in zip(in_details, inputs):
            ip.set_tensor(d["index"], value)
        ip.invoke()
        refs = [ip.get_tensor(d["index"]) for d in out_details]
        ours = ex.run(name, inputs)
        for i, (spec, o, ref) in enumerate(zip(ex.output_specs(name), ours, refs)):
            check = compare_output(spec.name, o, ref)
            prev = worst.get(i)
            if prev is None or (prev.ok and (not check.ok or check.max_abs_error > prev.max_abs_error)):
                worst[i] = check
    outputs = [asdict(worst[i]) for i in sorted(worst)]
    return {
        "model": str(path),
        "ok": all(o["ok"] for o in outputs),
        "runs": runs,
        "seed": seed,
        "rule": "float: max abs err <= 1e-4 * max(1, range |ref|); int: equal or off by one step on <= 1% of elements",
        "arena_bytes": ex.arena_bytes,
        "outputs": outputs,
    }
