"""Kernels for MediaPipe's CUSTOM operators, and the decoders of their custom_options.

Semantics are those of google-ai-edge/mediapipe, mediapipe/util/tflite/operations/*.cc (the CPU
kernels MediaPipe registers in cpu_op_resolver.cc) and, for the flexbuffer options,
tensorflow/lite/delegates/gpu/common/mediapipe/*.cc (the Parse*Attributes functions the CPU
kernels call). Registered custom codes:

- MaxPoolingWithArgmax2D (v1): max pool; output 1 holds, as float, the argmax inside the window
  (filter_y * filter_width + filter_x) + 0.1. Options: a TfLitePoolParams struct.
- MaxUnpooling2D (v1): zero-filled output [N, H*fh, W*fw, C]; each input value goes to the window
  position its (float, truncated) index names. Options: a TfLitePoolParams struct.
- Convolution2DTransposeBias (v1): TRANSPOSE_CONV with a bias, output shape derived from the input
  (no output_shape input, no fused activation). Options: a TfLiteTransposeConvParams struct.
- TransformTensorBilinear (v1, v2): resamples a [1, H, W, C] tensor through the first two rows of a
  4x4 matrix (output pixel -> input coordinates), bilinear, zero outside; v2 adds the align-corners
  correction. Options (flexbuffer map) only carry the output size, which the output tensor has.
- TransformLandmarks (v1, v2): applies the first two rows of a 4x4 matrix to the x, y of every
  landmark (z copied). v1: [1, H, W, C] input, flexbuffer {"dimensions", "scale"}; v2: [1, N, 2|3].
- Landmarks2TransformMatrix (v1, v2): builds the 4x4 crop matrix from 3-D landmarks; options are
  a flexbuffer map (see _l2m_v1_options / _l2m_v2_options for the keys).

Struct options are what MediaPipe's converter memcpy'd into custom_options: little-endian int32
fields (tensorflow/lite/core/c/builtin_op_data.h)::

    TfLitePoolParams          padding, stride_width, stride_height, filter_width, filter_height,
                              activation [, computed padding: 4 x int32]   (24 or 40 bytes)
    TfLiteTransposeConvParams padding, stride_width, stride_height [, activation, ...]  (>= 12 bytes)

with padding 1 = SAME, 2 = VALID and activation the TfLiteFusedActivation enum (0 NONE, 1 RELU,
2 RELU_N1_TO_1, 3 RELU6, 4 TANH, 5 SIGN_BIT, 6 SIGMOID; only the first three clamp, as in TFLite's
CalculateActivationRange). Where the C++ kernels mix float and double arithmetic, the numba loops
below do the same, so results match to rounding.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
from flatbuffers import flexbuffers
from numba import njit

from edgert.kernels.activations import activation_range
from edgert.kernels.conv import clamp, f32_scratch, transpose_conv_scratch, transpose_conv_step
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

F32 = np.dtype(np.float32)

PADDINGS = {1: "SAME", 2: "VALID"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT", 6: "SIGMOID"}
_CLAMP_CODES = {"RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}  # the activations CalculateActivationRange clamps

_FLT_LOWEST = float(np.finfo(np.float32).min)


# ---------------------------------------------------------------- custom_options decoding


@dataclass(frozen=True)
class PoolParams:
    """TfLitePoolParams as MediaPipe stores it in custom_options (MaxPoolingWithArgmax2D, MaxUnpooling2D)."""

    padding: str  # "SAME" or "VALID"
    stride_w: int
    stride_h: int
    filter_w: int
    filter_h: int
    activation: str = "NONE"

    def pack(self) -> bytes:
        """The 40-byte struct (computed padding zeroed), as a model's custom_options holds it."""
        pad = {v: k for k, v in PADDINGS.items()}[self.padding]
        act = {v: k for k, v in ACTIVATIONS.items()}[self.activation]
        return struct.pack("<6i", pad, self.stride_w, self.stride_h, self.filter_w, self.filter_h, act) + bytes(16)


@dataclass(frozen=True)
class TransposeConvParams:
    """TfLiteTransposeConvParams as MediaPipe stores it in custom_options (Convolution2DTransposeBias)."""

    padding: str
    stride_w: int
    stride_h: int

    def pack(self) -> bytes:
        pad = {v: k for k, v in PADDINGS.items()}[self.padding]
        return struct.pack("<3i", pad, self.stride_w, self.stride_h)


