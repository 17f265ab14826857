"""Aliasing: which tensors share memory with another (views, in-place outputs, concat sub-views).

The rules that hold for every kernel live here; what depends on a kernel (may it overwrite an
input, can it write a strided output) comes in through `kernel_info(op)`.

- view:    RESHAPE, SQUEEZE, EXPAND_DIMS, BITCAST outputs are the input's bytes, reinterpreted. The
           parent must be contiguous (never a strided concat sub-view).
- inplace: output 0 of an op whose kernel lists input position p in `inplace` takes input p's bytes
           when that input (and everything sharing its memory) is dead after this step, has the
           same byte size, and is not a graph input/output or persistent.
- concat:  an input of CONCATENATION becomes the slice parent[..., start:start+n, ...] along the
           concat axis, so its producer writes there and the concat copies nothing. A slice of an
           outer axis (all dims before the axis are 1) is contiguous; otherwise it is strided and
           its producer's kernel must declare `strided_output`. Inputs must share the output's
           dtype and quantization, and the concat must have no fused activation.

An op whose outputs are all aliased (view, or concat with every input placed) does no work at run
time; the runtime checks `Placement.alias_kind` per tensor to know.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Callable, Mapping, Sequence

from edgert.model.graph import Operator, Subgraph, Tensor
from edgert.plan.lifetimes import Lifetime

VIEW_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "BITCAST"})


@dataclass(frozen=True)
class Aliasing:
    """Which aliasing rules the planner applies (each can be switched off to compare)."""

    views: bool = True
    inplace: bool = True
    concat: bool = True

    @classmethod
    def none(cls) -> "Aliasing":
        return cls(False, False, False)

    def label(self) -> str:
        on = [name for name in ("views", "inplace", "concat") if getattr(self, name)]
        return "+".join(on) if on else "none"


@dataclass(frozen=True)
class Alias:
    """`tensor` lives inside `parent`'s memory, starting `byte_offset` bytes after the parent's first byte."""

    tensor: int
    parent: int
    kind: str  # "view" | "inplace" | "concat"
    byte_offset: int = 0
    axis: int | None = None  # concat only
    start: int | None = None  # concat only: element index along axis
    strided: bool = False  # concat only: the slice is not contiguous


def _info(kernel_info: Callable[[Operator], Any] | None, op: Operator) -> tuple[int, tuple[int, ...], bool]:
    if kernel_info is None:
        return 0, (), False
    info = kernel_info(op)
    if info is None:
        return 0, (), False
    return int(info.scratch_bytes or 0), tuple(info.inplace or ()), bool(info.strided_output)


def _same_quant(a: Tensor, b: Tensor) -> bool:
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None:
        return qa is None and qb is None or a.dtype.kind == "f"
    return tuple(qa.scales) == tuple(qb.scales) and tuple(qa.zero_points) == tuple(qb.zero_points)


class _Groups:
    """Tensors sharing memory, as a forest of aliases (child -> parent)."""

    def __init__(self) -> None:
        self.alias: dict[int, Alias] = {}
        self.children: dict[int, list[int]] = {}

    def add(self, a: Alias) -> None:
        self.alias[a.tensor] = a
        self.children.setdefault(a.parent, []).append(a.tensor)

    def root(self, t: int) -> int:
        while t in self.alias:
            t = self.alias[t].parent
        return t

    def members(self, t: int) -> list[int]:
        stack, out = [self.root(t)], []
        while stack:
            x = stack.pop()
            out.append(x)
            stack.extend(self.children.get(x, ()))
        return out

    def contiguous(self, t: int) -> bool:
        """True unless t or one of its ancestors is a strided concat slice."""
        while t in self.alias:
            if self.alias[t].strided:
                return False
            t = self.alias[t].parent
        return True


def find_aliases(sg: Subgraph, order: Sequence[int], life: Mapping[int, Lifetime], *,
                 aliasing: Aliasing, persistent: set[int],
                 kernel_info: Callable[[Operator], Any] | None = None,
                 concat_inputs: set[int] | None = None) -> dict[int, Alias]:
    """Alias per aliased tensor (tensor index -> Alias). Tensors not in `life` are never aliased.

    `concat_inputs` limits concat placement to those input tensors (None: every eligible one).
    """
    groups = _Groups()
    ends = set(sg.inputs) | set(sg.outputs)
    step_of = {k: s for s, k in enumerate(order)}
    producer: dict[int, int] = {}
    for k in order:
        for o in sg.operators[k].outputs:
            if o >= 0:
                producer[o] = k

    def plannable(t: int) -> bool:
        return t >= 0 and t in life and t not in persistent

    if aliasing.concat:
        for k in reversed(order):  # outer concats first, so nested ones can hang below them
            op = sg.operators[k]
            if op.opcode == "CONCATENATION":
                _place_concat(sg, op, step_of[k], groups, plannable, ends, producer, step_of, kernel_info,
                              concat_inputs)

    for step, k in enumerate(order):
        op = sg.operators[k]
        if not op.outputs or not op.inputs:
            continue
        y = op.outputs[0]
        if not plannable(y) or y in groups.alias or y in sg.inputs:
            continue
        if aliasing.views and op.opcode in VIEW_OPS:
            x = op.inputs[0]
            if (plannable(x) and sg.tensors[x].nbytes == sg.tensors[y].nbytes and groups.contiguous(x)
                    and groups.root(x) != y):
                groups.add(Alias(y, x, "view"))
            continue
        if aliasing.inplace and y not in ends and not groups.children.get(y):
            _, positions, _ = _info(kernel_info, op)
            for p in positions:
                if p < len(op.inputs) and _can_overwrite(sg, op.inputs[p], y, step, groups, life, plannable, ends, op):
                    groups.add(Alias(y, op.inputs[p], "inplace"))
                    break
    return groups.alias


def _can_overwrite(sg: Subgraph, x: int, y: int, step: int, groups: _Groups, life: Mapping[int, Lifetime],
                   plannable, ends: set[int], op: Operator) -> bool:
    if not plannable(x) or x in ends or sg.tensors[x].nbytes != sg.tensors[y].nbytes or not groups.contiguous(x):
        return False
    for m in groups.members(x):
        if m in ends or not plannable(m):
            return False
        # Every tensor sharing x's memory must already exist (a concat output is not assembled
        # before its last input is written) and be dead after this step.
        if life[m].first > step or life[m].last > step:
            return False
    return True


def _place_concat(sg: Subgraph, op: Operator, step: int, groups: _Groups, plannable, ends: set[int],
                  producer: dict[int, int], step_of: dict[int, int], kernel_info,
                  allowed: set[int] | None = None) -> None:
    opts = op.options
    if opts is not None and getattr(opts, "fused_activation_function", "NONE") not in ("NONE", None):
        return
    out = op.outputs[0] if op.outputs else -1
    if not plannable(out):
        return
    o = sg.tensors[out]
    rank = len(o.shape)
    axis = getattr(opts, "axis", 0) if opts is not None else 0
    if axis < 0:
        axis += rank
    if not 0 <= axis < rank:
        return
    strided = prod(o.shape[:axis]) > 1 or not groups.contiguous(out)
    inner = prod(o.shape[axis + 1:]) * o.dtype.itemsize
    start = 0
    seen: dict[int, int] = {}
    for t in op.inputs:
        seen[t] = seen.get(t, 0) + 1
    for t in op.inputs:
        if t < 0:
            continue
        x = sg.tensors[t]
        n = x.shape[axis] if len(x.shape) == rank else None
        here = start
        if n is None:
            return  # malformed concat; leave it to the kernel
        start += n
        if (seen[t] > 1 or (allowed is not None and t not in allowed) or not plannable(t) or t in ends or t in groups.alias or x.dtype != o.dtype
                or not _same_quant(x, o) or t not in producer or step_of[producer[t]] >= step):
            continue
        if tuple(d for i, d in enumerate(x.shape) if i != axis) != tuple(d for i, d in enumerate(o.shape) if i != axis):
            continue
        if strided:
            p = sg.operators[producer[t]]
            if p.opcode in VIEW_OPS or p.opcode == "CONCATENATION" or not _info(kernel_info, p)[2]:
                continue
            if groups.children.get(t):
                continue
        groups.add(Alias(t, out, "concat", byte_offset=here * inner, axis=axis, start=here, strided=strided))
