"""Data-movement kernels: pad, reshape copies, concat, slices, transpose, gather, tile, split/pack, depth<->space, cast.

Almost every op here moves elements without changing them, so they share one engine: at bind
time the op is turned into a small table of *jobs* (copy a strided box from the input, copy a box
within the output, or fill a box with a constant), expressed in element offsets and strides over
flat 1-D views of the input and output memory. Elements are reinterpreted as unsigned integers of
their width, so one compiled kernel per element width serves every dtype (float32, int32, int8,
bool, float16, ...), and the same jobs handle strided (non-contiguous) outputs. Box dimensions are
reordered and merged at bind time so the innermost loop runs over the longest contiguous stretch.
GATHER, GATHER_ND and CAST read data-dependent positions or convert values, so they have their
own kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Sequence

import numba
import numpy as np
from numba import njit

from edgert.errors import UnsupportedOpError
from edgert.kernels.registry import KernelEntry, KernelRegistry, OpContext, Step

MAX_RANK = 8  # box rank after merging; TILE of a 4-D tensor needs 8
_ROW = 3 + 3 * MAX_RANK  # job row: kind, src_off, dst_off, shape[8], src_strides[8], dst_strides[8]
COPY, SELF_COPY, FILL = 0, 1, 2
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
# dtypes whose elements these kernels may move bit for bit
_MOVABLE = {np.dtype(t) for t in (np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16,
                                  np.int32, np.uint32, np.int64, np.uint64, np.bool_, np.complex64)}


# ----------------------------------------------------------------------------------------------
# numba kernels


@njit(nogil=True, cache=True, fastmath=False)
def _transpose_tile(src, sbase, s_col, dst, dbase, d_row, rows, cols):
    """dst[r, c] = src[c, r] (src rows contiguous, dst rows contiguous) in 16x16 tiles for cache reuse."""
    for r0 in range(0, rows, 16):
        r1 = min(r0 + 16, rows)
        for c0 in range(0, cols, 16):
            c1 = min(c0 + 16, cols)
            for r in range(r0, r1):
                b = dbase + r * d_row
                a = sbase + r
                for c in range(c0, c1):
                    dst[np.uintp(b + c)] = src[np.uintp(a + c * s_col)]


@njit(nogil=True, cache=True, fastmath=False)
def _box(src, sbase, dst, dbase, n, ss, ds):
    """dst[box] = src[box] over an 8-D box; the innermost dimension is the tight loop."""
    n7, s7, d7 = n[7], ss[7], ds[7]
    for i0 in range(n[0]):
        a0 = sbase + i0 * ss[0]
        b0 = dbase + i0 * ds[0]
        for i1 in range(n[1]):
            a1 = a0 + i1 * ss[1]
            b1 = b0 + i1 * ds[1]
            for i2 in range(n[2]):
                a2 = a1 + i2 * ss[2]
                b2 = b1 + i2 * ds[2]
                for i3 in range(n[3]):
                    a3 = a2 + i3 * ss[3]
                    b3 = b2 + i3 * ds[3]
                    for i4 in range(n[4]):
                        a4 = a3 + i4 * ss[4]
                        b4 = b3 + i4 * ds[4]
                        for i5 in range(n[5]):
                            a5 = a4 + i5 * ss[5]
                            b5 = b4 + i5 * ds[5]
                            if d7 == 1 and s7 != 1 and ss[6] == 1 and n[6] > 1:
                                _transpose_tile(src, a5, s7, dst, b5, ds[6], n[6], n7)
                                continue
                            for i6 in range(n[6]):
                                a = a5 + i6 * ss[6]
                                b = b5 + i6 * ds[6]
                                # unsigned indices: numba then skips the negative-index fix-up,
                                # which otherwise blocks vectorizing (10x on long rows)
                                if s7 == 1 and d7 == 1:
                                    for k in range(n7):
                                        dst[np.uintp(b + k)] = src[np.uintp(a + k)]
                                else:
                                    for k in range(n7):
                                        dst[np.uintp(b + k * d7)] = src[np.uintp(a + k * s7)]


@njit(nogil=True, cache=True, fastmath=False)
def _fill_box(dst, dbase, n, ds, value):
    n7, d7 = n[7], ds[7]
    for i0 in range(n[0]):
        b0 = dbase + i0 * ds[0]
        for i1 in range(n[1]):
            b1 = b0 + i1 * ds[1]
            for i2 in range(n[2]):
                b2 = b1 + i2 * ds[2]
                for i3 in range(n[3]):
                    b3 = b2 + i3 * ds[3]
                    for i4 in range(n[4]):
                        b4 = b3 + i4 * ds[4]
                        for i5 in range(n[5]):
                            b5 = b4 + i5 * ds[5]
                            for i6 in range(n[6]):
                                b = b5 + i6 * ds[6]
                                if d7 == 1:
                                    for k in range(n7):
                                        dst[np.uintp(b + k)] = value
                                else:
                                    for k in range(n7):
                                        dst[np.uintp(b + k * d7)] = value


@njit(nogil=True, cache=True, fastmath=False)
def run_jobs(src, dst, jobs, fill):
    """Runs a bind-time job table: each row copies (from src or from dst itself) or fills one box of dst."""
    for j in range(jobs.shape[0]):
        row = jobs[j]
        kind = row[0]
        n = row[3:3 + 8]
        ss = row[11:11 + 8]
        ds = row[19:19 + 8]
        if kind == 0:
            _box(src, row[1], dst, row[2], n, ss, ds)
        elif kind == 1:
            _box(dst, row[1], dst, row[2], n, ss, ds)
        else:
            _fill_box(dst, row[2], n, ds, fill[0])


@njit(nogil=True, cache=True, fastmath=False)
def _gather(params, indices, out):
    """params (batch, outer, axis, inner), indices (batch, n), out (batch, outer, n, inner)."""
    axis_size = params.shape[2]
    for b in range(params.shape[0]):
        for o in range(params.shape[1]):
            for i in range(indices.shape[1]):
                k = indices[b, i]
                if k < 0 or k >= axis_size:
                    raise IndexError("GATHER index out of range")
                for c in range(params.shape[3]):
                    out[b, o, i, c] = params[b, o, k, c]


@njit(nogil=True, cache=True, fastmath=False)
def _gather_nd(params, dims, strides, indices, out):
    """params (rows, inner) addressed by the first K dims (sizes `dims`, row strides `strides`)."""
    for i in range(indices.shape[0]):
        row = 0
        for k in range(indices.shape[1]):
            v = indices[i, k]
            if v < 0 or v >= dims[k]:
                raise IndexError("GATHER_ND index out of range")
            row += v * strides[k]
        for c in range(params.shape[1]):
            out[i, c] = params[row, c]


@njit(nogil=True, cache=True, fastmath=False)
def _cast(src, dst):
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(nogil=True, cache=True, fastmath=False)
def _cast_to_bool(src, dst):
    for i in range(src.shape[0]):
        dst[i] = src[i] != 0


# ----------------------------------------------------------------------------------------------
# layouts: where a tensor's elements are, in element units over a flat view


@dataclass(frozen=True)
class Layout:
    """A strided box over a flat 1-D array: element (i0, i1, ...) is at off + sum(i_k * strides[k])."""

    off: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def split(self, axis: int, parts: Sequence[int]) -> "Layout":
        """Split one axis into several (C order), e.g. H*b -> (H, b)."""
        s = self.strides[axis]
        new_strides, acc = [], s
        for p in reversed(parts):
            new_strides.append(acc)
            acc *= p
        return Layout(self.off, self.shape[:axis] + tuple(parts) + self.shape[axis + 1:],
                      self.strides[:axis] + tuple(reversed(new_strides)) + self.strides[axis + 1:])

    def permute(self, perm: Sequence[int]) -> "Layout":
        return Layout(self.off, tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm))

    def slice(self, axis: int, start: int, count: int, step: int = 1) -> "Layout":
        return Layout(self.off + start * self.strides[axis],
                      self.shape[:axis] + (count,) + self.shape[axis + 1:],
                      self.strides[:axis] + (self.strides[axis] * step,) + self.strides[axis + 1:])

    def insert(self, axis: int, size: int = 1) -> "Layout":
        """A new axis of stride 0 (size 1, or a broadcast)."""
        return Layout(self.off, self.shape[:axis] + (size,) + self.shape[axis:],
                      self.strides[:axis] + (0,) + self.strides[axis:])

    def drop(self, axis: int) -> "Layout":
        return Layout(self.off, self.shape[:axis] + self.shape[axis + 1:], self.strides[:axis] + self.strides[axis + 1:])

    def index(self, axis: int, i: int) -> "Layout":
        return self.slice(axis, i, 1).drop(axis)


class _Iface:
    """Hands numpy an __array_interface__ so it builds a flat view over existing memory."""

    def __init__(self, interface: dict, keep: np.ndarray):
        self.__array_interface__ = interface
        self._keep = keep


def flat_of(a: np.ndarray) -> tuple[np.ndarray, Layout]:
    """A 1-D unsigned-int view spanning all of `a`'s memory (read-only if `a` is) and `a`'s layout in it."""
    it = a.dtype.itemsize
    if it not in _UINT:
        raise UnsupportedOpError(f"element size {it} bytes cannot be moved")
    ptr, readonly = a.__array_interface__["data"]
    lo = hi = 0
    for n, s in zip(a.shape, a.strides):
        if s % it:
            raise UnsupportedOpError(f"stride {s} is not a multiple of the element size {it}")
        if n > 1:
            if s < 0:
                lo += (n - 1) * s
            else:
                hi += (n - 1) * s
    span = (hi - lo) // it + 1 if a.size else 0
    iface = {"version": 3, "shape": (span,), "typestr": np.dtype(_UINT[it]).str,
             "data": (ptr + lo if span else ptr, bool(readonly)), "strides": None}
    flat = np.asarray(_Iface(iface, a))
    return flat, Layout(-lo // it, tuple(a.shape), tuple(s // it for s in a.strides))


def _merge(shape: Sequence[int], ss: Sequence[int], ds: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """Drop size-1 dims, order by destination stride (largest outer), merge dims contiguous in both."""
    dims = [(n, s, d) for n, s, d in zip(shape, ss, ds) if n != 1]
    dims.sort(key=lambda t: (abs(t[2]), abs(t[1])), reverse=True)
    out: list[tuple[int, int, int]] = []
    for n, s, d in dims:
        if out:
            pn, ps, pd = out[-1]
            if ps == n * s and pd == n * d:
                out[-1] = (pn * n, s, d)
                continue
        out.append((n, s, d))
    return [t[0] for t in out], [t[1] for t in out], [t[2] for t in out]


def job(kind: int, src: Layout | None, dst: Layout) -> np.ndarray:
    """One job-table row (int64) copying src -> dst (same shape) or filling dst."""
    if src is not None and tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"job shapes differ: {src.shape} vs {dst.shape}")
    src_strides = src.strides if src is not None else (0,) * len(dst.shape)
    row = np.zeros(_ROW, np.int64)
    row[0] = kind
    row[1] = src.off if src is not None else 0
    row[2] = dst.off
    if any(n == 0 for n in dst.shape):
        row[3:11] = 0  # an empty box: the outermost loop runs zero times
        return row
    n, s, d = _merge(dst.shape, src_strides, dst.strides)
    if len(n) > MAX_RANK:
        raise UnsupportedOpError(f"data movement needs a {len(n)}-D box; at most {MAX_RANK} supported")
    pad = MAX_RANK - len(n)
    row[3:11] = [1] * pad + n
    row[11:19] = [0] * pad + s
    row[19:27] = [0] * pad + d
    return row


def jobs_table(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(rows)) if rows else np.zeros((0, _ROW), np.int64)


def _fill_array(value: np.ndarray | float | int, dtype: np.dtype) -> np.ndarray:
    """The fill constant as a 1-element unsigned-int array of the element width (bit pattern kept)."""
    v = np.asarray(value, dtype=dtype).reshape(1).copy()
    return v.view(_UINT[dtype.itemsize])


@dataclass(frozen=True)
class MoveCall:
    """One run_jobs call: flat src, flat dst, job table, fill constant."""

    src: np.ndarray
    dst: np.ndarray
    jobs: np.ndarray
    fill: np.ndarray


def _run_calls(calls: tuple) -> None:
    for src, dst, jobs, fill in calls:
        run_jobs(src, dst, jobs, fill)


_run_calls.as_steps = lambda calls: [(run_jobs, call) for call in calls]  # one step per call (executor.py)


def step_of(calls: Sequence[MoveCall]) -> Step:
    """A Step running the calls: the numba kernel itself when there is one call."""
    packed = tuple((c.src, c.dst, c.jobs, c.fill) for c in calls)
    if len(packed) == 1:
        return run_jobs, packed[0]
    return _run_calls, (packed,)


def copy_call(src: np.ndarray, src_layout_fn: Callable[[Layout], Layout], dst: np.ndarray,
              dst_layout_fn: Callable[[Layout], Layout] = lambda l: l) -> MoveCall:
    """Copy a (transformed) view of src into a (transformed) view of dst."""
    sflat, sl = flat_of(src)
    dflat, dl = flat_of(dst)
    rows = [job(COPY, src_layout_fn(sl), dst_layout_fn(dl))]
    return MoveCall(sflat, dflat, jobs_table(rows), np.zeros(1, dflat.dtype))


# ----------------------------------------------------------------------------------------------
# supports helpers


def _const_ints(t) -> list[int] | None:
    if t is None or t.data is None:
        return None
    return [int(v) for v in np.asarray(t.data).reshape(-1)]


def _same_quant(a, b) -> bool:
    qa, qb = a.quantization, b.quantization
    if qa is None or qb is None:
        return (qa is None) == (qb is None) or a.dtype.kind == "f"
    return qa.scales == qb.scales and qa.zero_points == qb.zero_points


def _check_move(ctx: OpContext, data_inputs: Sequence[int] = (0,)) -> str | None:
    """Common checks for a pure data-movement op: movable dtypes, same dtype and quantization."""
    out = ctx.outputs[0]
    if out.dtype not in _MOVABLE:
        return f"{out.dtype} not supported"
    if any(d < 0 for t in ctx.outputs for d in t.shape):
        return "dynamic output shape not supported"
    for i in data_inputs:
        t = ctx.inputs[i]
        if t is None:
            return f"input {i} missing"
        if t.dtype != out.dtype:
            return f"input dtype {t.dtype} != output dtype {out.dtype}"
        if not _same_quant(t, out):
            return "input and output quantization differ (requantizing not supported)"
    return None


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ----------------------------------------------------------------------------------------------
# RESHAPE / SQUEEZE / EXPAND_DIMS (when not aliased by the planner)


def _supports_reshape(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    if ctx.inputs[0].size != ctx.outputs[0].size:
        return f"element counts differ ({ctx.inputs[0].size} vs {ctx.outputs[0].size})"
    return None


def _bind_reshape(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    src, dst = ins[0], outs[0]
    view = src.view()
    try:
        view.shape = dst.shape  # raises instead of copying when src cannot be seen in dst's shape
        return step_of([copy_call(view, lambda l: l, dst)])
    except AttributeError:
        pass
    view = dst.view()
    try:
        view.shape = src.shape
    except AttributeError:
        raise UnsupportedOpError(f"{ctx.op.name}: neither input {src.shape} nor output {dst.shape} can be "
                                 "viewed in the other's shape (both strided)") from None
    return step_of([copy_call(src, lambda l: l, view)])


# ----------------------------------------------------------------------------------------------
# PAD / PADV2 / MIRROR_PAD


def _paddings(ctx: OpContext) -> list[tuple[int, int]] | None:
    vals = _const_ints(ctx.inputs[1])
    if vals is None:
        return None
    return [(vals[2 * i], vals[2 * i + 1]) for i in range(len(vals) // 2)]


def _supports_pad(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    pads = _paddings(ctx)
    if pads is None:
        return "non-constant paddings not supported"
    x, y = ctx.inputs[0], ctx.outputs[0]
    if len(pads) != len(x.shape) or any(a < 0 or b < 0 for a, b in pads):
        return f"paddings {pads} do not fit input rank {len(x.shape)}"
    if tuple(n + a + b for n, (a, b) in zip(x.shape, pads)) != tuple(y.shape):
        return "output shape does not match paddings"
    if ctx.op.opcode == "PADV2" and len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
        cv = ctx.inputs[2]
        if cv.data is None:
            return "non-constant constant_values not supported"
        if cv.dtype != y.dtype:
            return f"constant_values dtype {cv.dtype} != {y.dtype}"
    if ctx.op.opcode == "MIRROR_PAD":
        mode = getattr(ctx.op.options, "mode", "REFLECT")
        limit = 1 if mode == "REFLECT" else 0
        if any(a > n - limit or b > n - limit for n, (a, b) in zip(x.shape, pads)):
            return f"{mode} paddings {pads} larger than the input {x.shape} allows"
    return None


def _pad_value(ctx: OpContext) -> np.ndarray | float | int:
    y = ctx.outputs[0]
    if ctx.op.opcode == "PADV2" and len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
        return np.asarray(ctx.inputs[2].data).reshape(-1)[0]
    if y.quantization is not None and y.dtype.kind in "iu":
        return y.quantization.zero_point
    return 0


def _pad_interior(src: np.ndarray, dst: np.ndarray, pads: list[tuple[int, int]]) -> tuple:
    """(flat src, flat dst, dst's layout, the interior's layout, [the job copying src into the interior])."""
    sflat, sl = flat_of(src)
    dflat, dl = flat_of(dst)
    interior = dl
    for ax, (a, _b) in enumerate(pads):
        interior = interior.slice(ax, a, src.shape[ax])
    return sflat, dflat, dl, interior, [job(COPY, sl, interior)]


def _bind_pad(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    pads = _paddings(ctx)
    src, dst = ins[0], outs[0]
    sflat, dflat, dl, _, rows = _pad_interior(src, dst, pads)
    # The border as 2*rank disjoint boxes: along axis d, the pad slabs, with axes before d limited
    # to the interior (their pads are other boxes) and axes after d at full extent.
    box = dl
    for ax, (a, b) in enumerate(pads):
        n = src.shape[ax]
        if a:
            rows.append(job(FILL, None, box.slice(ax, 0, a)))
        if b:
            rows.append(job(FILL, None, box.slice(ax, a + n, b)))
        box = box.slice(ax, a, n)
    fill = _fill_array(_pad_value(ctx), dst.dtype)
    return step_of([MoveCall(sflat, dflat, jobs_table(rows), fill)])


def _bind_mirror_pad(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    pads = _paddings(ctx)
    symmetric = getattr(ctx.op.options, "mode", "REFLECT") == "SYMMETRIC"
    src, dst = ins[0], outs[0]
    sflat, dflat, _, interior, rows = _pad_interior(src, dst, pads)
    # Axis by axis, mirror the already complete part (axes before d at full extent, axes after d
    # interior only) into the pads of axis d: a copy within the output with stride -1.
    done = interior
    for ax, (a, b) in enumerate(pads):
        n = src.shape[ax]
        full = Layout(done.off - a * done.strides[ax], done.shape[:ax] + (dst.shape[ax],) + done.shape[ax + 1:],
                      done.strides)
        if a:  # out[j] = out[2a - j] (REFLECT) or out[2a - 1 - j] (SYMMETRIC)
            rows.append(job(SELF_COPY, full.slice(ax, 2 * a - (1 if symmetric else 0), a, -1), full.slice(ax, 0, a)))
        if b:  # out[a + n + k] = out[a + n - 2 - k] (REFLECT) or out[a + n - 1 - k] (SYMMETRIC)
            rows.append(job(SELF_COPY, full.slice(ax, a + n - (1 if symmetric else 2), b, -1),
                            full.slice(ax, a + n, b)))
        done = full
    return step_of([MoveCall(sflat, dflat, jobs_table(rows), np.zeros(1, dflat.dtype))])


# ----------------------------------------------------------------------------------------------
# CONCATENATION / PACK / UNPACK / SPLIT / SPLIT_V


def _supports_concat(ctx: OpContext) -> str | None:
    reason = _check_move(ctx, tuple(range(len(ctx.inputs))))
    if reason:
        return reason
    act = getattr(ctx.op.options, "fused_activation_function", "NONE")
    if act not in ("NONE", None):
        return f"fused activation {act} not supported"
    y = ctx.outputs[0]
    axis = _axis(getattr(ctx.op.options, "axis", 0), len(y.shape))
    if not 0 <= axis < len(y.shape):
        return f"axis out of range for rank {len(y.shape)}"
    if sum(t.shape[axis] for t in ctx.inputs) != y.shape[axis]:
        return "input sizes along the axis do not add up to the output"
    return None


def _parts(sizes: Sequence[int]) -> list[tuple[int, int, int]]:
    """(k, start, size) of each non-empty part k when parts of `sizes` lie end to end along an axis."""
    starts = accumulate(sizes[:-1], initial=0)
    return [(k, s, n) for k, (s, n) in enumerate(zip(starts, sizes)) if n]


def _bind_concat(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    dst = outs[0]
    axis = _axis(ctx.op.options.axis, dst.ndim)
    return step_of([copy_call(ins[k], lambda l: l, dst, lambda l, s=s, n=n: l.slice(axis, s, n))
                    for k, s, n in _parts([x.shape[axis] for x in ins])])


def _supports_pack(ctx: OpContext) -> str | None:
    reason = _check_move(ctx, tuple(range(len(ctx.inputs))))
    if reason:
        return reason
    y = ctx.outputs[0]
    axis = _axis(ctx.op.options.axis, len(y.shape))
    if not 0 <= axis < len(y.shape) or y.shape[axis] != len(ctx.inputs):
        return "output shape does not match the packed inputs"
    return None


def _bind_pack(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    dst = outs[0]
    axis = _axis(ctx.op.options.axis, dst.ndim)
    return step_of([copy_call(x, lambda l: l, dst, lambda l, k=k: l.index(axis, k)) for k, x in enumerate(ins)])


def _check_outputs_move(x, outputs) -> str | None:
    """Checks for an op moving one input into several outputs: movable dtype, outputs like the input."""
    if x.dtype not in _MOVABLE:
        return f"{x.dtype} not supported"
    for out in outputs:
        if out.dtype != x.dtype or not _same_quant(x, out):
            return "outputs differ from the input in dtype or quantization"
        if any(d < 0 for d in out.shape):
            return "dynamic output shape not supported"
    return None


def _supports_unpack(ctx: OpContext) -> str | None:
    x = ctx.inputs[0]
    reason = _check_outputs_move(x, ctx.outputs)
    if reason:
        return reason
    axis = _axis(ctx.op.options.axis, len(x.shape))
    if not 0 <= axis < len(x.shape) or x.shape[axis] != len(ctx.outputs):
        return "output count does not match the unpacked axis"
    return None


def _bind_unpack(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    src = ins[0]
    axis = _axis(ctx.op.options.axis, src.ndim)
    return step_of([copy_call(src, lambda l, k=k: l.index(axis, k), y) for k, y in enumerate(outs)])


def _split_axis(ctx: OpContext) -> tuple[int, int] | None:
    """(axis, data input position) of SPLIT (axis, data) / SPLIT_V (data, sizes, axis)."""
    if ctx.op.opcode == "SPLIT":
        axis_t, data_pos = ctx.inputs[0], 1
    else:
        axis_t, data_pos = ctx.inputs[2], 0
    vals = _const_ints(axis_t)
    if vals is None or len(vals) != 1:
        return None
    return _axis(vals[0], len(ctx.inputs[data_pos].shape)), data_pos


def _supports_split(ctx: OpContext) -> str | None:
    found = _split_axis(ctx)
    if found is None:
        return "non-constant split axis not supported"
    axis, pos = found
    x = ctx.inputs[pos]
    reason = _check_outputs_move(x, ctx.outputs)
    if reason:
        return reason
    if not 0 <= axis < len(x.shape) or sum(o.shape[axis] for o in ctx.outputs) != x.shape[axis]:
        return "output sizes along the axis do not add up to the input"
    return None


def _bind_split(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    axis, pos = _split_axis(ctx)
    return step_of([copy_call(ins[pos], lambda l, s=s, n=n: l.slice(axis, s, n), outs[k])
                    for k, s, n in _parts([y.shape[axis] for y in outs])])


# ----------------------------------------------------------------------------------------------
# TRANSPOSE / SLICE / STRIDED_SLICE / TILE / BROADCAST_TO / DEPTH_TO_SPACE / SPACE_TO_DEPTH


def _supports_transpose(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    perm = _const_ints(ctx.inputs[1])
    if perm is None:
        return "non-constant perm not supported"
    rank = len(ctx.inputs[0].shape)
    perm = [_axis(p, rank) for p in perm]
    if sorted(perm) != list(range(rank)) or rank > 6:
        return f"perm {perm} invalid for rank {rank} (at most 6-D)"
    if tuple(ctx.inputs[0].shape[p] for p in perm) != tuple(ctx.outputs[0].shape):
        return "output shape does not match perm"
    return None


def _bind_transpose(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    rank = ins[0].ndim
    perm = [_axis(p, rank) for p in _const_ints(ctx.inputs[1])]
    return step_of([copy_call(ins[0], lambda l: l.permute(perm), outs[0])])


def _slice_params(ctx: OpContext) -> tuple[list[int], list[int]] | None:
    begin, size = _const_ints(ctx.inputs[1]), _const_ints(ctx.inputs[2])
    if begin is None or size is None:
        return None
    shape = ctx.inputs[0].shape
    size = [shape[i] - begin[i] if s == -1 else s for i, s in enumerate(size)]
    return begin, size


def _supports_slice(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    params = _slice_params(ctx)
    if params is None:
        return "non-constant begin/size not supported"
    begin, size = params
    shape = ctx.inputs[0].shape
    if len(begin) != len(shape) or any(b < 0 or s < 0 or b + s > n for b, s, n in zip(begin, size, shape)):
        return f"slice begin {begin} size {size} outside input {shape}"
    if tuple(size) != tuple(ctx.outputs[0].shape):
        return "output shape does not match size"
    return None


def _bind_slice(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    begin, size = _slice_params(ctx)

    def view(l: Layout) -> Layout:
        for ax, (b, s) in enumerate(zip(begin, size)):
            l = l.slice(ax, b, s)
        return l

    return step_of([copy_call(ins[0], view, outs[0])])


@dataclass(frozen=True)
class _SliceDim:
    new_axis: bool
    shrink: bool
    start: int
    count: int
    stride: int


def strided_slice_dims(input_shape: Sequence[int], begin: Sequence[int], end: Sequence[int],
                       strides: Sequence[int], begin_mask: int, end_mask: int, ellipsis_mask: int,
                       new_axis_mask: int, shrink_axis_mask: int, offset: bool) -> list[_SliceDim]:
    """TFLite's STRIDED_SLICE index logic (strided_slice.cc BuildStridedSliceParams + strided_slice_logic.h)."""
    rank = len(input_shape)
    begin_count = len(begin)
    num_add_axis = sum(1 for i in range(begin_count)
                       if not (ellipsis_mask >> i) & 1 and (new_axis_mask >> i) & 1)
    eff_dims = rank + num_add_axis
    eff_ellipsis = eff_new_axis = 0
    ellipsis_start, expanded = eff_dims, 0
    i = 0
    while i < eff_dims:
        if (ellipsis_mask >> i) & 1:
            ellipsis_start = i
            ellipsis_end = max(i + 1, min(i + 1 + num_add_axis + rank - begin_count, eff_dims))
            expanded = ellipsis_end - ellipsis_start - 1
            while i < ellipsis_end:
                eff_ellipsis |= 1 << i
                i += 1
            continue
        if (new_axis_mask >> (i - expanded)) & 1:
            eff_new_axis |= 1 << i
        i += 1
    starts, stops, strd, shape = [0] * eff_dims, [0] * eff_dims, [1] * eff_dims, [0] * eff_dims
    bmask = emask = smask = 0
    added_ellipsis = added_axes = 0
    for i in range(eff_dims):
        if (eff_ellipsis >> i) & 1:
            added_ellipsis = max(0, i - ellipsis_start)
            bmask |= 1 << i
            emask |= 1 << i
            shape[i] = input_shape[i - added_axes]
        elif (eff_new_axis >> i) & 1:
            starts[i], stops[i] = 0, 1
            shape[i] = 1
            added_axes += 1
        elif i >= begin_count + expanded:
            bmask |= 1 << i
            emask |= 1 << i
            shape[i] = input_shape[i - added_axes]
        else:
            o = i - added_ellipsis
            starts[i], stops[i], strd[i] = begin[o], end[o], strides[o]
            if (begin_mask >> o) & 1:
                bmask |= 1 << i
            if (end_mask >> o) & 1:
                emask |= 1 << i
            if (shrink_axis_mask >> o) & 1:
                smask |= 1 << i
            shape[i] = input_shape[i - added_axes]
    dims = []
    for i in range(eff_dims):
        size, stride = shape[i], strd[i]
        if stride == 0:
            raise UnsupportedOpError("STRIDED_SLICE stride value has to be non-zero")
        start = starts[i] + size if starts[i] < 0 else starts[i]
        start = min(max(start, 0), size) if stride > 0 else min(max(start, -1), size - 1)
        if (bmask >> i) & 1:
            start = 0 if stride > 0 else size - 1
        shrink = bool((smask >> i) & 1)
        if shrink:
            stop = start if start >= size else start + 1
        else:
            stop = stops[i] + (start if offset else 0)
            stop = stop + size if stop < 0 else stop
            stop = min(max(stop, 0), size) if stride > 0 else min(max(stop, -1), size - 1)
            if (emask >> i) & 1:
                stop = size if stride > 0 else -1
        count = max(0, math.ceil((stop - start) / stride))
        if shrink:
            # One element whenever start is inside the axis, whatever the stride's sign. (LiteRT's
            # reference loop writes nothing for a shrunk axis with a negative stride and leaves the
            # output uninitialised; TensorFlow returns the element, and so do we.)
            count = 1 if 0 <= start < size else 0
        dims.append(_SliceDim((eff_new_axis >> i) & 1 == 1, shrink, start, count, stride))
    return dims