def decode_pool_params(data: bytes) -> PoolParams:
    """Decode a TfLitePoolParams struct; ValueError naming the bad field."""
    if len(data) < 24:
        raise ValueError(f"custom_options has {len(data)} bytes, TfLitePoolParams needs at least 24")
    pad, sw, sh, fw, fh, act = struct.unpack_from("<6i", data)
    if pad not in PADDINGS:
        raise ValueError(f"padding enum {pad} is not SAME (1) or VALID (2)")
    if act not in ACTIVATIONS:
        raise ValueError(f"activation enum {act} unknown")
    if min(sw, sh, fw, fh) < 1:
        raise ValueError(f"strides ({sh}, {sw}) and filter ({fh}, {fw}) must be >= 1")
    return PoolParams(PADDINGS[pad], sw, sh, fw, fh, ACTIVATIONS[act])


def decode_transpose_conv_params(data: bytes) -> TransposeConvParams:
    """Decode a TfLiteTransposeConvParams struct (fields after stride_height are ignored, as MediaPipe does)."""
    if len(data) < 12:
        raise ValueError(f"custom_options has {len(data)} bytes, TfLiteTransposeConvParams needs at least 12")
    pad, sw, sh = struct.unpack_from("<3i", data)
    if pad not in PADDINGS:
        raise ValueError(f"padding enum {pad} is not SAME (1) or VALID (2)")
    if min(sw, sh) < 1:
        raise ValueError(f"strides ({sh}, {sw}) must be >= 1")
    return TransposeConvParams(PADDINGS[pad], sw, sh)


