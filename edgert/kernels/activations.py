"""Fused activations shared by every float kernel: name -> code, and the per-element function.

TFLite ops carry `fused_activation_function` as an enum name; kernels resolve it once in bind
with `activation_code(name)` and pass the int code into their numba loop, where
`apply_activation(x, code)` is inlined. Codes follow the TFLite enum order.

Note on TANH: TFLite's float kernels that fuse an activation through
`CalculateActivationRange` (ADD, SUB, MUL, DIV, CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, pooling)
only clamp: RELU, RELU6 and RELU_N1_TO_1 have a range, every other code (TANH included) means
"no clamp". Kernels that want that exact behaviour use `activation_range(code)` / `clamp_code(code)`;
`apply_activation` itself applies tanh for code 4 (what RNN-style kernels do).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from edgert.errors import UnsupportedOpError

NONE = 0
RELU = 1
RELU_N1_TO_1 = 2
RELU6 = 3
TANH = 4

_CODES = {"NONE": NONE, "RELU": RELU, "RELU_N1_TO_1": RELU_N1_TO_1, "RELU6": RELU6, "TANH": TANH}

_FLOAT_MAX = float(np.finfo(np.float32).max)


def activation_code(name: str | None) -> int:
    """The int code of a `fused_activation_function` enum name (None or "" means NONE)."""
    if not name:
        return NONE
    try:
        return _CODES[name]
    except KeyError:
        raise UnsupportedOpError(
            f"fused activation {name!r} is not supported (supported: {', '.join(_CODES)})"
        ) from None


def activation_supported(name: str | None) -> str | None:
    """None when `name` is a fused activation the kernels handle, else a reason for supports()."""
    if not name or name in _CODES:
        return None
    return f"fused activation {name} not supported"


def clamp_code(code: int) -> int:
    """The code TFLite's CalculateActivationRange kernels really apply: TANH there is no clamp."""
    return NONE if code == TANH else code


def activation_range(code: int) -> tuple[float, float]:
    """(min, max) float32 clamp bounds of TFLite's CalculateActivationRange for `code`."""
    if code == RELU:
        return 0.0, _FLOAT_MAX
    if code == RELU6:
        return 0.0, 6.0
    if code == RELU_N1_TO_1:
        return -1.0, 1.0
    return -_FLOAT_MAX, _FLOAT_MAX


_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_F6 = np.float32(6.0)


@njit(inline="always", cache=True)
def apply_activation(x, code):
    """x after fused activation `code` (0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6, 4 TANH).

    Clamps compare as std::min(std::max(x, lo), hi) does, so NaN passes through. float32 bounds
    keep a float32 x float32 (numba would otherwise widen the result to float64).
    """
    if code == 0:
        return x
    if code == 1:
        return _F0 if x < _F0 else x
    if code == 2:
        if x < -_F1:
            return -_F1
        return _F1 if x > _F1 else x
    if code == 3:
        if x < _F0:
            return _F0
        return _F6 if x > _F6 else x
    if code == 4:
        return math.tanh(x)
    return x


# ---------------------------------------------------------------------------------------------
# A vectorizable float32 exp
#
# numba lowers np.exp on float32 to a call of libm's expf, which LLVM cannot vectorize: LOGISTIC
# and SOFTMAX spent most of their time in it. expf_fast is Cody-Waite range reduction
# (x = n ln2 + r, |r| <= ln2/2) and Cephes' degree-6 polynomial for e^r (about 1 ulp), scaled
# by 2^n built from exponent bits in two halves so results down to the subnormals are right.
# Straight-line code with selects only, so loops that call it vectorize. Use it only in loops that
# vectorize: one element at a time it is slower than libm's table-driven expf (measured 4 vs 2.4 ns).

_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_HI = np.float32(88.72283935546875)  # above: +inf
_EXP_LO = np.float32(-103.97208404541016)  # below: 0
_P0 = np.float32(1.9875691500e-4)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)
_ROUND_MAGIC = np.float32(12582912.0)
_INF = np.float32(np.inf)


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterprets an int32's bits as a float32 (C++ bit_cast)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always")
def _pow2(n):
    """2^n as float32 for integer n in [-126, 127]."""
    return _int32_bits_as_float32(np.int32((n + 127) << 23))


@njit(inline="always")
def expf_fast(x):
    """e^x for a float32 x, within ~1-2 ulp of libm's expf; NaN -> NaN, +inf -> inf, -inf -> 0."""
    xc = _EXP_LO if x < _EXP_LO else x
    xc = _EXP_HI if xc > _EXP_HI else xc
    # round to nearest by adding and removing 1.5 * 2^23 (exact for |t| < 2^22; a floorf call would not vectorize)
    n = (xc * _LOG2E + _ROUND_MAGIC) - _ROUND_MAGIC
    r = xc - n * _LN2_HI - n * _LN2_LO
    z = r * r
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * z + r + _F1
    ni = np.int32(n)
    n1 = ni >> 1
    y = p * _pow2(n1) * _pow2(ni - n1)
    y = _INF if x > _EXP_HI else y
    y = _F0 if x < _EXP_LO else y
    return x if x != x else y
