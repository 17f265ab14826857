"""Planning graphs: random DAGs and real models, checked by simulating every byte of the arena."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.errors import BudgetExceeded, PlanError
from edgert.model.graph import Graph, Operator, Quantization, Subgraph, Tensor
from edgert.model.options import OPTION_TYPES
from edgert.plan import Aliasing, MemoryPlan, parse_size, plan, validate

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
DATA = ROOT / "tests" / "data"
Concat = OPTION_TYPES["ConcatenationOptions"][0]


@dataclass(frozen=True)
class Info:
    scratch_bytes: int
    inplace: tuple[int, ...]
    strided_output: bool


def test_kernel_info(op: Operator) -> Info:
    """What a kernel registry would say: elementwise ops may overwrite input 0, convs need scratch."""
    return Info(scratch_bytes=96 if op.opcode == "CONV_2D" else 0,
                inplace=(0,) if op.opcode in ("ADD", "RELU") else (),
                strided_output=op.opcode in ("CONV_2D", "ADD", "RELU"))


test_kernel_info.__test__ = False  # a helper, not a test


# ---------------------------------------------------------------------------------------------
# Random DAGs built from the graph dataclasses


def random_graph(seed: int) -> Graph:
    rng = random.Random(seed)
    tensors: list[Tensor] = []
    ops: list[Operator] = []

    def tensor(shape, dtype="float32", data=None) -> int:
        t = Tensor(len(tensors), f"t{len(tensors)}", tuple(shape), tuple(shape), np.dtype(dtype),
                   quantization=Quantization((0.5,), (0,)) if dtype == "int8" else None, data=data)
        tensors.append(t)
        return t.index

    def op(code, inputs, outputs, options=None):
        ops.append(Operator(len(ops), code, 1, tuple(inputs), tuple(outputs), options))

    dtype = rng.choice(["float32", "int8"])
    h, w = rng.randint(1, 3), rng.randint(1, 3)
    inputs = [tensor((1, h, w, rng.randint(1, 4)), dtype) for _ in range(rng.randint(1, 2))]
    pool = list(inputs)  # activations ops may read
    if rng.random() < 0.5:  # a folded chain: DEQUANTIZE of a constant, then used below
        c = tensor((1, h, w, 2), "float16", data=np.zeros((1, h, w, 2), np.float16))
        d = tensor((1, h, w, 2), dtype)
        op("DEQUANTIZE", [c], [d])
        pool.append(d)
    for _ in range(rng.randint(1, 14)):
        kind = rng.choice(["ADD", "RELU", "RESHAPE", "CONCATENATION", "CONV_2D", "CONV_2D"])
        x = rng.choice(pool)
        sx = tensors[x].shape
        if kind in ("ADD", "RELU"):
            same = [t for t in pool if tensors[t].shape == sx]
            ins = [x, rng.choice(same)] if kind == "ADD" else [x]
            y = tensor(sx, dtype)
            op(kind, ins, [y])
        elif kind == "RESHAPE":
            if len(sx) != 4:
                continue
            shape_c = tensor((2,), "int32", data=np.array([1, -1], np.int32))
            y = tensor((1, sx[1] * sx[2] * sx[3]), dtype)
            op("RESHAPE", [x, shape_c], [y])
        elif kind == "CONV_2D":
            if len(sx) != 4:
                continue
            wgt = tensor((3, 1, 1, sx[3]), dtype, data=np.zeros((3, 1, 1, sx[3]), dtype))
            y = tensor((1, sx[1], sx[2], rng.randint(1, 4)), dtype)
            op("CONV_2D", [x, wgt], [y])
        else:
            if len(sx) != 4:
                continue
            axis = rng.choice([1, 3, -1])
            ax = axis % 4
            parts = [t for t in pool if len(tensors[t].shape) == 4 and all(
                tensors[t].shape[i] == sx[i] for i in range(4) if i != ax)]
            ins = [rng.choice(parts) for _ in range(rng.randint(2, 3))]
            shape = list(sx)
            shape[ax] = sum(tensors[t].shape[ax] for t in ins)
            y = tensor(shape, dtype)
            op("CONCATENATION", ins, [y], Concat(axis=axis, fused_activation_function="NONE"))
        pool.append(ops[-1].outputs[0])
    produced = [o for o in pool if o not in inputs]
    outputs = sorted(set([pool[-1]] + rng.sample(produced or pool, k=min(len(produced or pool), rng.randint(0, 2)))))
    sg = Subgraph(0, "main", tensors, ops, tuple(inputs), tuple(outputs))
    return Graph(path="", sha256=f"{seed:064x}", schema_version=3, description="", subgraphs=[sg])


# ---------------------------------------------------------------------------------------------
# Byte-level simulation: every op checks that its inputs still hold what their producers wrote


def addresses(p: MemoryPlan, sg: Subgraph, t: int, cache: dict) -> np.ndarray:
    """Byte addresses of tensor t's elements in memory order, resolving aliases.
    Memory is laid out [persistent | activations], as the runtime does."""
    if t in cache:
        return cache[t]
    pl = p.placements[t]
    tensor = sg.tensors[t]
    base = 0 if pl.region == "persistent" else p.persistent_bytes
    if pl.alias_of is None:
        out = base + pl.offset + np.arange(pl.size)
    else:
        parent = addresses(p, sg, pl.alias_of, cache)
        if pl.alias_kind == "concat":
            ps = sg.tensors[pl.alias_of]
            grid = parent.reshape(tuple(ps.shape) + (ps.dtype.itemsize,))
            index = [slice(None)] * len(ps.shape)
            index[pl.concat_axis] = slice(pl.concat_start, pl.concat_start + tensor.shape[pl.concat_axis])
            out = grid[tuple(index)].reshape(-1)
        else:
            out = parent[: tensor.nbytes]
            assert len(out) == tensor.nbytes
    cache[t] = out
    return out


def simulate(p: MemoryPlan, graph: Graph) -> None:
    """Run the plan on tagged bytes: every write stamps a fresh tag, every read checks the tags."""
    sg = graph.subgraphs[p.subgraph]
    mem = np.full(p.persistent_bytes + p.activation_bytes, -1, np.int64)
    cache: dict = {}
    expect: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    tags = iter(range(1 << 62))

    def write(t: int) -> None:
        a = addresses(p, sg, t, cache)
        mem[a] = next(tags)
        expect[t] = (a, mem[a].copy())

    def snapshot(t: int) -> None:
        a = addresses(p, sg, t, cache)
        expect[t] = (a, mem[a].copy())

    def check(t: int, when: str) -> None:
        if sg.tensors[t].is_constant:
            return
        a, want = expect[t]
        bad = np.nonzero(mem[a] != want)[0]
        assert not len(bad), f"{sg.tensors[t].name} clobbered {when} (bytes {a[bad[:4]]})"

    for k in p.folded:
        for o in sg.operators[k].outputs:
            write(o)
    for t in sg.inputs:
        write(t)
    for step, k in enumerate(p.order):
        op = sg.operators[k]
        ins = [i for i in op.inputs if i >= 0 and not sg.tensors[i].is_constant]
        scratch = p.scratch.get(k)

        def clobber_scratch():
            if scratch is not None and scratch.size:
                lo = p.persistent_bytes + scratch.offset
                mem[lo:lo + scratch.size] = next(tags)

        clobber_scratch()
        for i in ins:
            check(i, f"before step {step} ({op.opcode}) reads it")
        for o in op.outputs:
            pl = p.placements[o]
            if pl.alias_kind == "view" and pl.alias_of in op.inputs:
                snapshot(o)  # the same bytes, no work
            elif op.opcode == "CONCATENATION":
                for i, part in concat_parts(p, sg, o, op, cache):  # the concat copies what was not produced in place
                    pl_i = p.placements.get(i)
                    if not (pl_i and pl_i.alias_of == o and pl_i.alias_kind == "concat"
                            and int(addresses(p, sg, i, cache)[0]) == int(part[0])):
                        mem[part] = next(tags)
                snapshot(o)
            else:
                write(o)
        clobber_scratch()
        for o in op.outputs:
            check(o, f"by the scratch of step {step}")
    for t in sg.outputs:
        check(t, "at the end")


def concat_parts(p, sg, o, op, cache):
    """(input, byte addresses of its slice of the output) per concat input position."""
    axis = op.options.axis % len(sg.tensors[o].shape)
    ps = sg.tensors[o]
    grid = addresses(p, sg, o, cache).reshape(tuple(ps.shape) + (ps.dtype.itemsize,))
    start = 0
    for i in op.inputs:
        index = [slice(None)] * len(ps.shape)
        index[axis] = slice(start, start + sg.tensors[i].shape[axis])
        yield i, grid[tuple(index)].reshape(-1)
        start += sg.tensors[i].shape[axis]


ALIASINGS = [Aliasing(), Aliasing.none(), Aliasing(True, False, False), Aliasing(False, True, False),
             Aliasing(False, False, True)]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10**9), st.sampled_from(ALIASINGS), st.sampled_from(["default", "greedy", "breadth", "naive"]),
       st.sampled_from(["file", "optimized"]), st.booleans())
def test_random_dags_plan_validly(seed, aliasing, strategy, order, with_kernels):
    graph = random_graph(seed)
    p = plan(graph, strategy=strategy, order=order, aliasing=aliasing,
             kernel_info=test_kernel_info if with_kernels else None, time_limit=0.05)
    validate(p, graph)
    simulate(p, graph)
    sg = graph.main
    used = {t for op in sg.operators for t in (*op.inputs, *op.outputs) if t >= 0 and not sg.tensors[t].is_constant}
    assert set(p.placements) == used | {t for t in (*sg.inputs, *sg.outputs)}
    assert p.arena_bytes == p.persistent_bytes + p.activation_bytes
    assert p.lower_bound_bytes <= p.arena_bytes <= p.naive_bytes or aliasing != Aliasing.none()
    for pl in p.placements.values():
        if pl.alias_of is None:
            assert pl.offset % 64 == 0
        if pl.alias_kind == "view":
            assert not p.placements[pl.alias_of].strided
    if aliasing == Aliasing.none():
        assert not any(pl.alias_of is not None for pl in p.placements.values())
    assert p.arena_bytes <= plan(graph, strategy="greedy", order=order, aliasing=aliasing,
                                 kernel_info=test_kernel_info if with_kernels else None).arena_bytes \
        or strategy != "default"


def test_folding_moves_constant_chains_to_persistent():
    rng_seed = next(s for s in range(1000) if random_graph(s).main.operators[0].opcode == "DEQUANTIZE")
    graph = random_graph(rng_seed)
    p = plan(graph)
    sg = graph.main
    assert p.folded[0] == 0 and not set(p.folded) & set(p.order)
    ready = {t.index for t in sg.tensors if t.is_constant}
    for k in p.folded:  # a chain of ops on constants, in an order that can run
        assert all(i in ready for i in sg.operators[k].inputs if i >= 0)
        ready.update(sg.operators[k].outputs)
    for k in p.order:
        assert not all(i in ready for i in sg.operators[k].inputs if i >= 0)
    for k in p.folded:
        for out in sg.operators[k].outputs:
            assert p.placements[out].region == "persistent"
            assert p.placements[out].offset + p.placements[out].size <= p.persistent_bytes


def concat_graph(axis: int) -> Graph:
    """Two convs whose outputs a concat joins: the U-Net skip pattern."""
    f32 = np.dtype("float32")
    shapes = {0: (1, 4, 4, 3), 1: (3, 1, 1, 3), 2: (1, 4, 4, 3), 3: (2, 1, 1, 3), 4: (1, 4, 4, 2)}
    out_shape = (1, 4, 4, 5) if axis == 3 else None
    tensors = [Tensor(i, f"t{i}", s, s, f32, data=np.zeros(s, f32) if i in (1, 3) else None) for i, s in shapes.items()]
    tensors.append(Tensor(5, "cat", out_shape, out_shape, f32))
    tensors.append(Tensor(6, "relu", out_shape, out_shape, f32))
    tensors.append(Tensor(7, "w", (1, 1, 1, 5), (1, 1, 1, 5), f32, data=np.zeros((1, 1, 1, 5), f32)))
    tensors.append(Tensor(8, "out", (1, 4, 4, 1), (1, 4, 4, 1), f32))
    ops = [Operator(0, "CONV_2D", 1, (0, 1), (2,)), Operator(1, "CONV_2D", 1, (0, 3), (4,)),
           Operator(2, "CONCATENATION", 1, (2, 4), (5,), Concat(axis=-1, fused_activation_function="NONE")),
           Operator(3, "RELU", 1, (5,), (6,)), Operator(4, "CONV_2D", 1, (6, 7), (8,))]
    return Graph("", "ab" * 32, 3, "", [Subgraph(0, "main", tensors, ops, (0,), (8,))])


def test_channel_concat_needs_strided_kernels_and_then_copies_nothing():
    graph = concat_graph(3)
    assert plan(graph).placements[2].alias_kind is None  # no kernel info: producers cannot write strided
    p = plan(graph, kernel_info=test_kernel_info)
    for t, start in ((2, 0), (4, 3)):
        pl = p.placements[t]
        assert (pl.alias_of, pl.alias_kind, pl.concat_axis, pl.concat_start, pl.strided) == (5, "concat", 3, start, True)
    assert p.placements[6].alias_kind == "inplace"  # RELU overwrites the dead concat output
    simulate(p, graph)
    assert p.activation_bytes < plan(graph, kernel_info=test_kernel_info, aliasing=Aliasing.none()).lower_bound_bytes


def test_json_round_trip_and_wrong_model(tmp_path):
    graph = random_graph(7)
    p = plan(graph, kernel_info=test_kernel_info, order="optimized")
    d = json.loads(json.dumps(p.to_json()))
    for key in ("arena_bytes", "lower_bound_bytes", "naive_bytes", "persistent_bytes", "strategy", "order", "plan_ms"):
        assert key in d
    assert {"name", "offset", "size", "first", "last", "alias_of"} <= set(d["tensors"][0])
    back = MemoryPlan.from_json(d, graph)
    assert back.placements == p.placements and back.order == p.order and back.scratch == p.scratch
    other = random_graph(8)
    with pytest.raises(PlanError) as e:
        MemoryPlan.from_json(d, other)
    assert graph.sha256 in str(e.value) and other.sha256 in str(e.value)
    d["tensors"][0]["offset"] += 1
    with pytest.raises(PlanError):
        MemoryPlan.from_json(d, graph)


def test_budget_exceeded_says_what_would_help():
    graph = concat_graph(3)
    tight = plan(graph, kernel_info=test_kernel_info)
    assert plan(graph, kernel_info=test_kernel_info, budget=tight.arena_bytes).arena_bytes == tight.arena_bytes
    with pytest.raises(BudgetExceeded) as e:
        plan(graph, kernel_info=test_kernel_info, aliasing=Aliasing.none(), budget=tight.arena_bytes)
    err = e.value
    assert err.budget == tight.arena_bytes and err.needed > err.budget and err.lower_bound <= err.needed
    assert any("aliasing on would need" in h for h in err.hints)
    assert f"{err.needed:,}" in str(err) and f"{err.budget:,}" in str(err)


def test_given_order_is_checked():
    graph = concat_graph(3)
    p = plan(graph, order=[1, 0, 2, 3, 4])
    assert p.order == [1, 0, 2, 3, 4] and p.order_kind == "given"
    with pytest.raises(PlanError, match="before op"):
        plan(graph, order=[2, 0, 1, 3, 4])
    with pytest.raises(PlanError, match="once"):
        plan(graph, order=[0, 1, 2])


def test_parse_size():
    assert parse_size("8MiB") == 8 * 1024 * 1024
    assert parse_size("64 kB") == 64000
    assert parse_size("1.5GiB") == 3 * 1024**3 // 2
    assert parse_size(4096) == parse_size("4096") == 4096
    for bad in ("8 MiBs", "-1", "1.3B", "", "lots"):
        with pytest.raises(ValueError):
            parse_size(bad)


# ---------------------------------------------------------------------------------------------
# Real models

MODELS = sorted(DATA.glob("*.tflite")) + (sorted(SHARED.glob("zoo/unet_small_128_int8.tflite")) if SHARED.is_dir() else [])


@pytest.fixture(scope="module")
def registry():
    from edgert.kernels.registry import default_registry
    return default_registry()


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_real_models_plan_validly_with_registry_kernel_info(path, registry):
    from edgert.errors import UnsupportedOpError
    from edgert.kernels.registry import OpContext
    from edgert.model import load_model

    graph = load_model(path)

    def info(op):
        try:
            return registry.info(OpContext.of(graph.main, op))
        except UnsupportedOpError:
            return None

    base = plan(graph, aliasing=Aliasing.none(), kernel_info=info)
    for order in ("file", "optimized"):
        p = plan(graph, kernel_info=info, order=order)
        validate(p, graph)
        simulate(p, graph)
        assert p.lower_bound_bytes <= p.arena_bytes
        assert p.arena_bytes <= base.no_alias_lower_bound_bytes * 1.02 + 64
        if order == "file":
            # Aliasing frees bytes at the peak exactly where an alias pair is live at every peak step.
            assert (p.arena_bytes < p.no_alias_lower_bound_bytes) == p.stats["alias_at_peak"], p.stats["peak_ops"]
    validate(base, graph)
    simulate(base, graph)
    assert base.arena_bytes <= base.lower_bound_bytes * 1.02


def test_checkers_catch_a_clobbered_tensor():
    graph = concat_graph(3)
    p = plan(graph, aliasing=Aliasing.none())
    a, b = p.placements[2], p.placements[4]  # both conv outputs live until the concat
    assert a.first <= b.last and b.first <= a.last
    b.offset = a.offset
    with pytest.raises(PlanError, match="share memory"):
        validate(p, graph)
    with pytest.raises(AssertionError, match="clobbered"):
        simulate(p, graph)
