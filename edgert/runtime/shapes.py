"""Shape inference for dynamic input shapes: every tensor's shape from new input shapes, by TFLite's Prepare rules.

A model whose inputs have -1 in their shape_signature runs at the stored shape unless resized.
`with_input_shapes` checks a requested resize against the signatures and returns a new Graph
value (constants shared, activations with their new shapes); `infer_shapes` is the propagation
behind it. The rules follow the Prepare functions of tensorflow/lite/kernels/*.cc, so a resize
TFLite refuses (a RESHAPE to a constant shape with a fixed batch, a TRANSPOSE_CONV whose
output_shape is a constant) is refused here too, naming the operator.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Callable, Mapping, Sequence

import numpy as np

from edgert.errors import ModelError, RequestError, UnsupportedOpError
from edgert.kernels.conv import conv_geometry
from edgert.kernels.reduce import reduced_shape, resolve_axes
from edgert.kernels.registry import OpContext
from edgert.kernels.shape import strided_slice_dims
from edgert.model.graph import Graph, Operator, Subgraph

Shape = tuple[int, ...]

__all__ = ["infer_shapes", "with_input_shapes", "shape_rule_ops", "ShapeRuleError"]


class ShapeRuleError(ModelError):
    """An operator's shape rule rejects the new input shapes (as TFLite's Prepare would)."""


class _Ctx:
    """What a shape rule sees of one operator: input shapes (None = absent), constant values, options."""

    def __init__(self, sg: Subgraph, op: Operator, shapes: dict[int, Shape]):
        self.sg, self.op, self._shapes = sg, op, shapes

    def shape(self, pos: int) -> Shape | None:
        if pos >= len(self.op.inputs) or self.op.inputs[pos] < 0:
            return None
        return self._shapes[self.op.inputs[pos]]

    def stored_out(self, pos: int = 0) -> Shape:
        return self.sg.tensors[self.op.outputs[pos]].shape

    def values(self, pos: int, what: str) -> list[int]:
        """The integer values of a constant input (sizes, axes, paddings); error when computed at run time."""
        i = self.op.inputs[pos] if pos < len(self.op.inputs) else -1
        t = self.sg.tensor(i)
        if t is None or t.data is None:
            raise self.fail(f"its {what} input is computed at run time, so the output shape is data-dependent")
        return [int(v) for v in np.asarray(t.data).reshape(-1)]

    def opt(self, name: str, default):
        value = getattr(self.op.options, name, None) if self.op.options is not None else None
        return default if value is None else value

    def fail(self, message: str) -> ShapeRuleError:
        return ShapeRuleError(f"cannot resize: {self.op.name} (operator {self.op.index}, output "
                              f"{self.sg.tensors[self.op.outputs[0]].name!r}): {message}" if self.op.outputs else
                              f"cannot resize: {self.op.name} (operator {self.op.index}): {message}")


Rule = Callable[[_Ctx], list[Shape]]


# ------------------------------------------------------------------------------------------------
# helpers


def _axis(ctx: _Ctx, axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ctx.fail(f"{what} {axis} out of range for rank {rank}")
    return axis % rank


def broadcast_shapes(ctx: _Ctx, a: Shape, b: Shape) -> Shape:
    """TFLite's CalculateShapeForBroadcast: right-aligned, each pair equal or one of them 1."""
    rank = max(len(a), len(b))
    a, b = (1,) * (rank - len(a)) + tuple(a), (1,) * (rank - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ctx.fail(f"shapes {list(a)} and {list(b)} do not broadcast")
        out.append(y if x == 1 else x)
    return tuple(out)


def _one_value(ctx: _Ctx, pos: int, what: str) -> int:
    vals = ctx.values(pos, what)
    if len(vals) != 1:
        raise ctx.fail(f"{what} must hold one value, holds {len(vals)}")
    return vals[0]


def _positive(ctx: _Ctx, shape: Sequence[int], what: str = "output") -> Shape:
    if any(d <= 0 for d in shape):
        raise ctx.fail(f"{what} shape would be {list(shape)}: the input is too small")
    return tuple(int(d) for d in shape)


# ------------------------------------------------------------------------------------------------
# rules, one per op family


def _same(ctx: _Ctx) -> list[Shape]:
    return [ctx.shape(0)] * len(ctx.op.outputs)


def _binary(ctx: _Ctx) -> list[Shape]:
    return [broadcast_shapes(ctx, ctx.shape(0), ctx.shape(1))]


def _conv(ctx: _Ctx) -> list[Shape]:
    x, w = ctx.shape(0), ctx.shape(1)
    if len(x) != 4 or len(w) != 4:
        raise ctx.fail(f"input {list(x)} and filter {list(w)} must be 4-D")
    depthwise = ctx.op.opcode == "DEPTHWISE_CONV_2D"
    if not depthwise and w[3] and x[3] % w[3]:
        raise ctx.fail(f"input channels {x[3]} are not a multiple of the filter's {w[3]}")
    pad = ctx.opt("padding", "SAME")
    oh, _ = conv_geometry(pad, x[1], w[1], ctx.opt("stride_h", 1), ctx.opt("dilation_h_factor", 1))
    ow, _ = conv_geometry(pad, x[2], w[2], ctx.opt("stride_w", 1), ctx.opt("dilation_w_factor", 1))
    return [_positive(ctx, (x[0], oh, ow, w[3] if depthwise else w[0]))]


def _pool(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    if len(x) != 4:
        raise ctx.fail(f"input {list(x)} must be 4-D")
    pad = ctx.opt("padding", "SAME")
    oh, _ = conv_geometry(pad, x[1], ctx.opt("filter_height", 1), ctx.opt("stride_h", 1))
    ow, _ = conv_geometry(pad, x[2], ctx.opt("filter_width", 1), ctx.opt("stride_w", 1))
    return [_positive(ctx, (x[0], oh, ow, x[3]))]


def _transpose_conv(ctx: _Ctx) -> list[Shape]:
    out = tuple(ctx.values(0, "output_shape"))
    x, w = ctx.shape(2), ctx.shape(1)
    stored_x = ctx.sg.tensors[ctx.op.inputs[2]].shape
    if len(out) != 4 or len(x) != 4:
        raise ctx.fail(f"output_shape {list(out)} and input {list(x)} must be 4-D")
    # output_shape is a constant written for the stored input: TFLite sizes the output from it
    # alone, so any other input size would compute the wrong (or an out-of-bounds) result.
    if out[0] != x[0]:
        raise ctx.fail(f"output_shape is the constant {list(out)} with batch {out[0]}, input batch is {x[0]}")
    if tuple(x[1:3]) != tuple(stored_x[1:3]):
        raise ctx.fail(f"output_shape is the constant {list(out)} made for input {list(stored_x)}, "
                       f"not {list(x)}")
    if out[3] != w[0]:
        raise ctx.fail(f"output_shape channels {out[3]} differ from the filter's {w[0]}")
    return [out]


def _fully_connected(ctx: _Ctx) -> list[Shape]:
    x, w = ctx.shape(0), ctx.shape(1)
    if len(w) != 2:
        raise ctx.fail(f"weights {list(w)} must be 2-D")
    units, depth = w
    total = math.prod(x)
    if depth == 0 or total % depth:
        raise ctx.fail(f"input {list(x)} ({total} elements) is not a whole number of rows of {depth}")
    if ctx.opt("keep_num_dims", False):
        if x[-1] != depth:
            raise ctx.fail(f"keep_num_dims needs the input's last dim {x[-1]} to equal the weights' {depth}")
        out = tuple(x[:-1]) + (units,)
    else:
        out = (total // depth, units)
    return [out] + [ctx.stored_out(k) for k in range(1, len(ctx.op.outputs))]


def _batch_matmul(ctx: _Ctx) -> list[Shape]:
    a, b = ctx.shape(0), ctx.shape(1)
    if len(a) < 2 or len(b) < 2:
        raise ctx.fail(f"operands {list(a)} and {list(b)} must be at least 2-D")
    adj_x, adj_y = bool(ctx.opt("adj_x", False)), bool(ctx.opt("adj_y", False))
    rows, ka = (a[-1], a[-2]) if adj_x else (a[-2], a[-1])
    kb, cols = (b[-1], b[-2]) if adj_y else (b[-2], b[-1])
    if ka != kb:
        raise ctx.fail(f"inner dimensions differ: {list(a)} x {list(b)} (adj_x={adj_x}, adj_y={adj_y})")
    batch = broadcast_shapes(ctx, a[:-2], b[:-2])
    return [tuple(batch) + (rows, cols)]


def _reshape(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    shape_t = ctx.sg.tensor(ctx.op.inputs[1]) if len(ctx.op.inputs) > 1 else None
    if shape_t is not None and len(shape_t.shape) == 1 and shape_t.type_name == "INT32":
        target = ctx.values(1, "shape")
    else:  # reshape.cc falls back to the new_shape option; [0] is the legacy spelling of a scalar
        target = list(ctx.opt("new_shape", ()))
        if target == [0]:
            target = []
    total = math.prod(x)
    stretch = [k for k, d in enumerate(target) if d == -1]
    if len(stretch) > 1:
        raise ctx.fail(f"target shape {target} has more than one -1")
    known = math.prod(d for d in target if d != -1)
    if stretch:
        if known == 0 or total % known:
            raise ctx.fail(f"cannot reshape {list(x)} ({total} elements) to {target}")
        target[stretch[0]] = total // known
    if math.prod(target) != total:
        raise ctx.fail(f"the target shape is the constant {target} ({math.prod(target)} elements) but the input "
                       f"{list(x)} has {total}; the model was converted with a fixed batch")
    return [tuple(target)]


def _squeeze(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    dims = list(ctx.opt("squeeze_dims", ()))
    if not dims:
        return [tuple(d for d in x if d != 1)]
    drop = {_axis(ctx, d, len(x), "squeeze dim") for d in dims}
    for d in drop:
        if x[d] != 1:
            raise ctx.fail(f"squeezes dim {d} of input {list(x)}, which is not 1")
    return [tuple(d for k, d in enumerate(x) if k not in drop)]


def _expand_dims(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    axis = _one_value(ctx, 1, "axis")
    axis = _axis(ctx, axis, len(x) + 1)
    return [tuple(x[:axis]) + (1,) + tuple(x[axis:])]


def _concat(ctx: _Ctx) -> list[Shape]:
    shapes = [ctx.shape(k) for k in range(len(ctx.op.inputs))]
    first = shapes[0]
    axis = _axis(ctx, ctx.opt("axis", 0), len(first))
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for k, (a, b) in enumerate(zip(s, first)) if k != axis):
            raise ctx.fail(f"inputs {[list(t) for t in shapes]} differ outside axis {axis}")
    return [tuple(first[:axis]) + (sum(s[axis] for s in shapes),) + tuple(first[axis + 1:])]


def _pad(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    p = ctx.values(1, "paddings")
    if len(p) != 2 * len(x):
        raise ctx.fail(f"paddings hold {len(p)} values, input {list(x)} needs {2 * len(x)}")
    return [_positive(ctx, tuple(d + p[2 * k] + p[2 * k + 1] for k, d in enumerate(x)))]


def _slice(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    begin, size = ctx.values(1, "begin"), ctx.values(2, "size")
    if len(begin) != len(x) or len(size) != len(x):
        raise ctx.fail(f"begin {begin} and size {size} must have one value per dim of {list(x)}")
    out = []
    for d, b, s in zip(x, begin, size):
        n = d - b if s == -1 else s
        if b < 0 or n < 0 or b + n > d:
            raise ctx.fail(f"slice begin {begin} size {size} is outside input {list(x)}")
        out.append(n)
    return [tuple(out)]


def _strided_slice(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    b, e, s = ctx.values(1, "begin"), ctx.values(2, "end"), ctx.values(3, "strides")
    try:
        dims = strided_slice_dims(x, b, e, s, ctx.opt("begin_mask", 0), ctx.opt("end_mask", 0),
                                  ctx.opt("ellipsis_mask", 0), ctx.opt("new_axis_mask", 0),
                                  ctx.opt("shrink_axis_mask", 0), bool(ctx.opt("offset", False)))
    except (UnsupportedOpError, IndexError) as exc:
        raise ctx.fail(str(exc)) from None
    return [tuple(d.count for d in dims if not d.shrink)]


def _transpose(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    perm = [_axis(ctx, p, len(x), "perm") for p in ctx.values(1, "perm")]
    if sorted(perm) != list(range(len(x))):
        raise ctx.fail(f"perm {perm} is not a permutation of the input's {len(x)} dims")
    return [tuple(x[p] for p in perm)]


def _gather(ctx: _Ctx) -> list[Shape]:
    p, idx = ctx.shape(0), ctx.shape(1)
    axis = _axis(ctx, ctx.opt("axis", 0), len(p))
    bd = ctx.opt("batch_dims", 0)
    bd = bd + len(idx) if bd < 0 else bd
    return [tuple(p[:axis]) + tuple(idx[bd:]) + tuple(p[axis + 1:])]


def _gather_nd(ctx: _Ctx) -> list[Shape]:
    p, idx = ctx.shape(0), ctx.shape(1)
    if not idx or idx[-1] > len(p):
        raise ctx.fail(f"indices {list(idx)} do not index params {list(p)}")
    return [tuple(idx[:-1]) + tuple(p[idx[-1]:])]


def _reduce(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    axes = resolve_axes(np.asarray(ctx.values(1, "axis"), dtype=np.int64), len(x))
    if isinstance(axes, str):
        raise ctx.fail(axes)
    return [reduced_shape(tuple(x), axes, bool(ctx.opt("keep_dims", False)))]


def _arg(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    axis = _axis(ctx, _one_value(ctx, 1, "axis"), len(x))
    return [tuple(d for k, d in enumerate(x) if k != axis)]


def _resize(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    size = ctx.values(1, "size")
    if len(x) != 4 or len(size) != 2:
        raise ctx.fail(f"input {list(x)} must be 4-D and size {size} hold 2 values")
    return [_positive(ctx, (x[0], size[0], size[1], x[3]))]


def _depth_to_space(ctx: _Ctx) -> list[Shape]:
    n, h, w, c = ctx.shape(0)
    b = ctx.opt("block_size", 1)
    if c % (b * b):
        raise ctx.fail(f"channels {c} are not a multiple of block_size^2 = {b * b}")
    return [(n, h * b, w * b, c // (b * b))]


def _space_to_depth(ctx: _Ctx) -> list[Shape]:
    n, h, w, c = ctx.shape(0)
    b = ctx.opt("block_size", 1)
    if h % b or w % b:
        raise ctx.fail(f"height {h} and width {w} must be multiples of block_size {b}")
    return [(n, h // b, w // b, c * b * b)]


def _split(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(1)
    axis = _axis(ctx, _one_value(ctx, 0, "axis"), len(x))
    n = len(ctx.op.outputs)
    if x[axis] % n:
        raise ctx.fail(f"dim {axis} of input {list(x)} does not split into {n} equal parts")
    return [tuple(x[:axis]) + (x[axis] // n,) + tuple(x[axis + 1:])] * n


def _split_v(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    sizes = ctx.values(1, "size_splits")
    axis = _axis(ctx, _one_value(ctx, 2, "axis"), len(x))
    unknown = [k for k, s in enumerate(sizes) if s == -1]
    if len(unknown) > 1 or len(sizes) != len(ctx.op.outputs):
        raise ctx.fail(f"size_splits {sizes} must have one value per output and at most one -1")
    rest = x[axis] - sum(s for s in sizes if s != -1)
    if unknown:
        sizes[unknown[0]] = rest
    if rest < 0 or sum(sizes) != x[axis]:
        raise ctx.fail(f"size_splits {sizes} do not add up to dim {axis} ({x[axis]}) of input {list(x)}")
    return [tuple(x[:axis]) + (s,) + tuple(x[axis + 1:]) for s in sizes]


def _pack(ctx: _Ctx) -> list[Shape]:
    shapes = [ctx.shape(k) for k in range(len(ctx.op.inputs))]
    if any(s != shapes[0] for s in shapes):
        raise ctx.fail(f"inputs {[list(s) for s in shapes]} differ")
    x = shapes[0]
    axis = _axis(ctx, ctx.opt("axis", 0), len(x) + 1)
    return [tuple(x[:axis]) + (len(shapes),) + tuple(x[axis:])]


def _unpack(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    axis = _axis(ctx, ctx.opt("axis", 0), len(x))
    if x[axis] != len(ctx.op.outputs):
        raise ctx.fail(f"dim {axis} of input {list(x)} is {x[axis]}, the op has {len(ctx.op.outputs)} outputs")
    return [tuple(d for k, d in enumerate(x) if k != axis)] * len(ctx.op.outputs)


def _tile(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    m = ctx.values(1, "multiples")
    if len(m) != len(x):
        raise ctx.fail(f"multiples {m} must have one value per dim of {list(x)}")
    return [tuple(d * k for d, k in zip(x, m))]


def _broadcast_to(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    target = tuple(ctx.values(1, "shape"))
    if len(x) > len(target):
        raise ctx.fail(f"input {list(x)} has more dims than the target shape {list(target)}")
    padded = (1,) * (len(target) - len(x)) + tuple(x)
    if any(a != b and a != 1 for a, b in zip(padded, target)):
        raise ctx.fail(f"input {list(x)} does not broadcast to the constant shape {list(target)}")
    return [target]


def _stored(ctx: _Ctx) -> list[Shape]:
    """Ops whose outputs do not depend on the activations' shapes (variables, decompression)."""
    return [ctx.stored_out(k) for k in range(len(ctx.op.outputs))]


# MediaPipe custom ops: their geometry lives in edgert.kernels.custom; run it on a context whose
# input tensors carry the new shapes.
def _custom_geometry(ctx: _Ctx, geometry: Callable) -> tuple:
    from edgert.kernels import custom

    inputs = tuple(None if i < 0 else dataclasses.replace(ctx.sg.tensors[i], shape=ctx._shapes[i])
                   for i in ctx.op.inputs)
    octx = OpContext(ctx.op, inputs, tuple(ctx.sg.tensors[o] for o in ctx.op.outputs), ctx.sg)
    try:
        return getattr(custom, geometry)(octx)
    except (ValueError, struct.error) as exc:
        raise ctx.fail(f"bad custom_options: {exc}") from None


def _argmax_pool(ctx: _Ctx) -> list[Shape]:
    x = ctx.shape(0)
    if len(x) != 4:
        raise ctx.fail(f"input {list(x)} must be 4-D")
    _, oh, ow, _, _ = _custom_geometry(ctx, "_argmax_geometry")
    return [_positive(ctx, (x[0], oh, ow, x[3]))] * 2


def _unpool(ctx: _Ctx) -> list[Shape]:
    if len(ctx.shape(0)) != 4:
        raise ctx.fail(f"input {list(ctx.shape(0))} must be 4-D")
    return [tuple(_custom_geometry(ctx, "_unpool_geometry")[1])]


def _transpose_conv_bias(ctx: _Ctx) -> list[Shape]:
    if len(ctx.shape(0)) != 4 or len(ctx.shape(1)) != 4:
        raise ctx.fail("input and weights must be 4-D")
    return [_positive(ctx, _custom_geometry(ctx, "_tcb_geometry")[1])]


def _transform_tensor_bilinear(ctx: _Ctx) -> list[Shape]:
    x, out = ctx.shape(0), ctx.stored_out()
    return [tuple(out[:3]) + (x[3],)] if len(x) == 4 and len(out) == 4 else [out]


_UNARY = ("ABS", "CAST", "CEIL", "COS", "DEQUANTIZE", "QUANTIZE", "ELU", "EXP", "FLOOR", "GELU", "HARD_SWISH",
          "LEAKY_RELU", "LOG", "LOGISTIC", "LOG_SOFTMAX", "SOFTMAX", "NEG", "RELU", "RELU6", "RELU_0_TO_1",
          "RELU_N1_TO_1", "ROUND", "RSQRT", "SIN", "SQRT", "SQUARE", "TANH", "CUSTOM:TransformLandmarks")
_BINARY = ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "POW", "SQUARED_DIFFERENCE", "FLOOR_DIV",
           "FLOOR_MOD", "PRELU")

RULES: dict[str, Rule] = {
    **{op: _same for op in _UNARY},
    **{op: _binary for op in _BINARY},
    "CONV_2D": _conv, "DEPTHWISE_CONV_2D": _conv,
    "AVERAGE_POOL_2D": _pool, "MAX_POOL_2D": _pool, "L2_POOL_2D": _pool,
    "TRANSPOSE_CONV": _transpose_conv,
    "FULLY_CONNECTED": _fully_connected,
    "BATCH_MATMUL": _batch_matmul,
    "RESHAPE": _reshape, "SQUEEZE": _squeeze, "EXPAND_DIMS": _expand_dims,
    "CONCATENATION": _concat,
    "PAD": _pad, "PADV2": _pad, "MIRROR_PAD": _pad,
    "SLICE": _slice, "STRIDED_SLICE": _strided_slice,
    "TRANSPOSE": _transpose,
    "GATHER": _gather, "GATHER_ND": _gather_nd,
    "MEAN": _reduce, "SUM": _reduce, "REDUCE_MAX": _reduce, "REDUCE_MIN": _reduce, "REDUCE_PROD": _reduce,
    "ARG_MAX": _arg, "ARG_MIN": _arg,
    "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize,
    "DEPTH_TO_SPACE": _depth_to_space, "SPACE_TO_DEPTH": _space_to_depth,
    "SPLIT": _split, "SPLIT_V": _split_v, "PACK": _pack, "UNPACK": _unpack,
    "TILE": _tile, "BROADCAST_TO": _broadcast_to,
    "VAR_HANDLE": _stored, "READ_VARIABLE": _stored, "ASSIGN_VARIABLE": _stored, "CALL_ONCE": _stored,
    "DENSIFY": _stored,
    "CUSTOM:MaxPoolingWithArgmax2D": _argmax_pool,
    "CUSTOM:MaxUnpooling2D": _unpool,
    "CUSTOM:Convolution2DTransposeBias": _transpose_conv_bias,
    "CUSTOM:TransformTensorBilinear": _transform_tensor_bilinear,
    "CUSTOM:TransformLandmarks": _same,
    "CUSTOM:Landmarks2TransformMatrix": _stored,
}


def shape_rule_ops() -> tuple[str, ...]:
    """Registry keys (op name or "CUSTOM:<code>") that have a shape rule."""
    return tuple(sorted(RULES))


def _key(op: Operator) -> str:
    return f"CUSTOM:{op.custom_code}" if op.opcode == "CUSTOM" else op.opcode


# ------------------------------------------------------------------------------------------------
# propagation


def infer_shapes(subgraph: Subgraph, input_shapes: Mapping[int, Sequence[int]]) -> dict[int, Shape]:
    """Every non-constant tensor's shape when the subgraph's inputs take `input_shapes` (tensor index -> shape).

    Inputs not given keep their stored shape; tensors no operator writes (variables) keep theirs.
    Ops run in dependency order. An op whose input shapes are all unchanged keeps its stored output
    shapes (its shape is a function of those, the constants and the options); otherwise its rule
    decides: ShapeRuleError (a ModelError) when the rule refuses, UnsupportedOpError when the op has
    no rule.
    """
    sg = subgraph
    shapes: dict[int, Shape] = {t.index: tuple(t.shape) for t in sg.tensors}
    for i, s in input_shapes.items():
        shapes[int(i)] = tuple(int(d) for d in s)
    produced = {o for op in sg.operators for o in op.outputs if o >= 0}
    known = {t.index for t in sg.tensors if t.is_constant or t.index not in produced}
    pending = list(sg.operators)
    while pending:
        ready = [op for op in pending if all(i < 0 or i in known for i in op.inputs)]
        if not ready:
            names = ", ".join(f"{op.name} (operator {op.index})" for op in pending[:3])
            raise ModelError(f"cannot resize: operators {names} read tensors no operator writes before them (a cycle)")
        for op in ready:
            _apply(sg, op, shapes)
            known.update(o for o in op.outputs if o >= 0)
        done = {id(op) for op in ready}
        pending = [op for op in pending if id(op) not in done]
    return {t.index: shapes[t.index] for t in sg.tensors if not t.is_constant}


def _apply(sg: Subgraph, op: Operator, shapes: dict[int, Shape]) -> None:
    outs = [o for o in op.outputs if o >= 0]
    if not outs:
        return
    if all(i < 0 or shapes[i] == tuple(sg.tensors[i].shape) for i in op.inputs):
        return  # unchanged inputs: the stored output shapes stand
    rule = RULES.get(_key(op))
    if rule is None:
        raise UnsupportedOpError(f"cannot resize: no shape rule for {op.name} (operator {op.index}, output "
                                 f"{sg.tensors[outs[0]].name!r})")
    ctx = _Ctx(sg, op, shapes)
    result = rule(ctx)
    for pos, o in enumerate(op.outputs):
        if o >= 0:
            shapes[o] = tuple(int(d) for d in result[pos])


# ------------------------------------------------------------------------------------------------
# resizing a Graph


def _requested(graph: Graph, shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]]) -> dict[int, Shape]:
    sg = graph.main
    names = [sg.tensors[i].name for i in sg.inputs]
    if isinstance(shapes, Mapping):
        unknown = [k for k in shapes if k not in names]
        if unknown:
            raise RequestError(f"model has no input named {unknown[0]!r} (inputs: {', '.join(names)})",
                               kind="bad_input_name")
        return {i: tuple(int(d) for d in shapes[sg.tensors[i].name]) for i in sg.inputs if sg.tensors[i].name in shapes}
    shapes = list(shapes)
    if len(shapes) != len(sg.inputs):
        raise RequestError(f"model takes {len(sg.inputs)} input(s), {len(shapes)} shape(s) given",
                           kind="bad_input_count")
    return {i: tuple(int(d) for d in s) for i, s in zip(sg.inputs, shapes)}


def check_input_shape(graph: Graph, index: int, shape: Shape) -> None:
    """RequestError unless `shape` differs from the stored one only in dims the shape_signature marks -1."""
    t = graph.main.tensors[index]
    sig = t.shape_signature or t.shape
    if len(shape) != len(t.shape):
        raise RequestError(f"input {t.name!r}: shape {list(shape)} has rank {len(shape)}, the model's is "
                           f"{list(t.shape)} (signature {list(sig)})", kind="bad_shape")
    for d, (new, old, s) in enumerate(zip(shape, t.shape, sig)):
        if new == old:
            continue
        if s != -1:
            raise RequestError(f"input {t.name!r}: dim {d} is fixed at {old} (shape signature {list(sig)}), "
                               f"cannot resize it to {new}", kind="bad_shape")
        if new < 1:
            raise RequestError(f"input {t.name!r}: dim {d} must be at least 1, got {new}", kind="bad_shape")


def with_input_shapes(graph: Graph, shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]]) -> Graph:
    """A new Graph whose main subgraph runs at the given input shapes (by input name, or a list in input order).

    Constants, operators and the other subgraphs are shared with `graph`; tensors whose shape
    changes are new Tensor values (shape_signature kept). Only dims marked -1 in an input's
    shape_signature may change (RequestError naming the input and dim otherwise).
    """
    requested = _requested(graph, shapes)
    for i, s in requested.items():
        check_input_shape(graph, i, s)
    sg = graph.main
    new_shapes = infer_shapes(sg, requested)
    tensors = [t if t.is_constant or new_shapes[t.index] == tuple(t.shape)
               else dataclasses.replace(t, shape=new_shapes[t.index]) for t in sg.tensors]
    main = Subgraph(index=sg.index, name=sg.name, tensors=tensors, operators=sg.operators,
                    inputs=sg.inputs, outputs=sg.outputs)
    return dataclasses.replace(graph, subgraphs=[main, *graph.subgraphs[1:]])
