"""Float FULLY_CONNECTED at few rows (matvec.fc_matvec) and fused FC chains (matvec.fc_chain) vs LiteRT and vs unfused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from oneop import assert_close_float, assert_no_allocation, reference_outputs, random_inputs

from edgert.kernels.matvec import CHAIN_MAX_VALUES, MATVEC_MAX_ROWS, bind_chain, fc_chain, fc_matvec
from edgert.model import load_model
from edgert.model.builder import ModelBuilder
from edgert.runtime.executor import Executor

DATA = Path(__file__).resolve().parent / "data"


def _chain_model(widths: list[int], rows: int = 1, acts: list[str] | None = None, biases: list[bool] | None = None,
                 expose: tuple[int, ...] = (), branch: bool = False, seed: int = 0) -> bytes:
    """Input [rows, widths[0]] through len(widths)-1 FCs. `expose`: intermediate layers (1-based)
    that are also graph outputs; `branch`: the first intermediate also feeds an ADD with the last output."""
    rng = np.random.default_rng(seed)
    n = len(widths) - 1
    acts = acts or ["RELU"] * n
    biases = biases or [True] * n
    b = ModelBuilder()
    cur = b.input("x", (rows, widths[0]), np.float32)
    outs, ys = [], []
    for layer in range(n):
        i, o = widths[layer], widths[layer + 1]
        w = b.const(f"w{layer}", (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32))
        bias = b.const(f"b{layer}", rng.standard_normal(o).astype(np.float32)) if biases[layer] else -1
        y = b.tensor(f"y{layer}", (rows, o), np.float32)
        b.op("FULLY_CONNECTED", [cur, w, bias], [y], options={"fused_activation_function": acts[layer]})
        ys.append(y)
        if layer + 1 in expose:
            outs.append(y)
        cur = y
    if branch:
        total = b.tensor("sum", (rows, widths[-1]), np.float32)
        b.op("ADD", [cur, ys[0]], [total])
        cur = total
    b.output(*outs, cur)
    return b.build()


def _executor(model: bytes | str | Path) -> Executor:
    return Executor({"m": model if not isinstance(model, bytes) else load_model(model)})


def _kernels(ex: Executor) -> list:
    return [getattr(fn, "__name__", fn) for fn, _ in ex._model("m").steps]


CASES = [
    ([1, 16, 16, 1], 1, ["RELU", "RELU", "NONE"]),                # the sine model's shape
    ([640, 128, 8, 128, 640], 1, ["RELU", "RELU", "RELU", "NONE"]),  # autoencoder-like, K % 16 == 8
    ([37, 21, 5, 3], 3, ["RELU6", "RELU_N1_TO_1", "NONE"]),        # odd widths, batch 3
    ([7, 33, 17], 4, ["NONE", "RELU"]),                            # MATVEC_MAX_ROWS rows
]


@pytest.mark.parametrize("widths,rows,acts", CASES)
def test_chain_matches_litert_and_is_one_step(widths, rows, acts):
    model = _chain_model(widths, rows, acts, biases=[k % 2 == 0 for k in range(len(widths) - 1)])
    ex = _executor(model)
    assert _kernels(ex) == ["fc_chain"]
    for seed in range(3):
        inputs = random_inputs([((rows, widths[0]), np.float32)], seed=seed)
        ours = ex.run("m", inputs)
        assert_close_float(ours[0], reference_outputs(model, inputs)[0])


@pytest.mark.parametrize("widths,rows,acts", CASES)
def test_fused_chain_equals_unfused_layers(widths, rows, acts):
    n = len(widths) - 1
    fused = _chain_model(widths, rows, acts)
    # every intermediate a graph output too: nothing may be fused, each layer is its own step
    unfused = _chain_model(widths, rows, acts, expose=tuple(range(1, n)))
    ex_f, ex_u = _executor(fused), _executor(unfused)
    assert _kernels(ex_f) == ["fc_chain"] and _kernels(ex_u) == ["fc_matvec"] * n
    inputs = random_inputs([((rows, widths[0]), np.float32)], seed=7)
    # same arithmetic in the same order: bit-identical, not only within tolerance
    np.testing.assert_array_equal(ex_f.run("m", inputs)[0], ex_u.run("m", inputs)[-1])


def test_intermediate_read_twice_is_not_fused():
    model = _chain_model([16, 16, 16], 1, ["RELU", "NONE"], branch=True)
    ex = _executor(model)
    assert "fc_chain" not in _kernels(ex)
    inputs = random_inputs([((1, 16), np.float32)], seed=1)
    assert_close_float(ex.run("m", inputs)[0], reference_outputs(model, inputs)[0])


def test_many_rows_take_the_gemm_paths():
    rows = MATVEC_MAX_ROWS + 1
    model = _chain_model([32, 24, 8], rows)
    ex = _executor(model)
    assert not {"fc_chain", "fc_matvec"} & set(_kernels(ex))
    inputs = random_inputs([((rows, 32), np.float32)], seed=2)
    assert_close_float(ex.run("m", inputs)[0], reference_outputs(model, inputs)[0])


def test_chain_wider_than_the_stack_limit_runs_layer_by_layer():
    wide = CHAIN_MAX_VALUES + 16
    model = _chain_model([4, wide, 4], 1, ["RELU", "NONE"])
    ex = _executor(model)
    assert _kernels(ex) == ["fc_matvec", "fc_matvec"]
    inputs = random_inputs([((1, 4), np.float32)], seed=3)
    assert_close_float(ex.run("m", inputs)[0], reference_outputs(model, inputs)[0])


def test_sine_model_fused_matches_litert_and_allocates_nothing():
    path = DATA / "sine_float.tflite"
    ex = _executor(path)
    assert _kernels(ex) == ["fc_chain"]
    data = path.read_bytes()
    for seed in range(3):
        inputs = random_inputs([((1, 1), np.float32)], seed=seed)
        assert_close_float(ex.run("m", inputs)[0], reference_outputs(data, inputs)[0])
    x = np.full((1, 1), 0.5, np.float32)
    out = ex.run("m", [x], copy=False)[0]
    assert any(np.shares_memory(out, ex.arena.region(r)) for r in ("activation", "persistent"))  # a planned view
    assert_no_allocation(lambda: ex.run("m", [x], copy=False), (), calls=200)


def _layers(widths, rows, rng, separate_arrays=True):
    xs = [np.zeros((rows, w), np.float32) for w in widths]
    xs[0][...] = rng.standard_normal(xs[0].shape)
    layers = []
    for k in range(len(widths) - 1):
        w = rng.standard_normal((widths[k + 1], widths[k])).astype(np.float32)
        b = rng.standard_normal(widths[k + 1]).astype(np.float32) if k % 2 == 0 else None
        layers.append((xs[k], w, b, xs[k + 1], 1 if k < len(widths) - 2 else 0))
    return layers


def test_bind_chain_packs_weights_from_separate_arrays_and_matches_per_layer():
    # weights in separate numpy arrays (no shared buffer): the chain packs a copy
    rng = np.random.default_rng(5)
    layers = _layers([24, 40, 17, 9], 2, rng)
    fn, args = bind_chain(layers)
    assert fn is fc_chain and len(args) == 1
    fn(*args)
    chained = layers[-1][3].copy()
    lo_hi = {0: (np.float32(-np.finfo(np.float32).max), np.float32(np.finfo(np.float32).max)),
             1: (np.float32(0.0), np.float32(np.finfo(np.float32).max))}
    for x, w, b, y, code in layers:
        fc_matvec(x, w, b if b is not None else np.zeros(1, np.float32), b is not None, y, *lo_hi[code])
    np.testing.assert_array_equal(chained, layers[-1][3])
    ref = layers[0][0].astype(np.float64)
    for x, w, b, y, code in layers:
        ref = ref @ w.T.astype(np.float64) + (0 if b is None else b)
        ref = np.maximum(ref, 0) if code == 1 else ref
    assert np.abs(chained - ref).max() <= 1e-4 * max(1.0, float(np.ptp(np.abs(ref))))


def test_bind_chain_declines_what_it_cannot_run():
    rng = np.random.default_rng(6)
    assert bind_chain(_layers([8, 8], 1, rng)) is None  # one layer is no chain
    assert bind_chain(_layers([8, 8, 8], MATVEC_MAX_ROWS + 1, rng)) is None  # a GEMM, not matvecs
    big = _layers([128, 256, 128], 1, rng)  # 256 KiB of separate weights: too large to copy
    assert bind_chain(big) is None