def decode_flexbuffer_map(data: bytes) -> dict:
    """custom_options holding a flexbuffer map -> dict; ValueError if it is not one."""
    if not data:
        raise ValueError("custom_options is empty, a flexbuffer map was expected")
    try:
        value = flexbuffers.Loads(bytes(data))
    except Exception as exc:  # the flexbuffers reader raises assorted errors on garbage
        raise ValueError(f"custom_options is not a flexbuffer ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"custom_options is a flexbuffer {type(value).__name__}, not a map")
    return value


def _options_reason(ctx: OpContext, decode) -> str | None:
    try:
        decode(ctx.op.custom_options)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f"bad custom_options: {exc}"
    return None


def _clamp_bounds(activation: str) -> tuple[np.float32, np.float32]:
    lo, hi = activation_range(_CLAMP_CODES.get(activation, 0))
    return np.float32(lo), np.float32(hi)


# ---------------------------------------------------------------- shared checks


def _check_io(ctx: OpContext, n_in: int, n_out: int, versions: tuple[int, ...]) -> str | None:
    if ctx.op.version not in versions:
        return f"version {ctx.op.version} not supported ({', '.join(map(str, versions))})"
    if len(ctx.inputs) != n_in or any(t is None for t in ctx.inputs):
        return f"takes {n_in} inputs, got {len(ctx.inputs)}"
    if len(ctx.outputs) != n_out:
        return f"takes {n_out} outputs, got {len(ctx.outputs)}"
    for t in (*ctx.inputs, *ctx.outputs):
        if t.dtype != F32:
            return f"{t.dtype} tensor {t.name!r} not supported (float32 kernel)"
    return None


def _flat(a: np.ndarray, name: str) -> np.ndarray:
    """a as 1-D without copying (inputs other than strided concat producers are contiguous)."""
    try:
        return np.reshape(a, -1, copy=False)
    except ValueError:
        raise ValueError(f"{name} is not contiguous; this kernel reads it flat") from None


# ---------------------------------------------------------------- MaxPoolingWithArgmax2D


@njit(nogil=True, cache=True)
def _max_pool_argmax(inp, out, idx, fh, fw, sh, sw, pt, pl, lo, hi):
    # Channels innermost: the running max lives in `out` and its window position in `idx`; the
    # window is scanned in MediaPipe's order (filter_y, then filter_x) with a strict '>', so the
    # first maximum wins exactly as in max_pool_argmax.cc.
    n_b, h, w, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    lowest = np.float32(_FLT_LOWEST)
    tenth = np.float32(0.1)
    for n in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - pt
            fy0, fy1 = max(0, -iy0), min(fh, h - iy0)
            for ox in range(ow):
                ix0 = ox * sw - pl
                fx0, fx1 = max(0, -ix0), min(fw, w - ix0)
                dst = out[n, oy, ox]
                di = idx[n, oy, ox]
                for ch in range(c):
                    dst[ch] = lowest
                    di[ch] = np.float32(0.0)
                for fy in range(fy0, fy1):
                    for fx in range(fx0, fx1):
                        src = inp[n, iy0 + fy, ix0 + fx]
                        k = np.float32(fy * fw + fx)
                        for ch in range(c):
                            v = src[ch]
                            if v > dst[ch]:
                                dst[ch] = v
                                di[ch] = k
                for ch in range(c):
                    dst[ch] = clamp(dst[ch], lo, hi)
                    di[ch] = di[ch] + tenth


def _pool_out_size(padding: str, size: int, k: int, stride: int) -> int:
    # GetWindowedOutputSize as written in max_pool_argmax.cc (C++ truncating division).
    return (size + stride - 1) // stride if padding == "SAME" else int((size - k + stride) / stride)


def _compute_padding(stride: int, in_size: int, k: int, out_size: int) -> int:
    """TFLite's ComputePadding (padding.h) with dilation 1: truncating division, clamped at 0."""
    return max(0, int(((out_size - 1) * stride + k - in_size) / 2))


def _argmax_geometry(ctx: OpContext) -> tuple[PoolParams, int, int, int, int]:
    p = decode_pool_params(ctx.op.custom_options)
    _, h, w, _ = ctx.inputs[0].shape
    oh, ow = _pool_out_size(p.padding, h, p.filter_h, p.stride_h), _pool_out_size(p.padding, w, p.filter_w, p.stride_w)
    return p, oh, ow, _compute_padding(p.stride_h, h, p.filter_h, oh), _compute_padding(p.stride_w, w, p.filter_w, ow)


def _argmax_supports(ctx: OpContext) -> str | None:
    reason = _check_io(ctx, 1, 2, (1,)) or _options_reason(ctx, decode_pool_params)
    if reason:
        return reason
    inp = ctx.inputs[0]
    if len(inp.shape) != 4:
        return "input must be 4-D NHWC"
    _, oh, ow, _, _ = _argmax_geometry(ctx)
    want = (inp.shape[0], oh, ow, inp.shape[3])
    for t in ctx.outputs:
        if tuple(t.shape) != want:
            return f"output {t.name!r} shape {tuple(t.shape)} does not match computed {want}"
    return None


def _argmax_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    p, _, _, pt, pl = _argmax_geometry(ctx)
    lo, hi = _clamp_bounds(p.activation)
    return _max_pool_argmax, (ins[0], outs[0], outs[1], p.filter_h, p.filter_w, p.stride_h, p.stride_w, pt, pl, lo, hi)


# ---------------------------------------------------------------- MaxUnpooling2D


@njit(nogil=True, cache=True)
def _max_unpool(inp, ind, out, fw, sh, sw, pt, pl):
    n_b, h, w, c = inp.shape
    oh, ow = out.shape[1], out.shape[2]
    for n in range(n_b):
        for y in range(oh):
            for x in range(ow):
                for ch in range(c):
                    out[n, y, x, ch] = np.float32(0.0)
    for n in range(n_b):
        for iy in range(h):
            for ix in range(w):
                for ch in range(c):
                    f = ind[n, iy, ix, ch]
                    # float -> int is undefined in C++ for NaN and out-of-range values: skip those.
                    if not (f > -2147483649.0 and f < 2147483648.0):
                        continue
                    k = int(f)  # truncates toward zero, as the C++ conversion
                    a = abs(k)
                    q, r = a // fw, a % fw
                    if k < 0:  # C++ '/' and '%' truncate toward zero
                        q, r = -q, -r
                    ox = ix * sw - pl + r
                    oy = iy * sh - pt + q
                    if ox >= 0 and ox < ow and oy >= 0 and oy < oh:
                        out[n, oy, ox, ch] = inp[n, iy, ix, ch]


def _unpool_geometry(ctx: OpContext) -> tuple[PoolParams, tuple[int, int, int, int], int, int]:
    p = decode_pool_params(ctx.op.custom_options)
    n, h, w, c = ctx.inputs[0].shape
    oh, ow = h * p.filter_h, w * p.filter_w
    # max_unpooling.cc pads as the forward pool from the output back to the input (padding enum unused).
    pt, pl = _compute_padding(p.stride_h, oh, p.filter_h, h), _compute_padding(p.stride_w, ow, p.filter_w, w)
    return p, (n, oh, ow, c), pt, pl


def _unpool_supports(ctx: OpContext) -> str | None:
    reason = _check_io(ctx, 2, 1, (1,)) or _options_reason(ctx, decode_pool_params)
    if reason:
        return reason
    inp, ind = ctx.inputs
    if len(inp.shape) != 4 or tuple(ind.shape) != tuple(inp.shape):
        return f"input {tuple(inp.shape)} and indices {tuple(ind.shape)} must be the same 4-D shape"
    _, want, _, _ = _unpool_geometry(ctx)
    if tuple(ctx.outputs[0].shape) != want:
        return f"output shape {tuple(ctx.outputs[0].shape)} does not match computed {want}"
    return None


def _unpool_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    p, _, pt, pl = _unpool_geometry(ctx)
    return _max_unpool, (ins[0], ins[1], outs[0], p.filter_w, p.stride_h, p.stride_w, pt, pl)


# ---------------------------------------------------------------- Convolution2DTransposeBias


def _tcb_geometry(ctx: OpContext) -> tuple[TransposeConvParams, tuple[int, int, int, int], int, int]:
    """(params, output shape, pad top, pad left) by transpose_conv_bias.cc's Prepare/Eval."""
    p = decode_transpose_conv_params(ctx.op.custom_options)
    n, h, w, _ = ctx.inputs[0].shape
    o, kh, kw, _ = ctx.inputs[1].shape
    ph = max(0, kh - (h - 1) % p.stride_h - 1) if p.padding == "SAME" else 0
    pw = max(0, kw - (w - 1) % p.stride_w - 1) if p.padding == "SAME" else 0
    out = (n, p.stride_h * (h - 1) + kh - ph, p.stride_w * (w - 1) + kw - pw, o)
    return p, out, ph // 2, pw // 2


def _tcb_supports(ctx: OpContext) -> str | None:
    reason = _check_io(ctx, 3, 1, (1,)) or _options_reason(ctx, decode_transpose_conv_params)
    if reason:
        return reason
    inp, w, bias = ctx.inputs
    if len(inp.shape) != 4 or len(w.shape) != 4 or len(bias.shape) != 1:
        return "input and weights must be 4-D, bias 1-D"
    if w.shape[3] != inp.shape[3] or bias.shape[0] != w.shape[0]:
        return f"weights {tuple(w.shape)} do not match input {tuple(inp.shape)} / bias {tuple(bias.shape)}"
    _, want, _, _ = _tcb_geometry(ctx)
    if tuple(ctx.outputs[0].shape) != want:
        return f"output shape {tuple(ctx.outputs[0].shape)} does not match computed {want}"
    return None


def _tcb_scratch(ctx: OpContext) -> int:
    return transpose_conv_scratch(ctx.inputs[0], ctx.inputs[1])


def _tcb_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    # The float TRANSPOSE_CONV machinery of conv.py: one GEMM into scratch columns, then the col2im
    # gather adds the bias. No fused activation here, so the clamp bounds are infinite (an inf
    # stays inf, as in transpose_conv_bias.cc).
    inp, w, bias = ins
    p, _, pt, pl = _tcb_geometry(ctx)
    return transpose_conv_step(inp, w, bias, outs[0], scratch, (p.stride_h, p.stride_w), (pt, pl),
                               np.float32(-np.inf), np.float32(np.inf), "Convolution2DTransposeBias")


# ---------------------------------------------------------------- TransformTensorBilinear


@njit(nogil=True, cache=True)
def _transform_tensor_bilinear(inp, m, out, align_corners):
    h, w = inp.shape[1], inp.shape[2]
    oh, ow, c = out.shape[1], out.shape[2], out.shape[3]
    x0, x1, x2, x3 = m[0], m[1], m[2], m[3]
    y0, y1, y2, y3 = m[4], m[5], m[6], m[7]
    if align_corners:
        # v2: T -> S * (T * A), computed in double as the C++ does (0.5 is a double literal).
        x3 = np.float32(np.float64(x3) + (np.float64(x0) * 0.5 + np.float64(x1) * 0.5 - 0.5))
        y3 = np.float32(np.float64(y3) + (np.float64(y0) * 0.5 + np.float64(y1) * 0.5 - 0.5))
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for oy in range(oh):
        fy = np.float32(oy)
        for ox in range(ow):
            fx = np.float32(ox)
            tx = x0 * fx + x1 * fy + x2 * zero + x3 * one
            ty = y0 * fx + y1 * fy + y2 * zero + y3 * one
            dst = out[0, oy, ox]
            # NaN coordinates (undefined in the C++) read as out of bounds.
            if not (tx >= 0.0 and tx <= w - 1 and ty >= 0.0 and ty <= h - 1):
                for ch in range(c):
                    dst[ch] = zero
                continue
            ix = int(math.floor(tx))
            iy = int(math.floor(ty))
            rc = tx - np.float32(ix)
            lc = ty - np.float32(iy)
            has_right = ix + 1 < w
            has_lower = iy + 1 < h
            for ch in range(c):
                q11 = inp[0, iy, ix, ch]
                q21 = inp[0, iy, ix + 1, ch] if has_right else zero
                q12 = inp[0, iy + 1, ix, ch] if has_lower else zero
                q22 = inp[0, iy + 1, ix + 1, ch] if has_right and has_lower else zero
                upper = np.float32((1.0 - np.float64(rc)) * np.float64(q11) + np.float64(rc * q21))
                lower = np.float32((1.0 - np.float64(rc)) * np.float64(q12) + np.float64(rc * q22))
                dst[ch] = np.float32(np.float64(lc * lower) + (1.0 - np.float64(lc)) * np.float64(upper))


def _ttb_options(data: bytes, version: int) -> None:
    """Validates the flexbuffer options the way ParseTransformTensorBilinearV*Attributes reads them."""
    opts = decode_flexbuffer_map(data) if data else {}
    if version == 1 and "mode" in opts and opts["mode"] != "bilinear":
        raise ValueError(f"mode {opts['mode']!r}: only 'bilinear' is supported")


def _ttb_supports(ctx: OpContext) -> str | None:
    reason = _check_io(ctx, 2, 1, (1, 2))
    if reason:
        return reason
    reason = _options_reason(ctx, lambda data: _ttb_options(data, ctx.op.version))
    if reason:
        return reason
    inp, m = ctx.inputs
    out = ctx.outputs[0]
    if len(inp.shape) != 4 or len(out.shape) != 4:
        return "input and output must be 4-D NHWC"
    if inp.shape[0] != 1 or out.shape[0] != 1:
        return "batch must be 1 (MediaPipe's kernel transforms batch 0 only)"
    if out.shape[3] != inp.shape[3]:
        return f"output channels {out.shape[3]} differ from input channels {inp.shape[3]}"
    if m.size < 8:
        return f"transformation matrix has {m.size} elements, needs at least 8 (two rows of 4x4)"
    return None


def _ttb_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    return _transform_tensor_bilinear, (ins[0], _flat(ins[1], "transformation matrix"), outs[0], ctx.op.version == 2)


# ---------------------------------------------------------------- TransformLandmarks


@njit(nogil=True, cache=True)
def _transform_landmarks(inp, m, out, dims, scale):
    # Reads a landmark's x, y (and z) before writing it, so out may be inp (in place).
    x0, x1, x2, x3 = m[0], m[1], m[2], m[3] * scale
    y0, y1, y2, y3 = m[4], m[5], m[6], m[7] * scale
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for y in range(out.shape[1]):
        for x in range(out.shape[2]):
            src = inp[0, y, x]
            dst = out[0, y, x]
            for lm in range(out.shape[3] // dims):
                o = lm * dims
                lx = src[o]
                ly = src[o + 1]
                lz = src[o + 2] if dims == 3 else zero
                dst[o] = x0 * lx + x1 * ly + x2 * zero + x3 * one
                dst[o + 1] = y0 * lx + y1 * ly + y2 * zero + y3 * one
                if dims == 3:
                    dst[o + 2] = lz


def _tl_params(ctx: OpContext) -> tuple[int, float]:
    """(dimensions, scale): v1 from the flexbuffer (defaults 3, 1.0), v2 from the last input dim."""
    if ctx.op.version == 2:
        return ctx.inputs[0].shape[-1], 1.0
    opts = decode_flexbuffer_map(ctx.op.custom_options) if ctx.op.custom_options else {}
    return int(opts.get("dimensions", 3)), float(opts.get("scale", 1.0))


def _tl_supports(ctx: OpContext) -> str | None:
    reason = _check_io(ctx, 2, 1, (1, 2))
    if reason:
        return reason
    inp, m = ctx.inputs
    rank = 4 if ctx.op.version == 1 else 3
    if len(inp.shape) != rank:
        return f"v{ctx.op.version} takes a {rank}-D landmarks tensor, got shape {tuple(inp.shape)}"
    if tuple(ctx.outputs[0].shape) != tuple(inp.shape):
        return f"output shape {tuple(ctx.outputs[0].shape)} differs from input {tuple(inp.shape)}"
    if inp.shape[0] != 1:
        return "leading dimension must be 1 (MediaPipe's kernel transforms index 0 only)"
    try:
        dims, scale = _tl_params(ctx)
    except (ValueError, TypeError) as exc:
        return f"bad custom_options: {exc}"
    if dims not in (2, 3):
        return f"dimensions {dims} must be 2 or 3"
    if scale == 0:
        return "scale must not be 0"
    if inp.shape[-1] % dims:
        return f"last dimension {inp.shape[-1]} is not a multiple of dimensions {dims}"
    if m.size < 8:
        return f"transformation matrix has {m.size} elements, needs at least 8 (two rows of 4x4)"
    return None


def _tl_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    dims, scale = _tl_params(ctx)
    inp, out = ins[0], outs[0]
    if ctx.op.version == 2:  # [1, N, D] -> [1, 1, N, D] views: one kernel for both versions
        inp, out = inp[np.newaxis], out[np.newaxis]
    return _transform_landmarks, (inp, _flat(ins[1], "transformation matrix"), out, dims, np.float32(scale))


# ---------------------------------------------------------------- Landmarks2TransformMatrix


@njit(nogil=True, cache=True)
def _matmul_into(a, b, out):
    # Mat3/Mat4 operator* of landmarks_to_transform_matrix.cc: float sum, k ascending.
    n = a.shape[0]
    for r in range(n):
        for c in range(n):
            s = np.float32(0.0)
            for k in range(n):
                s += a[r, k] * b[k, c]
            out[r, c] = s


@njit(nogil=True, cache=True, error_model="numpy")  # x/0 gives inf/NaN as in C++, no exception
def _l2m_v1(lm, subset, left, right, mult, lrange, in_h, in_w, out_h, out_w, mats, out):
    lx, ly = lm[left, 0], lm[left, 1]
    rx, ry = lm[right, 0], lm[right, 1]
    alpha = -np.float32(math.atan((ry - ly) / (rx - lx)))
    ca, sa = np.float32(math.cos(alpha)), np.float32(math.sin(alpha))
    max_x, max_y = np.float32(-100000.0), np.float32(-100000.0)
    min_x, min_y = np.float32(100000.0), np.float32(100000.0)
    for i in range(subset.shape[0]):
        for j in range(2):
            px, py = lm[subset[i, j], 0], lm[subset[i, j], 1]
            qx = px * ca - py * sa
            qy = px * sa + py * ca
            max_x = qx if max_x < qx else max_x
            max_y = qy if max_y < qy else max_y
            min_x = qx if qx < min_x else min_x
            min_y = qy if qy < min_y else min_y
    bx = (max_x - min_x) * mult
    by = (max_y - min_y) * mult
    rng = np.float32(lrange)
    mid_x = np.float32(np.float64(max_x + min_x) / 2.0)  # float sum, double halving
    mid_y = np.float32(np.float64(max_y + min_y) / 2.0)
    cn, sn = np.float32(math.cos(-alpha)), np.float32(math.sin(-alpha))
    rmx = mid_x * cn - mid_y * sn
    rmy = mid_x * sn + mid_y * cn
    scale, rot, rel, ab, t1, t2 = mats[0], mats[1], mats[2], mats[3], mats[4], mats[5]
    for a in (scale, rot, rel, ab):
        for r in range(3):
            for c in range(3):
                a[r, c] = np.float32(1.0) if r == c else np.float32(0.0)
    scale[0, 0] = bx / rng
    scale[1, 1] = by / rng
    rot[0, 0], rot[0, 1] = cn, -sn
    rot[1, 0], rot[1, 1] = sn, cn
    rot[0, 2] = np.float32(np.float64(rmx / rng) * 2.0 - 1.0)
    rot[1, 2] = np.float32(np.float64(rmy / rng) * 2.0 - 1.0)
    rel[0, 0] = np.float32(2.0 / (out_w - 1.0))
    rel[0, 2] = np.float32(-1.0)
    rel[1, 1] = np.float32(2.0 / (out_h - 1.0))
    rel[1, 2] = np.float32(-1.0)
    ab[0, 0] = np.float32((in_w - 1.0) / 2.0)
    ab[0, 2] = np.float32((in_w - 1.0) / 2.0)
    ab[1, 1] = np.float32((in_h - 1.0) / 2.0)
    ab[1, 2] = np.float32((in_h - 1.0) / 2.0)
    # itm = to_absolute * rotation * scale * to_relative, evaluated left to right
    _matmul_into(ab, rot, t1)
    _matmul_into(t1, scale, t2)
    _matmul_into(t2, rel, t1)
    o = out[0]
    for r in range(4):
        for c in range(4):
            o[r, c] = np.float32(0.0)
    o[0, 0], o[0, 1], o[0, 3] = t1[0, 0], t1[0, 1], t1[0, 2]
    o[1, 0], o[1, 1], o[1, 3] = t1[1, 0], t1[1, 1], t1[1, 2]
    o[2, 0], o[2, 1], o[2, 2] = t1[2, 0], t1[2, 1], t1[2, 2]
    o[3, 3] = np.float32(1.0)


@njit(nogil=True, cache=True, error_model="numpy")  # x/0 gives inf/NaN as in C++, no exception
def _l2m_v2(lm, subset, left, right, target, out_h, out_w, scale_x, scale_y, mats, out):
    rot = np.float32(math.atan2(lm[right, 1] - lm[left, 1], lm[right, 0] - lm[left, 0]))
    rot = target - rot
    c, s = np.float32(math.cos(rot)), np.float32(math.sin(rot))
    zero = np.float32(0.0)
    one = np.float32(1.0)
    max_x = max_y = min_x = min_y = zero
    first = True
    for i in range(subset.shape[0]):
        for j in range(2):
            px, py = lm[subset[i, j], 0], lm[subset[i, j], 1]
            qx = zero + c * px + (-s) * py + zero * one
            qy = zero + s * px + c * py + zero * one
            if first:
                max_x, max_y, min_x, min_y = qx, qy, qx, qy
                first = False
                continue
            if max_x < qx:
                max_x = qx
            if max_y < qy:
                max_y = qy
            if min_x > qx:
                min_x = qx
            if min_y > qy:
                min_y = qy
    crop_w = max_x - min_x
    crop_h = max_y - min_y
    cx = (min_x + max_x) / np.float32(2.0)
    cy = (min_y + max_y) / np.float32(2.0)
    ci, si = np.float32(math.cos(-rot)), np.float32(math.sin(-rot))
    crop_x = zero + ci * cx + (-si) * cy + zero * one
    crop_y = zero + si * cx + ci * cy + zero * one
    t, f, tmp = mats[0], mats[1], mats[2]
    for a in (t, f):
        for r in range(4):
            for k in range(4):
                a[r, k] = one if r == k else zero
    f[0, 3], f[1, 3] = crop_x, crop_y  # t_shift (t = identity * t_shift)
    _matmul_into(t, f, tmp)
    rr = -rot
    cr, sr = np.float32(math.cos(rr)), np.float32(math.sin(rr))
    f[0, 3], f[1, 3] = zero, zero
    f[0, 0], f[0, 1], f[1, 0], f[1, 1] = cr, -sr, sr, cr
    _matmul_into(tmp, f, t)
    f[0, 1], f[1, 0] = zero, zero
    f[0, 0] = scale_x * crop_w / np.float32(out_w)
    f[1, 1] = scale_y * crop_h / np.float32(out_h)
    _matmul_into(t, f, tmp)
    f[0, 0], f[1, 1] = one, one
    f[0, 3] = np.float32(-1.0 * (out_w / 2.0))
    f[1, 3] = np.float32(-1.0 * (out_h / 2.0))
    _matmul_into(tmp, f, t)
    o = out[0]
    for r in range(4):
        for k in range(4):
            o[r, k] = t[r, k]


def _subset_pairs(values) -> np.ndarray:
    """Flat index list -> [K, 2] pairs; an odd last index pairs with itself (as the Parse*Attributes do)."""
    flat = [int(v) for v in values]
    if len(flat) % 2:
        flat.append(flat[-1])
    return np.asarray(flat, np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class _L2M:
    subset: np.ndarray
    left: int
    right: int
    floats: tuple  # v1: (bbox_size_multiplier,) v2: (target_rotation_radians, scale_x, scale_y)
    ints: tuple  # v1: (landmarks_range, in_h, in_w, out_h, out_w) v2: (output_height, output_width)


def _l2m_v1_options(data: bytes) -> _L2M:
    """ParseLandmarksToTransformMatrixV1Attributes' keys, checked as the v1 Eval checks them."""
    m = decode_flexbuffer_map(data)
    in_hw, out_hw = list(m["input_hw"]), list(m["output_hw"])
    if len(in_hw) < 2 or len(out_hw) < 2:
        raise ValueError("input_hw and output_hw need two values (h, w)")
    p = _L2M(_subset_pairs(m["subset"]), int(m["left_rotation_idx"]), int(m["right_rotation_idx"]),
             (float(m["bbox_size_multiplier"]),),
             (int(m["landmarks_range"]), int(in_hw[0]), int(in_hw[1]), int(out_hw[0]), int(out_hw[1])))
    if int(m["dimensions"]) != 3:
        raise ValueError(f"dimensions {m['dimensions']} must be 3")
    if p.floats[0] == 0:
        raise ValueError("bbox_size_multiplier must not be 0")
    if min(p.ints) <= 0:
        raise ValueError(f"landmarks_range, input_hw, output_hw must be positive, got {p.ints}")
    return p


def _l2m_v2_options(data: bytes) -> _L2M:
    """ParseLandmarksToTransformMatrixV2Attributes' keys, checked as the v2 Eval checks them."""
    m = decode_flexbuffer_map(data)
    p = _L2M(_subset_pairs(m["subset_idxs"]), int(m["left_rotation_idx"]), int(m["right_rotation_idx"]),
             (float(m["target_rotation_radians"]), float(m["scale_x"]), float(m["scale_y"])),
             (int(m["output_height"]), int(m["output_width"])))
    if min(p.ints) <= 0:
        raise ValueError(f"output_height and output_width must be positive, got {p.ints}")
    if min(p.floats[1:]) <= 0:
        raise ValueError(f"scale_x and scale_y must be positive, got {p.floats[1:]}")
    return p


def _l2m_options(ctx: OpContext) -> _L2M:
    return (_l2m_v1_options if ctx.op.version == 1 else _l2m_v2_options)(ctx.op.custom_options)


def _l2m_supports(ctx: OpContext) -> str | None:
    reason = _check_io(ctx, 1, 1, (1, 2))
    if reason:
        return reason
    inp = ctx.inputs[0]
    rank = 4 if ctx.op.version == 1 else 3
    if len(inp.shape) != rank:
        return f"v{ctx.op.version} takes a {rank}-D landmarks tensor, got shape {tuple(inp.shape)}"
    if ctx.op.version == 1 and tuple(inp.shape[:3]) != (1, 1, 1):
        return f"v1 input must be [1, 1, 1, C], got {tuple(inp.shape)}"
    if tuple(ctx.outputs[0].shape) != (1, 4, 4):
        return f"output shape {tuple(ctx.outputs[0].shape)} must be (1, 4, 4)"
    if inp.size % 3:
        return f"landmarks tensor of {inp.size} floats is not a list of 3-D landmarks"
    try:
        p = _l2m_options(ctx)
    except (ValueError, KeyError, TypeError) as exc:
        return f"bad custom_options: {exc}"
    count = inp.size // 3
    used = [p.left, p.right, *p.subset.ravel().tolist()]
    if p.subset.size == 0:
        return "subset of landmarks is empty"
    if min(used) < 0 or max(used) >= count:
        return f"landmark index {max(used) if max(used) >= count else min(used)} outside 0..{count - 1}"
    return None


def _l2m_scratch(ctx: OpContext) -> int:
    return 6 * 16 * 4  # six 4x4 (or 3x3) float matrices


def _landmarks_view(a: np.ndarray) -> np.ndarray:
    """The landmarks as [count, 3] without copying."""
    if a.shape[-1] == 3 and all(d == 1 for d in a.shape[:-2]):
        return a[(0,) * (a.ndim - 2)]
    try:
        return np.reshape(a, (-1, 3), copy=False)
    except ValueError:
        raise ValueError("landmarks tensor is not contiguous; Landmarks2TransformMatrix reads it as [N, 3]") from None


def _l2m_bind(ctx: OpContext, ins: list, outs: list, scratch: np.ndarray | None) -> Step:
    p = _l2m_options(ctx)
    lm = _landmarks_view(ins[0])
    if ctx.op.version == 1:
        mats = f32_scratch(scratch, 6 * 9).reshape(6, 3, 3)
        lrange, in_h, in_w, out_h, out_w = p.ints
        return _l2m_v1, (lm, p.subset, p.left, p.right, np.float32(p.floats[0]), lrange, in_h, in_w, out_h, out_w,
                         mats, outs[0])
    mats = f32_scratch(scratch, 3 * 16).reshape(3, 4, 4)
    target, sx, sy = (np.float32(v) for v in p.floats)
    out_h, out_w = p.ints
    return _l2m_v2, (lm, p.subset, p.left, p.right, target, out_h, out_w, sx, sy, mats, outs[0])


# ---------------------------------------------------------------- registration

MEDIAPIPE_CUSTOM_CODES: tuple[str, ...] = (
    "MaxPoolingWithArgmax2D",
    "MaxUnpooling2D",
    "Convolution2DTransposeBias",
    "TransformTensorBilinear",
    "TransformLandmarks",
    "Landmarks2TransformMatrix",
)


def register(registry: KernelRegistry) -> None:
    """Add the float32 kernels of MediaPipe's custom ops (by custom code)."""
    add = registry.add_custom
    add("MaxPoolingWithArgmax2D", KernelEntry("CUSTOM:MaxPoolingWithArgmax2D", _argmax_supports, _argmax_bind,
                                              strided_output=True))
    add("MaxUnpooling2D", KernelEntry("CUSTOM:MaxUnpooling2D", _unpool_supports, _unpool_bind, strided_output=True))
    add("Convolution2DTransposeBias", KernelEntry("CUSTOM:Convolution2DTransposeBias", _tcb_supports, _tcb_bind,
                                                  _tcb_scratch, strided_output=True))
    add("TransformTensorBilinear", KernelEntry("CUSTOM:TransformTensorBilinear", _ttb_supports, _ttb_bind,
                                               strided_output=True))
    add("TransformLandmarks", KernelEntry("CUSTOM:TransformLandmarks", _tl_supports, _tl_bind,
                                          inplace=lambda ctx: (0,), strided_output=True))
    add("Landmarks2TransformMatrix", KernelEntry("CUSTOM:Landmarks2TransformMatrix", _l2m_supports, _l2m_bind,
                                                 _l2m_scratch))
