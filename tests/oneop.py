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

To test a kernel directly rather than through the executor: bind_op / bind_one bind our kernel
for one op to numpy arrays (sentinel-filled or strided_like outputs, stale scratch), bind_in_place binds it
with its output over one of its inputs, run_one runs it, assert_no_allocation checks the bound call allocates nothing, and check_real_model_ops /
litert_intermediate_results run every op of a family in a real model on LiteRT's own
intermediate tensors.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import pytest

from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, default_registry
from edgert.model.builder import ModelBuilder, Quantization, quant
from edgert.model.graph import Operator, Subgraph
from edgert.reference import reference_interpreter, random_inputs, run_reference

__all__ = [
    "build_one_op", "reference_outputs", "graph_input_specs", "one_op_case",
    "assert_close_float", "assert_close_quant", "float_tolerance", "quant", "random_inputs", "run_edgert",
    "family_registry", "strided_like", "BoundOp", "bind_op", "bind_one", "bind_in_place", "run_one",
    "assert_no_allocation",
    "shared_model", "litert_intermediate_results", "check_real_model_ops",
]

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"

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


# ------------------------------------------------------------------ our kernels, bound directly


def family_registry(*families) -> KernelRegistry:
    """A registry holding only the given kernel family modules (each has register(registry))."""
    registry = KernelRegistry()
    for family in families:
        family.register(registry)
    return registry


def _sentinel(dtype) -> Any:
    # what fresh outputs are filled with, so an element the kernel forgets to write shows
    return np.nan if np.dtype(dtype).kind in "fc" else 77


def strided_like(shape, dtype=np.float32, fill=None) -> tuple[np.ndarray, np.ndarray]:
    """(wide array, channel-slice view of it shaped `shape`), as concat placement hands out.

    The wide array has 5 more channels, filled with `fill` (default NaN, or 77 for integers); the
    view starts at channel 2, so both edges of every row are outside it.
    """
    shape = tuple(shape)
    wide = np.full(shape[:-1] + (shape[-1] + 5,), _sentinel(dtype) if fill is None else fill, dtype)
    return wide, wide[..., 2:2 + shape[-1]]


class BoundOp(NamedTuple):
    """Our kernel for one op bound to arrays: fn(*args) runs the step and writes outs."""

    fn: Callable
    args: tuple
    outs: list[np.ndarray]
    entry: KernelEntry
    ctx: OpContext


def bind_op(subgraph: Subgraph, op: Operator, inputs: Sequence[np.ndarray], *,
            registry: KernelRegistry | None = None, outs: list[np.ndarray] | None = None,
            strided: bool = False) -> BoundOp:
    """Binds our kernel for one op of a parsed model to numpy arrays: (fn, args, outs, entry, ctx).

    inputs fill the op's non-constant inputs in order; constants come from the model and absent
    optional inputs are None. outs: the arrays to write (a strided view, an input for an in-place
    step); by default fresh arrays filled with NaN (77 for integers), or with strided=True channel
    slices of wider arrays (strided_like). Scratch is filled with 0xFF bytes (NaN as float32) so a
    kernel that reads stale scratch shows it; packed bytes are passed as the executor passes them.
    registry: default_registry() unless given.
    """
    ctx = OpContext.of(subgraph, op)
    entry = (registry or default_registry()).lookup(ctx)
    it = iter(inputs)
    ins = [None if t is None else (t.data if t.is_constant else next(it)) for t in ctx.inputs]
    if outs is None:
        if strided:
            assert entry.strided_output, f"{op.opcode} kernel does not write strided outputs"
            outs = [strided_like(t.shape, t.dtype)[1] for t in ctx.outputs]
        else:
            outs = [np.full(t.shape, _sentinel(t.dtype), t.dtype) for t in ctx.outputs]
    n = entry.scratch_bytes(ctx)
    scratch = np.full(n, 0xFF, np.uint8) if n else None
    packed = entry.packed_bytes(ctx)
    extra = {"packed": np.full(packed, 0xFF, np.uint8)} if packed else {}  # only when the kernel asks
    fn, args = entry.bind(ctx, ins, outs, scratch, **extra)
    return BoundOp(fn, args, outs, entry, ctx)