def _strided_slice_dims(ctx: OpContext) -> list[_SliceDim] | None:
    b, e, s = (_const_ints(ctx.inputs[k]) for k in (1, 2, 3))
    if b is None or e is None or s is None:
        return None
    o = ctx.op.options
    return strided_slice_dims(ctx.inputs[0].shape, b, e, s, o.begin_mask, o.end_mask, o.ellipsis_mask,
                              o.new_axis_mask, o.shrink_axis_mask, bool(o.offset))


def _supports_strided_slice(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    o = ctx.op.options
    if o.offset and (o.begin_mask or o.end_mask or o.ellipsis_mask or o.new_axis_mask):
        return "offset=True with begin/end/ellipsis/new-axis masks not supported (LiteRT sizes it inconsistently)"
    try:
        dims = _strided_slice_dims(ctx)
    except UnsupportedOpError as exc:
        return str(exc)
    if dims is None:
        return "non-constant begin/end/strides not supported"
    if any(d.shrink and d.count == 0 for d in dims):
        return "a shrunk axis index is out of range"
    shape = tuple(d.count for d in dims if not d.shrink)
    if shape != tuple(ctx.outputs[0].shape):
        return f"computed output shape {shape} != {tuple(ctx.outputs[0].shape)}"
    return None


def _bind_strided_slice(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    dims = _strided_slice_dims(ctx)
    if any(d.count == 0 for d in dims):  # nothing to copy (a shrunk axis out of range has no element to drop)
        flat, _ = flat_of(outs[0])
        return step_of([MoveCall(flat, flat, jobs_table([]), np.zeros(1, flat.dtype))])

    def view(l: Layout) -> Layout:
        ax = 0
        for d in dims:
            if d.new_axis:
                l = l.insert(ax)
            else:
                l = l.slice(ax, d.start, d.count, d.stride)
            if d.shrink:
                l = l.drop(ax)
            else:
                ax += 1
        return l

    return step_of([copy_call(ins[0], view, outs[0])])


def _supports_tile(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    m = _const_ints(ctx.inputs[1])
    if m is None:
        return "non-constant multiples not supported"
    x = ctx.inputs[0]
    if len(m) != len(x.shape) or tuple(n * k for n, k in zip(x.shape, m)) != tuple(ctx.outputs[0].shape):
        return "output shape does not match multiples"
    return None


def _bind_tile(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    m = _const_ints(ctx.inputs[1])
    src, dst = ins[0], outs[0]

    def src_view(l: Layout) -> Layout:
        for ax in reversed(range(src.ndim)):
            l = l.insert(ax, m[ax])  # (..., m_ax, n_ax, ...) with the repeat axis of stride 0
        return l

    def dst_view(l: Layout) -> Layout:
        for ax in reversed(range(src.ndim)):
            l = l.split(ax, (m[ax], src.shape[ax]))
        return l

    return step_of([copy_call(src, src_view, dst, dst_view)])


def _supports_broadcast_to(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    x, y = ctx.inputs[0].shape, ctx.outputs[0].shape
    if len(x) > len(y) or any(a not in (1, b) for a, b in zip(reversed(x), reversed(y))):
        return f"cannot broadcast {x} to {y}"
    return None


def _bind_broadcast_to(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    src, dst = ins[0], outs[0]

    def view(l: Layout) -> Layout:
        lead = dst.ndim - src.ndim
        l = Layout(l.off, (1,) * lead + l.shape, (0,) * lead + l.strides)
        return Layout(l.off, tuple(dst.shape), tuple(0 if n == 1 else s for n, s in zip(l.shape, l.strides)))

    return step_of([copy_call(src, view, dst)])


def _supports_depth_space(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    x, y = ctx.inputs[0].shape, ctx.outputs[0].shape
    b = ctx.op.options.block_size
    if len(x) != 4 or b < 1:
        return "needs a 4-D NHWC input and block_size >= 1"
    if ctx.op.opcode == "DEPTH_TO_SPACE":
        want = (x[0], x[1] * b, x[2] * b, x[3] // (b * b)) if x[3] % (b * b) == 0 else None
    else:
        want = (x[0], x[1] // b, x[2] // b, x[3] * b * b) if x[1] % b == 0 and x[2] % b == 0 else None
    if want != tuple(y):
        return f"shapes {x} -> {y} do not match block_size {b}"
    return None


def _depth_space_views(depth: np.ndarray, space: np.ndarray, b: int) -> tuple[Callable, Callable]:
    """Layout transforms showing the depth tensor and the space tensor both as (n, h, bh, w, bw, c).

    depth[n, h, w, (bh*b + bw)*C + c] is space[n, h*b + bh, w*b + bw, c].
    """
    h, w, c = depth.shape[1], depth.shape[2], space.shape[3]
    return (lambda l: l.split(3, (b, b, c)).permute((0, 1, 3, 2, 4, 5)),
            lambda l: l.split(2, (w, b)).split(1, (h, b)))


def _bind_depth_to_space(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    depth_view, space_view = _depth_space_views(ins[0], outs[0], ctx.op.options.block_size)
    return step_of([copy_call(ins[0], depth_view, outs[0], space_view)])


def _bind_space_to_depth(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    depth_view, space_view = _depth_space_views(outs[0], ins[0], ctx.op.options.block_size)
    return step_of([copy_call(ins[0], space_view, outs[0], depth_view)])


# ----------------------------------------------------------------------------------------------
# GATHER / GATHER_ND


def _reinterpret(a: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A contiguous array seen in `shape` as unsigned ints of its element width; never copies."""
    v = a.view()
    v.shape = tuple(shape)
    return v.view(_UINT[a.dtype.itemsize])


def _gather_geometry(ctx: OpContext) -> tuple[int, int, int, int, int, int]:
    p, idx = ctx.inputs[0].shape, ctx.inputs[1].shape
    axis = _axis(ctx.op.options.axis, len(p))
    bd = ctx.op.options.batch_dims
    bd = bd + len(idx) if bd < 0 else bd
    prod = lambda s: int(np.prod(s, dtype=np.int64)) if len(s) else 1
    return axis, bd, prod(p[:bd]), prod(p[bd:axis]), prod(idx[bd:]), prod(p[axis + 1:])


def _supports_gather(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    if ctx.inputs[1].dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        return f"indices dtype {ctx.inputs[1].dtype} not supported"
    p, idx, y = ctx.inputs[0].shape, ctx.inputs[1].shape, ctx.outputs[0].shape
    axis, bd, *_ = _gather_geometry(ctx)
    if not 0 <= axis < len(p) or not 0 <= bd <= min(axis, len(idx)) or tuple(p[:bd]) != tuple(idx[:bd]):
        return f"axis {axis} / batch_dims {bd} invalid for params {p}, indices {idx}"
    if tuple(p[:axis]) + tuple(idx[bd:]) + tuple(p[axis + 1:]) != tuple(y):
        return "output shape does not match params/indices"
    return None


def _bind_gather(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    axis, _bd, batch, outer, n, inner = _gather_geometry(ctx)
    params = _reinterpret(ins[0], (batch, outer, ins[0].shape[axis], inner))
    indices = ins[1].view()
    indices.shape = (batch, n)
    out = _reinterpret(outs[0], (batch, outer, n, inner))
    return _gather, (params, indices, out)


def _supports_gather_nd(ctx: OpContext) -> str | None:
    reason = _check_move(ctx)
    if reason:
        return reason
    p, idx, y = ctx.inputs[0].shape, ctx.inputs[1].shape, ctx.outputs[0].shape
    if ctx.inputs[1].dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        return f"indices dtype {ctx.inputs[1].dtype} not supported"
    if len(idx) < 1 or idx[-1] > len(p) or tuple(idx[:-1]) + tuple(p[idx[-1]:]) != tuple(y):
        return "output shape does not match params/indices"
    return None


def _bind_gather_nd(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    p, idx = ins[0].shape, ins[1].shape
    k = idx[-1]
    inner = int(np.prod(p[k:], dtype=np.int64))
    rows = int(np.prod(p[:k], dtype=np.int64))
    n = int(np.prod(idx[:-1], dtype=np.int64))
    dims = np.asarray(p[:k], np.int64)
    strides = np.asarray([int(np.prod(p[j + 1:k], dtype=np.int64)) for j in range(k)], np.int64)
    indices = ins[1].view()
    indices.shape = (n, k)
    return _gather_nd, (_reinterpret(ins[0], (rows, inner)), dims, strides, indices, _reinterpret(outs[0], (n, inner)))


# ----------------------------------------------------------------------------------------------
# CAST

_CASTABLE = {np.dtype(t) for t in (np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                   np.uint32, np.int64, np.uint64, np.bool_)}


def _supports_cast(ctx: OpContext) -> str | None:
    x, y = ctx.inputs[0], ctx.outputs[0]
    if x.dtype not in _CASTABLE or y.dtype not in _CASTABLE:
        return f"cast {x.dtype} -> {y.dtype} not supported"
    if tuple(x.shape) != tuple(y.shape):
        return "input and output shapes differ"
    return None


def _bind_cast(ctx: OpContext, ins: list, outs: list, scratch) -> Step:
    src, dst = ins[0].view(), outs[0].view()
    src.shape = (src.size,)
    dst.shape = (dst.size,)
    if dst.dtype == np.bool_ and src.dtype != np.bool_:
        return _cast_to_bool, (src, dst)
    return _cast, (src, dst)


def _cast_inplace(ctx: OpContext) -> tuple[int, ...]:
    return (0,) if ctx.inputs[0].dtype.itemsize == ctx.outputs[0].dtype.itemsize else ()


# ----------------------------------------------------------------------------------------------


def register(registry: KernelRegistry) -> None:
    for op in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
        registry.add(KernelEntry(op, _supports_reshape, _bind_reshape, strided_output=True))
    registry.add(KernelEntry("PAD", _supports_pad, _bind_pad, strided_output=True))
    registry.add(KernelEntry("PADV2", _supports_pad, _bind_pad, strided_output=True))
    registry.add(KernelEntry("MIRROR_PAD", _supports_pad, _bind_mirror_pad, strided_output=True))
    registry.add(KernelEntry("CONCATENATION", _supports_concat, _bind_concat, strided_output=True))
    registry.add(KernelEntry("PACK", _supports_pack, _bind_pack, strided_output=True))
    registry.add(KernelEntry("UNPACK", _supports_unpack, _bind_unpack, strided_output=True))
    registry.add(KernelEntry("SPLIT", _supports_split, _bind_split, strided_output=True))
    registry.add(KernelEntry("SPLIT_V", _supports_split, _bind_split, strided_output=True))
    registry.add(KernelEntry("TRANSPOSE", _supports_transpose, _bind_transpose, strided_output=True))
    registry.add(KernelEntry("SLICE", _supports_slice, _bind_slice, strided_output=True))
    registry.add(KernelEntry("STRIDED_SLICE", _supports_strided_slice, _bind_strided_slice, strided_output=True))
    registry.add(KernelEntry("TILE", _supports_tile, _bind_tile, strided_output=True))
    registry.add(KernelEntry("BROADCAST_TO", _supports_broadcast_to, _bind_broadcast_to, strided_output=True))
    registry.add(KernelEntry("DEPTH_TO_SPACE", _supports_depth_space, _bind_depth_to_space, strided_output=True))
    registry.add(KernelEntry("SPACE_TO_DEPTH", _supports_depth_space, _bind_space_to_depth, strided_output=True))
    registry.add(KernelEntry("GATHER", _supports_gather, _bind_gather))
    registry.add(KernelEntry("GATHER_ND", _supports_gather_nd, _bind_gather_nd))
    registry.add(KernelEntry("CAST", _supports_cast, _bind_cast, inplace=_cast_inplace))


# ----------------------------------------------------------------------------------------------
# consecutive data-movement steps fused into one call
#
# Streaming models run long sequences of small copies (READ_VARIABLE, the STRIDED_SLICE of a
# sliding window, ASSIGN_VARIABLE, CONCATENATION, RESHAPE), each a separate step costing about
# 0.3-0.5 µs of call and argument unboxing for a few hundred bytes. Within one arena every such
# copy is a box of bytes of the one buffer, so a run of them becomes a single job table.


@njit(nogil=True, cache=True, fastmath=False)
def run_byte_jobs(buf, jobs):
    """Runs a byte-level job table on one buffer, in order: COPY/SELF_COPY rows copy a box of bytes
    (src_off to dst_off), FILL rows fill one with the byte in the src_off column."""
    for j in range(jobs.shape[0]):
        row = jobs[j]
        n = row[3:3 + 8]
        ss = row[11:11 + 8]
        ds = row[19:19 + 8]
        if row[0] == FILL:
            _fill_box(buf, row[2], n, ds, np.uint8(row[1]))
        else:
            _box(buf, row[1], buf, row[2], n, ss, ds)


def _offset_in(buf: np.ndarray, a: np.ndarray) -> int | None:
    """Byte offset of a's first element in buf when every element of a lies inside buf, else None."""
    if a.size == 0 or any(s < 0 for s in a.strides):
        return None
    start = a.__array_interface__["data"][0] - buf.__array_interface__["data"][0]
    end = start + sum((n - 1) * s for n, s in zip(a.shape, a.strides)) + a.itemsize
    return start if start >= 0 and end <= buf.nbytes else None


def _byte_row(kind: int, so: int, do: int, n, ss, ds, itemsize: int) -> np.ndarray | None:
    """An element-level box (MAX_RANK dims, element strides) as a byte-level job row, or None when
    its rank leaves no room for the element's bytes."""
    n, ss, ds = list(n), [s * itemsize for s in ss], [s * itemsize for s in ds]
    if itemsize > 1:
        if n[-1] == 1 or (ss[-1] == itemsize and ds[-1] == itemsize):
            n[-1] *= itemsize
            ss[-1] = ds[-1] = 1
        elif n[0] == 1:
            n, ss, ds = n[1:] + [itemsize], ss[1:] + [1], ds[1:] + [1]
        else:
            return None
    row = np.zeros(_ROW, np.int64)
    row[:3] = kind, so, do
    row[3:11], row[11:19], row[19:27] = n, ss, ds
    return row


def _box_of(a: np.ndarray) -> tuple[list[int], list[int]] | None:
    """(shape, element strides) of array a padded to MAX_RANK dims, or None if it has more."""
    if a.ndim > MAX_RANK or any(s % a.itemsize for s in a.strides):
        return None
    pad = MAX_RANK - a.ndim
    return [1] * pad + list(a.shape), [0] * pad + [s // a.itemsize for s in a.strides]


def _move_rows(fn, args, buf: np.ndarray) -> list[np.ndarray] | None:
    """A step as byte-level job rows on buf, or None when it is not a pure move inside buf."""
    if fn is np.copyto and len(args) == 2:
        dst, src = args
        if (type(dst) is not np.ndarray or type(src) is not np.ndarray or dst.dtype != src.dtype
                or dst.shape != src.shape or np.may_share_memory(dst, src)):
            return None
        do, so, db, sb = _offset_in(buf, dst), _offset_in(buf, src), _box_of(dst), _box_of(src)
        if do is None or so is None or db is None or sb is None:
            return None
        row = _byte_row(COPY, so, do, db[0], sb[1], db[1], dst.itemsize)
        return None if row is None else [row]
    if fn is run_jobs and len(args) == 4:
        src, dst, jobs, fill = args
        base_s, base_d = _offset_in(buf, src), _offset_in(buf, dst)
        if base_s is None or base_d is None or src.dtype != dst.dtype or src.ndim != 1 or dst.ndim != 1:
            return None
        size = dst.itemsize
        fill_bytes = np.asarray(fill).reshape(-1)[:1].tobytes()
        rows = []
        for job_row in np.asarray(jobs):
            kind, so, do = (int(v) for v in job_row[:3])
            n, ss, ds = job_row[3:11], job_row[11:19], job_row[19:27]
            if kind == FILL:
                if len(set(fill_bytes)) != 1:  # a multi-byte value whose bytes differ: not a byte fill
                    return None
                row = _byte_row(FILL, fill_bytes[0], base_d + do * size, n, ds, ds, size)
            else:
                row = _byte_row(COPY, (base_s if kind == COPY else base_d) + so * size, base_d + do * size,
                                n, ss, ds, size)
            if row is None:
                return None
            rows.append(row)
        return rows
    return None


def fuse_moves(steps: Sequence[Step], buf: np.ndarray) -> list[Step]:
    """steps with every run of two or more consecutive pure moves inside `buf` (the executor's
    arena) replaced by one run_byte_jobs step doing the same copies in the same order. The fused
    steps are compiled here, so run() never compiles."""
    out: list[Step] = []
    pending: list[tuple[Step, list[np.ndarray]]] = []

    def flush() -> None:
        if len(pending) >= 2:
            table = np.ascontiguousarray(np.stack([r for _, rows in pending for r in rows]))
            run_byte_jobs.compile((numba.typeof(buf), numba.typeof(table)))
            out.append((run_byte_jobs, (buf, table)))
        else:
            out.extend(step for step, _ in pending)
        pending.clear()

    for fn, args in steps:
        rows = _move_rows(fn, args, buf)
        if rows is None:
            flush()
            out.append((fn, args))
        else:
            pending.append(((fn, args), rows))
    flush()
    return out
