"""The executor: one arena, kernels bound at load, no allocation or compilation per request."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import psutil
import pytest

from conftest import DATA
from edgert.errors import BudgetExceeded, RequestError, UnsupportedOpError
from edgert.model.builder import ModelBuilder
from edgert.plan.plan import Aliasing
from edgert.reference import random_inputs, run_reference
from edgert.runtime.executor import Executor

SINE = DATA / "sine_float.tflite"
KWS = DATA / "kws_ds_cnn_float.tflite"
KWS_INT8 = DATA / "kws_ds_cnn_int8.tflite"
JARVIS = DATA / "hey_jarvis.tflite"
RESNET = DATA / "ic_resnet8_float.tflite"


def _inputs(ex, name, seed=0):
    return random_inputs([(s.shape, s.dtype) for s in ex.input_specs(name)], seed=seed)


def test_outputs_match_litert_and_copy_semantics():
    ex = Executor({"sine": SINE})
    x = _inputs(ex, "sine")
    ours = ex.run("sine", x)
    ref = run_reference(SINE, x)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-5)
    view = ex.run("sine", x, copy=False)[0]
    assert np.shares_memory(view, ex.arena.buffer)  # zero-copy: a view into the arena
    copy = ex.run("sine", x)[0]
    assert not np.shares_memory(copy, ex.arena.buffer)


@pytest.mark.parametrize("path", [KWS, JARVIS], ids=["kws_float", "hey_jarvis_int8_stateful"])
def test_no_allocation_and_flat_rss_over_1000_runs(path):
    ex = Executor({"m": path} if _supported(path) else {"sine": SINE})
    name = ex.models[0]
    x = _inputs(ex, name)
    for _ in range(20):
        ex.run(name, x, copy=False)
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(1000):
        ex.run(name, x, copy=False)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename") if s.size_diff > 0)
    rss1 = psutil.Process().memory_info().rss
    assert grown < 16 * 1024, f"{grown} bytes of Python allocations retained over 1000 runs"
    assert rss1 - rss0 < 1024 * 1024, f"RSS grew by {rss1 - rss0} bytes over 1000 runs"


def _supported(path) -> bool:
    try:
        Executor({"m": path})
        return True
    except UnsupportedOpError:
        return False


def test_two_models_share_the_activation_region():
    ex = Executor({"a": SINE, "b": SINE})
    single = Executor({"a": SINE})
    assert ex.activation_bytes == single.activation_bytes
    assert ex.persistent_bytes == 2 * single.persistent_bytes
    x = _inputs(ex, "a")
    np.testing.assert_array_equal(ex.run("a", x)[0], ex.run("b", x)[0])


def test_budget_too_small_fails_at_load_with_needed_bytes():
    with pytest.raises(BudgetExceeded) as e:
        Executor({"sine": SINE}, budget=16)
    assert e.value.needed > 16 and e.value.budget == 16
    assert f"{e.value.needed:,}" in str(e.value)


def test_bad_requests_are_request_errors():
    ex = Executor({"sine": SINE})
    with pytest.raises(RequestError, match="unknown model") as e:
        ex.run("nope", [])
    assert e.value.kind == "unknown_model"
    with pytest.raises(RequestError) as e:
        ex.run("sine", [np.zeros((1, 2), np.float32)])
    assert e.value.kind == "bad_shape"
    with pytest.raises(RequestError) as e:
        ex.run("sine", [np.zeros((1, 1), np.float64)])
    assert e.value.kind == "bad_dtype"
    with pytest.raises(RequestError) as e:
        ex.run("sine", [])
    assert e.value.kind == "bad_input_count"
    with pytest.raises(RequestError) as e:
        ex.run("sine", {"wrong": np.zeros((1, 1), np.float32)})
    assert e.value.kind == "bad_input_name"
    x = _inputs(ex, "sine")
    assert ex.run("sine", x)[0].shape == (1, 1)  # still serving after the errors


def test_unsupported_ops_are_named_at_load():
    b = ModelBuilder()
    x = b.input("x", (1, 4), np.float32)
    y = b.tensor("y", (1, 4), np.float32)
    z = b.tensor("z", (1, 4), np.float32)
    b.custom_op("NoSuchOp", [x], [y])
    b.custom_op("AnotherMissingOp", [y], [z])
    b.output(z)
    with pytest.raises(UnsupportedOpError) as e:
        Executor({"m": b.build()})
    assert "NoSuchOp" in str(e.value) and "AnotherMissingOp" in str(e.value)


@pytest.mark.parametrize("aliasing", [Aliasing(), Aliasing.none(), Aliasing(views=True, inplace=False, concat=False),
                                      Aliasing(views=False, inplace=True, concat=False),
                                      Aliasing(views=False, inplace=False, concat=True)],
                         ids=["all", "none", "views", "inplace", "concat"])
def test_every_aliasing_option_gives_the_same_outputs(aliasing):
    # a graph with a view (RESHAPE), an in-place candidate (RELU after ADD) and a channel concat
    b = ModelBuilder()
    x = b.input("x", (1, 4, 4, 3), np.float32)
    w = b.const("w", np.linspace(-1, 1, 4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3))
    a = b.tensor("a", (1, 4, 4, 3), np.float32)
    r = b.tensor("r", (1, 4, 4, 3), np.float32)
    m = b.tensor("m", (1, 4, 4, 3), np.float32)
    c = b.tensor("c", (1, 4, 4, 6), np.float32)
    shp = b.const("shape", np.array([1, 96], np.int32))
    o = b.tensor("o", (1, 96), np.float32)
    b.op("ADD", [x, w], [a], options={"fused_activation_function": "NONE"})
    b.op("RELU", [a], [r])
    b.op("MUL", [x, w], [m], options={"fused_activation_function": "NONE"})
    b.op("CONCATENATION", [r, m], [c], options={"axis": 3, "fused_activation_function": "NONE"})
    b.op("RESHAPE", [c, shp], [o], options={"new_shape": [1, 96]})
    b.output(o)
    model = b.build()
    ex = Executor({"m": model}, aliasing=aliasing)
    inputs = [np.random.default_rng(3).uniform(-1, 1, (1, 4, 4, 3)).astype(np.float32)]
    np.testing.assert_allclose(ex.run("m", inputs)[0], run_reference(model, inputs)[0], atol=1e-6)


def test_packed_weights_live_in_the_persistent_region_and_count_in_the_plan():
    """A kernel that repacks a constant once (here: weights doubled) gets planned persistent bytes."""
    from edgert.kernels.registry import KernelEntry, default_registry

    seen = {}

    def bind(ctx, ins, outs, scratch, packed=None):
        w2 = packed[:ins[1].nbytes].view(np.float32).reshape(ins[1].shape)
        np.multiply(ins[1], 2, out=w2)  # done once, at load
        seen["packed"] = packed
        return np.add, (ins[0], w2, outs[0])

    registry = default_registry().copy()
    registry.add_custom("AddTwiceW", KernelEntry("CUSTOM:AddTwiceW", supports=lambda ctx: None, bind=bind,
                                                 packed_bytes=lambda ctx: ctx.inputs[1].nbytes))
    b = ModelBuilder()
    x = b.input("x", (1, 16), np.float32)
    w = b.const("w", np.arange(16, dtype=np.float32).reshape(1, 16))
    y = b.tensor("y", (1, 16), np.float32)
    b.custom_op("AddTwiceW", [x, w], [y])
    b.output(y)
    ex = Executor({"m": b.build()}, registry=registry)
    p = ex.plans["m"]
    assert list(p.packed) == [0] and p.packed[0].size == 64
    assert p.persistent_bytes >= 64 and ex.arena_bytes == p.arena_bytes
    assert np.shares_memory(seen["packed"], ex.arena.region("persistent"))
    out = ex.run("m", [np.ones((1, 16), np.float32)])[0]
    np.testing.assert_array_equal(out, 1 + 2 * np.arange(16, dtype=np.float32).reshape(1, 16))


def _two_input_model():
    b = ModelBuilder()
    x = b.input("x", (2, 3), np.float32)
    y = b.input("y", (3,), np.float32)
    z = b.tensor("z", (2, 3), np.float32)
    b.op("ADD", [x, y], [z], options={"fused_activation_function": "NONE"})
    b.output(z)
    return b.build()


def test_every_input_form_gives_the_same_outputs():
    """Lists and tuples of arrays, mappings, read-only, strided and Fortran-order arrays all run alike."""
    model = _two_input_model()
    ex = Executor({"m": model})
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, (2, 3)).astype(np.float32)
    y = rng.uniform(-2, 2, (3,)).astype(np.float32)
    ref = run_reference(model, [x, y])[0]
    read_only = np.frombuffer(x.tobytes(), np.float32).reshape(2, 3)
    strided = np.repeat(y, 2)[::2]
    forms = [[x, y], (x, y), {"y": y, "x": x}, [read_only, strided], [np.asfortranarray(x), y], [x.tolist(), y]]
    for form in forms[:-1]:
        np.testing.assert_array_equal(ex.run("m", form)[0], ref)
    with pytest.raises(RequestError) as e:  # a nested list is float64: named, not cast
        ex.run("m", forms[-1])
    assert e.value.kind == "bad_dtype"


def test_a_bad_second_input_is_named():
    ex = Executor({"m": _two_input_model()})
    x = np.ones((2, 3), np.float32)
    with pytest.raises(RequestError, match="'y'") as e:
        ex.run("m", [x, np.ones((2, 3), np.float32)])
    assert e.value.kind == "bad_shape"
    with pytest.raises(RequestError, match="'y'") as e:
        ex.run("m", (x, np.ones(3, np.int32)))
    assert e.value.kind == "bad_dtype"
    np.testing.assert_array_equal(ex.run("m", [x, np.ones(3, np.float32)])[0], np.full((2, 3), 2, np.float32))


@pytest.mark.parametrize("path", [SINE, KWS, KWS_INT8, JARVIS, RESNET], ids=lambda p: p.stem)
def test_run_calls_compiled_kernels_directly_with_the_same_results(path):
    """run() skips numba's per-call type dispatch (each kernel's compiled entry point, BLAS drivers
    split into their calls) and gives bit-identical outputs to calling the bound steps as bound."""
    from numba.core.registry import CPUDispatcher

    ex = Executor({"m": path})
    m = ex._models["m"]
    assert not [fn for fn, _ in m.run_steps if isinstance(fn, CPUDispatcher)]
    for seed in range(3):
        x = _inputs(ex, "m", seed=seed)
        ex.reset_state()
        ours = ex.run("m", x)
        ex.reset_state()
        for view, value in zip(m.input_views, x):
            view[...] = value
        for fn, args in m.steps:
            fn(*args)
        for a, b in zip(ours, m.output_views):
            np.testing.assert_array_equal(a, b)
    n_kernels = ex.kernel_count()
    for seed in range(3):
        ex.run("m", _inputs(ex, "m", seed=seed))
    assert ex.kernel_count() == n_kernels  # nothing compiled in run()
