"""shape.fuse_moves: runs of consecutive copies inside the arena as one byte-level job table.

The fused step must leave the buffer exactly as running the original steps one by one does, and
leave alone what it cannot express (arrays outside the buffer, overlapping copies, casts, fills
whose value is not one repeated byte).
"""

from __future__ import annotations

import numpy as np

from pathlib import Path

from edgert.kernels.shape import copy_call, fuse_moves, run_byte_jobs, run_jobs, step_of
from edgert.runtime.executor import Executor, _expanded

RNG = np.random.default_rng(7)


def _buffer(n=4096):
    return RNG.integers(0, 256, n).astype(np.uint8)


def _view(buf, offset, shape, dtype):
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    return buf[offset:offset + n].view(dtype).reshape(shape)


def _run(steps):
    for fn, args in steps:
        fn(*args)


def _same_effect(make_steps, expect_fused):
    """Run the steps built over two copies of one buffer, unfused and fused; compare bytes."""
    a = _buffer()
    b = a.copy()
    plain = make_steps(a)
    fused = fuse_moves(make_steps(b), b)
    _run(plain)
    _run(fused)
    np.testing.assert_array_equal(a, b)
    n_fused = sum(fn is run_byte_jobs for fn, _ in fused)
    assert n_fused == expect_fused, [getattr(fn, "__name__", fn) for fn, _ in fused]
    return fused


def test_copies_of_several_dtypes_and_strides_fuse_into_one_step():
    def steps(buf):
        f32 = _view(buf, 0, (4, 6), np.float32)
        i16 = _view(buf, 256, (3, 5, 2), np.int16)
        i8 = _view(buf, 512, (7, 9), np.int8)
        return [
            (np.copyto, (_view(buf, 1024, (4, 3), np.float32), f32[:, 1:4])),  # channel slice source
            (np.copyto, (_view(buf, 1200, (8, 10), np.int16)[::2, 1:3][:3], i16[:, 1:3, 0])),  # strided both sides
            step_of([copy_call(i8, lambda layout: layout, _view(buf, 1600, (7, 9), np.int8))]),  # a run_jobs table
            (np.copyto, (_view(buf, 2048, (2, 2), np.float64), _view(buf, 1024, (2, 2), np.float64))),  # reads an earlier copy's output
        ]
    fused = _same_effect(steps, expect_fused=1)
    assert len(fused) == 1


def test_what_cannot_be_fused_splits_the_run():
    outside = np.arange(12, dtype=np.float32).reshape(3, 4)

    def steps(buf):
        f32 = _view(buf, 0, (3, 4), np.float32)
        return [
            (np.copyto, (_view(buf, 100, (3, 4), np.float32), f32)),
            (np.copyto, (_view(buf, 200, (3, 4), np.float32), f32)),
            (np.copyto, (_view(buf, 300, (3, 4), np.float32), outside)),  # source outside the buffer
            (np.copyto, (_view(buf, 400, (3, 4), np.float32), f32)),
            (np.copyto, (_view(buf, 8, (3, 4), np.float32), f32)),  # overlaps its source
            (np.copyto, (_view(buf, 500, (3, 4), np.float32), f32)),
        ]
    fused = _same_effect(steps, expect_fused=1)  # only the first two
    assert len(fused) == 5


def test_fills_fuse_only_as_repeated_bytes():
    from edgert.kernels.shape import FILL, MAX_RANK, _ROW

    def fill_call(buf, offset, dtype, value):
        dst = _view(buf, offset, (10,), dtype)
        row = np.zeros(_ROW, np.int64)
        row[0], row[2] = FILL, 0
        row[3:3 + MAX_RANK] = [1] * (MAX_RANK - 1) + [10]
        row[3 + 2 * MAX_RANK:3 + 3 * MAX_RANK] = [0] * (MAX_RANK - 1) + [1]
        fill = np.array([value], dtype).view({1: np.uint8, 2: np.uint16, 4: np.uint32}[np.dtype(dtype).itemsize])
        return run_jobs, (dst, dst, row[None, :], fill)

    def steps(buf):
        return [fill_call(buf, 0, np.int8, -3), fill_call(buf, 64, np.int32, -1),  # bytes ff ff ff ff
                fill_call(buf, 128, np.int16, 0x0102)]  # bytes differ: kept as its own step
    fused = _same_effect(steps, expect_fused=1)
    assert len(fused) == 2


def test_streaming_model_runs_fewer_steps_and_matches_unfused():
    # hey_jarvis: READ_VARIABLE, STRIDED_SLICE, ASSIGN_VARIABLE (and CONCATENATION) runs between convs
    path = Path(__file__).parent / "data" / "hey_jarvis.tflite"
    ex = Executor({"m": path})
    m = ex._models["m"]
    assert len(m.run_steps) <= len(_expanded(m.steps)) - 10
    spec = ex.input_specs("m")[0]
    xs = [RNG.integers(-128, 128, spec.shape).astype(spec.dtype) for _ in range(20)]
    fused_out = [ex.run("m", [x])[0] for x in xs]
    ex2 = Executor({"m": path})
    m2 = ex2._models["m"]
    m2.run_steps = [(fn, args) for fn, args in m2.steps]  # the unfused steps, through the dispatchers
    plain_out = [ex2.run("m", [x])[0] for x in xs]
    for a, b in zip(fused_out, plain_out):
        np.testing.assert_array_equal(a, b)
