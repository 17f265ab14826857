"""One-op speed comparison: edgert kernels vs LiteRT builtin (no XNNPACK) vs LiteRT XNNPACK, 1 thread.

Run: OPENBLAS_NUM_THREADS=1 python tools/bench_ops.py [section ...]   (sections: conv, pool, int8, shape, ...)
Prints the best of N runs in microseconds per op. Each section is a list of (name, builder) where
the builder returns one-op model bytes and its input shapes; engineers own their section.
OPENBLAS_NUM_THREADS must be set before numpy loads: BLAS-backed kernels otherwise use every core.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np

from edgert.kernels.conv import conv_geometry
from edgert.kernels.registry import OpContext, default_registry
from edgert.model.builder import ModelBuilder
from edgert.model.reader import load_model
from edgert.reference import random_inputs, reference_interpreter

_RNG = np.random.default_rng(0)


def one_op(opcode: str, in_shape, out_shape, options: dict, consts: dict) -> bytes:
    b = ModelBuilder(description=f"bench {opcode}")
    ins = []
    for pos in range(1 + len(consts)):
        if pos in consts:
            ins.append(b.const(f"c{pos}", consts[pos]))
        else:
            ins.append(b.input("x", in_shape, np.float32))
    y = b.tensor("y", out_shape, np.float32)
    b.op(opcode, ins, [y], options=options)
    b.output(y)
    return b.build()


def _w(*shape):
    return _RNG.uniform(-1, 1, shape).astype(np.float32)


def conv(in_shape, o, k, s, act="RELU6", pad="SAME"):
    n, h, w, c = in_shape
    oh, ow = conv_geometry(pad, h, k, s)[0], conv_geometry(pad, w, k, s)[0]
    opts = dict(padding=pad, stride_h=s, stride_w=s, fused_activation_function=act)
    return one_op("CONV_2D", in_shape, (n, oh, ow, o), opts, {1: _w(o, k, k, c), 2: _w(o)}), in_shape


def dw(in_shape, k, s, act="RELU6", pad="SAME"):
    n, h, w, c = in_shape
    oh, ow = conv_geometry(pad, h, k, s)[0], conv_geometry(pad, w, k, s)[0]
    opts = dict(padding=pad, stride_h=s, stride_w=s, depth_multiplier=1, fused_activation_function=act)
    return one_op("DEPTHWISE_CONV_2D", in_shape, (n, oh, ow, c), opts, {1: _w(1, k, k, c), 2: _w(c)}), in_shape


def fc(batch, i, o, act="NONE"):
    opts = dict(fused_activation_function=act)
    return one_op("FULLY_CONNECTED", (batch, i), (batch, o), opts, {1: _w(o, i), 2: _w(o)}), (batch, i)


def tconv(in_shape, o, k, s):
    n, h, w, c = in_shape
    out = (n, h * s, w * s, o)
    opts = dict(padding="SAME", stride_h=s, stride_w=s)
    return one_op("TRANSPOSE_CONV", in_shape, out, opts, {0: np.array(out, np.int32), 1: _w(o, k, k, c)}), in_shape


def pool(opcode, in_shape, k, s, pad="VALID"):
    n, h, w, c = in_shape
    oh, ow = conv_geometry(pad, h, k, s)[0], conv_geometry(pad, w, k, s)[0]
    opts = dict(padding=pad, stride_h=s, stride_w=s, filter_height=k, filter_width=k)
    return one_op(opcode, in_shape, (n, oh, ow, c), opts, {}), in_shape


def pad(in_shape, pads):
    out = tuple(n + a + b for n, (a, b) in zip(in_shape, pads))
    return one_op("PAD", in_shape, out, {}, {1: np.array(pads, np.int32)}), in_shape


def resize(in_shape, out_hw, half=True):
    n, h, w, c = in_shape
    opts = dict(align_corners=False, half_pixel_centers=half)
    return one_op("RESIZE_BILINEAR", in_shape, (n, *out_hw, c), opts, {1: np.array(out_hw, np.int32)}), in_shape


def d2s(in_shape, b):
    n, h, w, c = in_shape
    return one_op("DEPTH_TO_SPACE", in_shape, (n, h * b, w * b, c // (b * b)), dict(block_size=b), {}), in_shape


def concat(in_shape, other_shape, axis):
    out = list(in_shape)
    out[axis] += other_shape[axis]
    opts = dict(axis=axis, fused_activation_function="NONE")
    return one_op("CONCATENATION", in_shape, tuple(out), opts, {1: _w(*other_shape)}), in_shape


def transpose(in_shape, perm):
    out = tuple(in_shape[p] for p in perm)
    return one_op("TRANSPOSE", in_shape, out, {}, {1: np.array(perm, np.int32)}), in_shape


def binary(opcode, in_shape, other_shape, act="NONE"):
    opts = None if act is None else dict(fused_activation_function=act)
    return one_op(opcode, in_shape, in_shape, opts, {1: _w(*other_shape)}), in_shape


def unary(opcode, in_shape, opts=None):
    return one_op(opcode, in_shape, in_shape, opts, {}), in_shape


def reduce(opcode, in_shape, axes, keep=True):
    out = tuple(1 if i in axes else d for i, d in enumerate(in_shape)) if keep else \
        tuple(d for i, d in enumerate(in_shape) if i not in axes)
    return one_op(opcode, in_shape, out, dict(keep_dims=keep), {1: np.array(axes, np.int32)}), in_shape


def _q(scale, zp=0, axis=0):
    from edgert.model.builder import quant

    return quant(scale, zp, axis)


def qone_op(opcode: str, in_shape, out_shape, options: dict, consts: dict, version: int) -> tuple[bytes, tuple, type]:
    """An int8 one-op model (per-channel weights at position 1, int32 bias at 2 / 3) and its input spec."""
    b = ModelBuilder(description=f"bench int8 {opcode}")
    ins = []
    for pos in range(1 + len(consts)):
        if pos in consts:
            value, q = consts[pos] if isinstance(consts[pos], tuple) else (consts[pos], None)
            ins.append(b.const(f"c{pos}", value, q))
        else:
            ins.append(b.input("x", in_shape, np.int8, _q(0.05, 3)))
    y = b.tensor("y", out_shape, np.int8, _q(0.1, -4))
    b.op(opcode, ins, [y], options=options, version=version)
    b.output(y)
    return b.build(), in_shape, np.int8


def _qw(shape, axis):
    n = shape[axis]
    scales = _RNG.uniform(0.002, 0.02, n)
    return (_RNG.integers(-127, 128, shape).astype(np.int8), _q(scales, 0, axis)), scales


def _qb(scales):
    return _RNG.integers(-2000, 2000, len(scales)).astype(np.int32), _q(scales * 0.05, 0)


def qconv(in_shape, o, k, s, act="RELU6", pad="SAME"):
    n, h, w, c = in_shape
    oh, ow = conv_geometry(pad, h, k, s)[0], conv_geometry(pad, w, k, s)[0]
    wq, scales = _qw((o, k, k, c), 0)
    opts = dict(padding=pad, stride_h=s, stride_w=s, fused_activation_function=act)
    return qone_op("CONV_2D", in_shape, (n, oh, ow, o), opts, {1: wq, 2: _qb(scales)}, 3)


def qdw(in_shape, k, s, act="RELU6", pad="SAME"):
    n, h, w, c = in_shape
    oh, ow = conv_geometry(pad, h, k, s)[0], conv_geometry(pad, w, k, s)[0]
    wq, scales = _qw((1, k, k, c), 3)
    opts = dict(padding=pad, stride_h=s, stride_w=s, depth_multiplier=1, fused_activation_function=act)
    return qone_op("DEPTHWISE_CONV_2D", in_shape, (n, oh, ow, c), opts, {1: wq, 2: _qb(scales)}, 3)


def qfc(batch, i, o, act="NONE"):
    wq, scales = _qw((o, i), 0)
    return qone_op("FULLY_CONNECTED", (batch, i), (batch, o), dict(fused_activation_function=act),
                   {1: wq, 2: _qb(scales)}, 4)


def qtconv(in_shape, o, k, s):
    n, h, w, c = in_shape
    out = (n, h * s, w * s, o)
    wq, _ = _qw((o, k, k, c), 0)
    opts = dict(padding="SAME", stride_h=s, stride_w=s)
    return qone_op("TRANSPOSE_CONV", in_shape, out, opts, {0: np.array(out, np.int32), 1: wq}, 3)


def qpool(opcode, in_shape, k, s, pad="VALID"):
    n, h, w, c = in_shape
    oh, ow = conv_geometry(pad, h, k, s)[0], conv_geometry(pad, w, k, s)[0]
    b = ModelBuilder(description=f"bench int8 {opcode}")
    x = b.input("x", in_shape, np.int8, _q(0.05, 3))
    y = b.tensor("y", (n, oh, ow, c), np.int8, _q(0.05, 3))
    b.op(opcode, [x], [y], options=dict(padding=pad, stride_h=s, stride_w=s, filter_height=k, filter_width=k),
         version=2)
    b.output(y)
    return b.build(), in_shape, np.int8


def qbinary(opcode, in_shape, other_shape, act="NONE"):
    other = (_RNG.integers(-128, 128, other_shape).astype(np.int8), _q(0.02, -5))
    return qone_op(opcode, in_shape, in_shape, dict(fused_activation_function=act), {1: other}, 2)


def qreduce(opcode, in_shape, axes, keep=True):
    out = tuple(1 if i in axes else d for i, d in enumerate(in_shape)) if keep else \
        tuple(d for i, d in enumerate(in_shape) if i not in axes)
    return qone_op(opcode, in_shape, out, dict(keep_dims=keep), {1: np.array(axes, np.int32)}, 2)


# Shapes from zoo/mobilenet_v2_100_224, zoo/unet_small_128, zoo/ad_fc_autoencoder, zoo/vww_mobilenet_v1_025.
SECTIONS: dict[str, list[tuple[str, Callable[[], tuple[bytes, tuple]]]]] = {
    "conv": [
        ("mnv2 conv 224x224x3 3x3/2 ->32", lambda: conv((1, 224, 224, 3), 32, 3, 2)),
        ("mnv2 dw 112x112x32 3x3/1", lambda: dw((1, 112, 112, 32), 3, 1)),
        ("mnv2 1x1 112x112x16 ->96", lambda: conv((1, 112, 112, 16), 96, 1, 1)),
        ("mnv2 dw 112x112x96 3x3/2", lambda: dw((1, 112, 112, 96), 3, 2)),
        ("mnv2 1x1 56x56x144 ->24", lambda: conv((1, 56, 56, 144), 24, 1, 1, act="NONE")),
        ("mnv2 dw 28x28x192 3x3/1", lambda: dw((1, 28, 28, 192), 3, 1)),
        ("mnv2 dw 7x7x960 3x3/1", lambda: dw((1, 7, 7, 960), 3, 1)),
        ("mnv2 1x1 7x7x320 ->1280", lambda: conv((1, 7, 7, 320), 1280, 1, 1)),
        ("mnv2 fc 1280 ->1000", lambda: fc(1, 1280, 1000)),
        ("unet 3x3 128x128x16 ->16", lambda: conv((1, 128, 128, 16), 16, 3, 1, act="RELU")),
        ("unet 3x3 16x16x128 ->128", lambda: conv((1, 16, 16, 128), 128, 3, 1, act="RELU")),
        ("unet tconv 8x8x256 2x2/2 ->128", lambda: tconv((1, 8, 8, 256), 128, 2, 2)),
        ("autoencoder fc 640 ->128", lambda: fc(1, 640, 128, act="RELU")),
        ("small fc 16 ->16", lambda: fc(1, 16, 16, act="RELU")),
    ],
    # The conv section's shapes again, int8 with per-channel weights (zoo/*_int8 layers).
    "int8": [
        ("int8 mnv2 conv 224x224x3 3x3/2 ->32", lambda: qconv((1, 224, 224, 3), 32, 3, 2)),
        ("int8 mnv2 dw 112x112x32 3x3/1", lambda: qdw((1, 112, 112, 32), 3, 1)),
        ("int8 mnv2 1x1 112x112x16 ->96", lambda: qconv((1, 112, 112, 16), 96, 1, 1)),
        ("int8 mnv2 dw 112x112x96 3x3/2", lambda: qdw((1, 112, 112, 96), 3, 2)),
        ("int8 mnv2 1x1 56x56x144 ->24", lambda: qconv((1, 56, 56, 144), 24, 1, 1, act="NONE")),
        ("int8 mnv2 dw 28x28x192 3x3/1", lambda: qdw((1, 28, 28, 192), 3, 1)),
        ("int8 mnv2 dw 7x7x960 3x3/1", lambda: qdw((1, 7, 7, 960), 3, 1)),
        ("int8 mnv2 1x1 7x7x320 ->1280", lambda: qconv((1, 7, 7, 320), 1280, 1, 1)),
        ("int8 mnv2 fc 1280 ->1000", lambda: qfc(1, 1280, 1000)),
        ("int8 unet 3x3 128x128x16 ->16", lambda: qconv((1, 128, 128, 16), 16, 3, 1, act="RELU")),
        ("int8 unet 3x3 16x16x128 ->128", lambda: qconv((1, 16, 16, 128), 128, 3, 1, act="RELU")),
        ("int8 unet tconv 8x8x256 2x2/2 ->128", lambda: qtconv((1, 8, 8, 256), 128, 2, 2)),
        ("int8 autoencoder fc 640 ->128", lambda: qfc(1, 640, 128, act="RELU")),
        ("int8 unet maxpool 128x128x16 2x2/2", lambda: qpool("MAX_POOL_2D", (1, 128, 128, 16), 2, 2)),
        ("int8 vww avgpool 3x3x256 global", lambda: qpool("AVERAGE_POOL_2D", (1, 3, 3, 256), 3, 1)),
    ],
    "pool": [
        ("unet maxpool 128x128x16 2x2/2", lambda: pool("MAX_POOL_2D", (1, 128, 128, 16), 2, 2)),
        ("vww avgpool 3x3x256 global", lambda: pool("AVERAGE_POOL_2D", (1, 3, 3, 256), 3, 1)),
        ("avgpool 56x56x64 3x3/2 same", lambda: pool("AVERAGE_POOL_2D", (1, 56, 56, 64), 3, 2, "SAME")),
    ],
    # Shapes from zoo/mobilenet_v3_small_224, zoo/mobilenet_v2_100_224, real/mediapipe (PRELU).
    # The second operand of binary ops is a constant here (one graph input); the kernel is the same.
    "elementwise": [
        ("mnv3 mul 56x56x16 * 1x1x16", lambda: binary("MUL", (1, 56, 56, 16), (1, 1, 1, 16))),
        ("mnv3 mul 14x14x240 * 1x1x240", lambda: binary("MUL", (1, 14, 14, 240), (1, 1, 1, 240))),
        ("mnv3 mul 1x1x576 * scalar", lambda: binary("MUL", (1, 1, 1, 576), ())),
        ("mnv2 add 56x56x24 + same", lambda: binary("ADD", (1, 56, 56, 24), (1, 56, 56, 24))),
        ("mnv3 add 14x14x40 + same relu", lambda: binary("ADD", (1, 14, 14, 40), (1, 14, 14, 40), "RELU")),
        ("mnv3 hard_swish 112x112x16", lambda: unary("HARD_SWISH", (1, 112, 112, 16))),
        ("mnv3 hard_swish 14x14x240", lambda: unary("HARD_SWISH", (1, 14, 14, 240))),
        ("logistic 14x14x240", lambda: unary("LOGISTIC", (1, 14, 14, 240))),
        ("exp 14x14x240", lambda: unary("EXP", (1, 14, 14, 240))),
        ("mediapipe prelu 64x64x32", lambda: binary("PRELU", (1, 64, 64, 32), (1, 1, 32), None)),
        ("int8 mnv3 mul 56x56x16 * 1x1x16", lambda: qbinary("MUL", (1, 56, 56, 16), (1, 1, 1, 16))),
        ("int8 mnv3 mul 14x14x240 * 1x1x240", lambda: qbinary("MUL", (1, 14, 14, 240), (1, 1, 1, 240))),
        ("int8 mnv2 add 56x56x24 + same", lambda: qbinary("ADD", (1, 56, 56, 24), (1, 56, 56, 24))),
        ("int8 mnv3 add 14x14x40 + same relu", lambda: qbinary("ADD", (1, 14, 14, 40), (1, 14, 14, 40), "RELU")),
    ],
    "reduce": [
        ("mnv3 mean 56x56x16 hw", lambda: reduce("MEAN", (1, 56, 56, 16), [1, 2])),
        ("mnv3 mean 7x7x576 hw", lambda: reduce("MEAN", (1, 7, 7, 576), [1, 2])),
        ("mnv2 mean 7x7x1280 hw no keep", lambda: reduce("MEAN", (1, 7, 7, 1280), [1, 2], False)),
        ("sum 32x1000 last axis", lambda: reduce("SUM", (32, 1000), [1], False)),
        ("softmax 1x1001", lambda: unary("SOFTMAX", (1, 1001), {"beta": 1.0})),
        ("unet softmax 128x128x2", lambda: unary("SOFTMAX", (1, 128, 128, 2), {"beta": 1.0})),
        ("int8 mnv3 mean 56x56x16 hw", lambda: qreduce("MEAN", (1, 56, 56, 16), [1, 2])),
        ("int8 mnv3 mean 7x7x576 hw", lambda: qreduce("MEAN", (1, 7, 7, 576), [1, 2])),
        ("int8 mnv2 mean 7x7x1280 hw no keep", lambda: qreduce("MEAN", (1, 7, 7, 1280), [1, 2], False)),
    ],
    # Shapes from real/mediapipe/pose_detection and palm_detection_lite.
    "shape": [
        ("pose pad 112x112x64 +1 spatial", lambda: pad((1, 112, 112, 64), [[0, 0], [1, 1], [1, 1], [0, 0]])),
        ("pose pad 56x56x144 +2 spatial", lambda: pad((1, 56, 56, 144), [[0, 0], [2, 2], [2, 2], [0, 0]])),
        ("palm pad 48x48x32 channels ->64", lambda: pad((1, 48, 48, 32), [[0, 0], [0, 0], [0, 0], [0, 32]])),
        ("palm resize 12x12x256 ->24x24", lambda: resize((1, 12, 12, 256), (24, 24))),
        ("pose resize 7x7x1152 ->14x14", lambda: resize((1, 7, 7, 1152), (14, 14))),
        ("pose d2s 28x28x96 b2", lambda: d2s((1, 28, 28, 96), 2)),
        ("concat 56x56x64 + 56x56x32 axis 3", lambda: concat((1, 56, 56, 64), (1, 56, 56, 32), 3)),
        ("palm concat 1152x18 + 864x18 axis 1", lambda: concat((1, 1152, 18), (1, 864, 18), 1)),
        ("transpose 56x56x64 -> NCHW", lambda: transpose((1, 56, 56, 64), (0, 3, 1, 2))),
    ],
}


def _best_us(call: Callable[[], object], reps: int) -> float:
    call()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return min(times) * 1e6


def _ours(model: bytes, x: np.ndarray) -> tuple[Callable[[], object], str]:
    g = load_model(model)
    op = g.main.operators[0]
    ctx = OpContext.of(g.main, op)
    entry = default_registry().lookup(ctx)
    ins = [None if t is None else (t.data if t.is_constant else x) for t in ctx.inputs]
    outs = [np.empty(t.shape, t.dtype) for t in ctx.outputs]
    n = entry.scratch_bytes(ctx)
    pk = entry.packed_bytes(ctx)
    fn, args = entry.bind(ctx, ins, outs, np.zeros(n, np.uint8) if n else None,
                          **({"packed": np.zeros(pk, np.uint8)} if pk else {}))
    return (lambda: fn(*args)), getattr(fn, "__name__", str(fn))


def _litert(model: bytes, x: np.ndarray, kernels: str) -> Callable[[], object]:
    interp = reference_interpreter(model, kernels=kernels, threads=1)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    return interp.invoke


def main(argv: list[str]) -> None:
    sections = argv or list(SECTIONS)
    print(f"{'op':36s} {'kernel':22s} {'edgert':>10s} {'builtin':>10s} {'xnnpack':>10s}  (us, best of 20)")
    for section in sections:
        for name, make in SECTIONS[section]:
            model, in_shape, *dtype = make()
            x = random_inputs([(in_shape, dtype[0] if dtype else np.float32)], seed=1)[0]
            ours, kernel = _ours(model, x)
            row = [_best_us(ours, 20), _best_us(_litert(model, x, "builtin"), 20), _best_us(_litert(model, x, "xnnpack"), 20)]
            print(f"{name:36s} {kernel:22s} {row[0]:10.1f} {row[1]:10.1f} {row[2]:10.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