def bind_one(model: bytes | str | Path, inputs: Sequence[np.ndarray], **kw) -> BoundOp:
    """bind_op for the single operator of a one-op model (flatbuffer bytes or path)."""
    from edgert.model.reader import load_model

    sg = load_model(model).main
    (op,) = sg.operators
    return bind_op(sg, op, inputs, **kw)


def bind_in_place(model: bytes | str | Path, inputs: Sequence[np.ndarray], position: int, **kw) -> BoundOp:
    """bind_one with output 0 written over the op's input `position`, as the planner runs an in-place step.

    inputs as bind_one's (the op's non-constant inputs in order); outs[0] is that very array. Asserts
    the kernel declares the position in-place capable.
    """
    from edgert.model.reader import load_model

    sg = load_model(model).main
    (op,) = sg.operators
    fed = [k for k, i in enumerate(op.inputs) if i >= 0 and not sg.tensors[i].is_constant]
    bound = bind_op(sg, op, inputs, outs=[inputs[fed.index(position)]], **kw)
    allowed = bound.entry.inplace(bound.ctx)
    assert position in allowed, f"{op.opcode} kernel allows in place only at inputs {allowed}, not {position}"
    return bound


def run_one(model: bytes | str | Path, inputs: Sequence[np.ndarray], **kw) -> list[np.ndarray]:
    """Runs the single operator of a one-op model with our kernel (bind_one) and returns its outputs."""
    fn, args, outs, *_ = bind_one(model, inputs, **kw)
    fn(*args)
    return outs


def assert_no_allocation(fn: Callable, args: tuple, *, limit: int = 4096, calls: int = 1) -> None:
    """fn(*args) allocates no data: after a warm-up call, `calls` calls peak and retain < `limit` bytes.

    A data temporary would be at least one tensor's bytes; the numba dispatcher's own transient
    boxing is about 50 bytes per argument, and Python frame bookkeeping stays tiny.
    """
    fn(*args)  # compile / load outside the measurement
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(calls):
            fn(*args)
        after = tracemalloc.take_snapshot()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if s.size_diff > 0)
    assert peak < limit and grown < limit, f"{fn} allocated: peak {peak} B, retained {grown} B"


# ------------------------------------------------------------------ real models, op by op


def shared_model(name: str) -> Path:
    """../shared/models/<name>; skips the test when it is absent."""
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def litert_intermediate_results(path: str | Path, opcodes: set[str] | Sequence[str], *,
                                registry: KernelRegistry | None = None,
                                seed: int = 0) -> Iterator[tuple[OpContext, list[np.ndarray], list[np.ndarray]]]:
    """Runs every op of `opcodes` in a real model with our kernel on LiteRT's own intermediate tensors.

    LiteRT (BUILTIN_REF, every tensor preserved) runs the model once on random_inputs(seed); each
    matching op is then bound (bind_op) to those tensors. Yields (ctx, ours, litert) per op, outputs
    in op order, so one kernel is judged on exactly the inputs the reference kernel saw.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgert.model.reader import load_model

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                         experimental_preserve_all_tensors=True, num_threads=1)
    interp.allocate_tensors()
    details = interp.get_input_details()
    for d, x in zip(details, random_inputs(details, seed=seed)):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    sg = load_model(path).main
    registry = registry or default_registry()
    for op in sg.operators:
        if op.opcode not in opcodes:
            continue
        inputs = [interp.get_tensor(i) for i in op.inputs if i >= 0 and not sg.tensors[i].is_constant]
        fn, args, outs, _, ctx = bind_op(sg, op, inputs, registry=registry)
        fn(*args)
        yield ctx, outs, [interp.get_tensor(i) for i in op.outputs]


def check_real_model_ops(path: str | Path, opcodes: set[str] | Sequence[str],
                         compare: Callable[[np.ndarray, np.ndarray], None] = assert_close_float, *,
                         registry: KernelRegistry | None = None, seed: int = 0) -> dict[str, int]:
    """litert_intermediate_results, each output checked with `compare(ours, litert)`; ops checked per opcode."""
    checked: dict[str, int] = {}
    for ctx, ours, refs in litert_intermediate_results(path, opcodes, registry=registry, seed=seed):
        for t, o, r in zip(ctx.outputs, ours, refs):
            try:
                compare(o, r)
            except AssertionError as e:
                raise AssertionError(f"{ctx.op.opcode} -> {t.name}: {e}") from None
        checked[ctx.op.opcode] = checked.get(ctx.op.opcode, 0) + 1
    return checked
