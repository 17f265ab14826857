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
from numba import njit

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
