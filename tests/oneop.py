"""Test helper for kernel authors: build a one-operator model, get LiteRT's outputs, compare with ours.

Typical use in a kernel test (tests/ is on sys.path under pytest, so `from oneop import ...`)::

    model = build_one_op("ADD", [((1, 4, 4, 3), np.float32), ((1, 4, 4, 3), np.float32)],
                         [((1, 4, 4, 3), np.float32)], options={"fused_activation_function": "RELU"})
    inputs = random_inputs(graph_input_specs(model), seed=1)
    ref = reference_outputs(model, inputs)
    ours = <run the kernel / executor on load_model(model) with inputs>
    assert_close_float(ours[0], ref[0])

A spec is (shape, dtype) or (shape, dtype, Quantization). Constant inputs go in `consts`, keyed by
their position among the op's inputs; the remaining positions are filled by the graph inputs in
order. A const value of None is an absent optional input (-1).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edgert.model.builder import ModelBuilder, Quantization, quant
from edgert.reference import reference_interpreter, random_inputs, run_reference

__all__ = [
    "build_one_op", "reference_outputs", "graph_input_specs", "one_op_case",
    "assert_close_float", "assert_close_quant", "float_tolerance", "quant", "random_inputs", "run_edgert",
]

Spec = tuple  # (shape, dtype) or (shape, dtype, Quantization | None)
ConstValue = np.ndarray | tuple[np.ndarray, Quantization | None] | None


def _spec(spec: Spec) -> tuple[tuple[int, ...], Any, Quantization | None]:
    shape, dtype = tuple(spec[0]), spec[1]
    return shape, dtype, (spec[2] if len(spec) > 2 else None)


def build_one_op(opcode: str, input_specs: Sequence[Spec], output_specs: Sequence[Spec],
                 options: Any = None, consts: Mapping[int, ConstValue] | None = None, version: int = 1) -> bytes:
    """A model with one builtin op: graph inputs "input_0".., constants "const_<pos>", outputs "output_0"..

    consts maps op input position -> array, (array, quantization), or None (absent optional input).
    """
    consts = dict(consts or {})
    n_inputs = len(input_specs) + len(consts)
    missing = [p for p in consts if not 0 <= p < n_inputs]
    if missing:
        raise ValueError(f"const positions {missing} outside the op's {n_inputs} inputs")
    b = ModelBuilder(description=f"one-op {opcode}")
    graph_inputs = iter(input_specs)
    op_inputs: list[int] = []
    n_graph_inputs = 0
    for pos in range(n_inputs):
        if pos in consts:
            value = consts[pos]
            if value is None:
                op_inputs.append(-1)
                continue
            arr, q = value if isinstance(value, tuple) else (value, None)
            op_inputs.append(b.const(f"const_{pos}", np.asarray(arr), q))
        else:
            shape, dtype, q = _spec(next(graph_inputs))
            op_inputs.append(b.input(f"input_{n_graph_inputs}", shape, dtype, q))
            n_graph_inputs += 1
    outputs = []
    for i, spec in enumerate(output_specs):
        shape, dtype, q = _spec(spec)
        outputs.append(b.tensor(f"output_{i}", shape, dtype, q))
    b.op(opcode, op_inputs, outputs, options=options, version=version)
    b.output(*outputs)
    return b.build()


def graph_input_specs(model: bytes) -> list[tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each graph input, as LiteRT sees them (feed to random_inputs)."""
    return [(tuple(d["shape"]), np.dtype(d["dtype"])) for d in reference_interpreter(model).get_input_details()]


def reference_outputs(model_bytes: bytes, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """LiteRT BUILTIN_REF outputs for `inputs` (graph input order)."""
    return run_reference(model_bytes, inputs, kernels="ref")


def one_op_case(opcode: str, input_specs: Sequence[Spec], output_specs: Sequence[Spec], options: Any = None,
                consts: Mapping[int, ConstValue] | None = None, version: int = 1,
                seed: int = 0) -> tuple[bytes, list[np.ndarray], list[np.ndarray]]:
    """build_one_op + seeded random inputs + reference outputs: (model, inputs, ref_outputs)."""
    model = build_one_op(opcode, input_specs, output_specs, options, consts, version)
    inputs = random_inputs([_spec(s)[:2] for s in input_specs], seed=seed)
    return model, inputs, reference_outputs(model, inputs)


def float_tolerance(ref: np.ndarray) -> float:
    """The project's float32 tolerance: 1e-4 * max(1, range of |ref|)."""
    mag = np.abs(np.asarray(ref, dtype=np.float64))
    finite = mag[np.isfinite(mag)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    return 1e-4 * max(1.0, spread)


def assert_close_float(ours: np.ndarray, ref: np.ndarray) -> None:
    """max |ours - ref| <= 1e-4 * max(1, max|ref| - min|ref|); shapes equal, NaN/inf where ref has them."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    nonfinite = ~np.isfinite(r)
    assert np.array_equal(o[nonfinite], r[nonfinite], equal_nan=True), "non-finite values differ from the reference"
    assert np.all(np.isfinite(o[~nonfinite])), "non-finite values where the reference is finite"
    tol = float_tolerance(r)
    err = np.abs(o - r)[~nonfinite]
    worst = float(err.max()) if err.size else 0.0
    if worst > tol:
        at = np.unravel_index(int(np.argmax(np.where(nonfinite, -1.0, np.abs(o - r)))), r.shape)
        raise AssertionError(f"max abs error {worst:.3g} > tolerance {tol:.3g} at {at}: ours {o[at]!r}, ref {r[at]!r}")


def assert_close_quant(ours: np.ndarray, ref: np.ndarray, max_off_by_one_fraction: float = 0.01) -> None:
    """Integer outputs equal, or off by exactly one step on at most `max_off_by_one_fraction` of elements.

    The fraction is taken literally: on a tensor of fewer than 100 elements the default allows none.
    """
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    assert ours.dtype == ref.dtype, f"dtype {ours.dtype} != reference {ref.dtype}"
    diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
    worst = int(diff.max()) if diff.size else 0
    if worst > 1:
        at = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise AssertionError(f"off by {worst} steps at {at}: ours {ours[at]}, ref {ref[at]}")
    off = int(np.count_nonzero(diff))
    allowed = max_off_by_one_fraction * diff.size
    if off > allowed:
        raise AssertionError(f"{off} of {diff.size} elements off by one step (allowed {allowed:.1f})")


def run_edgert(model: bytes, inputs, *, aliasing=None, **executor_options) -> list[np.ndarray]:
    """Run `model` through edgert's real Executor (plan, arena, kernels) and return its outputs.

    aliasing: an edgert.plan.Aliasing; default all aliasing on (the production setting).
    """
    from edgert.model import load_model
    from edgert.runtime.executor import Executor

    if aliasing is not None:
        executor_options["aliasing"] = aliasing
    ex = Executor({"m": load_model(model)}, **executor_options)
    return ex.run("m", inputs)
