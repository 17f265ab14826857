"""Offset assignment: place buffers with known lifetimes in one address range, minimising its peak.

A problem is a list of `Interval`s (half-open lifetime [lower, upper), size in bytes). Strategies:

- "naive":   every buffer at its own offset, no reuse (the reference figure);
- "greedy":  TFLite's GreedyBySize: largest first, each at the smallest gap that fits (best fit);
- "breadth": TFLite's GreedyByBreadth flavour: buffers of the busiest time steps first, best fit;
- "default": several greedy orderings, then a branch-and-bound search over canonical placements
  (MiniMalloc, Moffitt ASPLOS'23) for a solution at the lower bound, under a time limit. Never
  returns worse than "greedy".

Offsets are multiples of `align`. Pure Python; `solve` is the one entry point.
"""

from __future__ import annotations

import random
import sys
import time
from operator import add
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

from edgert.errors import PlanError

STRATEGIES = ("default", "greedy", "breadth", "naive")


@dataclass(frozen=True)
class Interval:
    """One buffer: lives during [lower, upper) and needs `size` bytes."""

    id: Hashable
    lower: int
    upper: int
    size: int


@dataclass
class Solution:
    offsets: dict  # interval id -> offset
    peak: int  # max over buffers of offset + size (0 when empty)
    lower_bound: int  # max over time of live bytes
    strategy: str
    proven_optimal: bool = False  # peak == lower bound, or the search proved nothing lower fits
    stats: dict = field(default_factory=dict)


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def lower_bound(intervals: Sequence[Interval], align: int = 1) -> int:
    """Max over time of the bytes live at that time.

    With align > 1 every buffer but the topmost one also occupies its padding up to the next
    multiple of `align`, so the bound counts aligned sizes minus the largest padding live then.
    """
    events: dict[int, list[int]] = {}
    for k, it in enumerate(intervals):
        if it.size <= 0 or it.upper <= it.lower:
            continue
        events.setdefault(it.lower, []).append(k)
        events.setdefault(it.upper, []).append(~k)
    best = live = 0
    pads: dict[int, int] = {}  # padding -> how many live buffers have it
    for t in sorted(events):
        for k in events[t]:
            it = intervals[k if k >= 0 else ~k]
            padded = align_up(it.size, align)
            pad = padded - it.size
            if k >= 0:
                live += padded
                pads[pad] = pads.get(pad, 0) + 1
            else:
                live -= padded
                pads[pad] -= 1
                if not pads[pad]:
                    del pads[pad]
        if live:
            best = max(best, live - max(pads))
    return best


def peak_of(intervals: Sequence[Interval], offsets: dict) -> int:
    return max((offsets[it.id] + it.size for it in intervals if it.size > 0), default=0)


def check_solution(intervals: Sequence[Interval], offsets: dict, align: int = 1, capacity: int | None = None) -> None:
    """Raise PlanError if two buffers overlapping in time share a byte, an offset is misaligned, or peak > capacity."""
    items = sorted((it for it in intervals if it.size > 0 and it.upper > it.lower), key=lambda it: it.lower)
    for it in items:
        off = offsets.get(it.id)
        if off is None or off < 0 or off % align:
            raise PlanError(f"buffer {it.id!r}: bad offset {off!r} (align {align})")
        if capacity is not None and off + it.size > capacity:
            raise PlanError(f"buffer {it.id!r}: ends at {off + it.size} > capacity {capacity}")
    active: list[Interval] = []
    for it in items:
        active = [a for a in active if a.upper > it.lower]
        lo, hi = offsets[it.id], offsets[it.id] + it.size
        for a in active:
            alo, ahi = offsets[a.id], offsets[a.id] + a.size
            if lo < ahi and alo < hi:
                raise PlanError(
                    f"buffers {a.id!r} [{a.lower},{a.upper}) @{alo}+{a.size} and {it.id!r} "
                    f"[{it.lower},{it.upper}) @{lo}+{it.size} overlap in time and memory")
        active.append(it)


# ---------------------------------------------------------------------------------------------
# Greedy placements


def _overlap_lists(lowers: list[int], uppers: list[int]) -> list[list[int]]:
    """For every buffer, the buffers whose lifetimes intersect it (sweep over sorted starts)."""
    n = len(lowers)
    order = sorted(range(n), key=lambda i: lowers[i])
    over: list[list[int]] = [[] for _ in range(n)]
    active: list[int] = []
    for i in order:
        lo = lowers[i]
        active = [a for a in active if uppers[a] > lo]
        for a in active:
            over[a].append(i)
            over[i].append(a)
        active.append(i)
    return over


def _best_fit(order: Sequence[int], sizes: list[int], over: list[list[int]], align: int,
              first_fit: bool = False) -> list[int]:
    """Place buffers in `order`, each in the smallest (or lowest) gap among placed overlapping buffers."""
    n = len(sizes)
    offsets = [-1] * n
    for i in order:
        size = sizes[i]
        placed = sorted((offsets[j], offsets[j] + sizes[j]) for j in over[i] if offsets[j] >= 0)
        best_off, best_gap = -1, None
        cur = 0
        for lo, hi in placed:
            if lo - cur >= size:
                gap = lo - cur
                if best_gap is None or gap < best_gap:
                    best_off, best_gap = cur, gap
                    if first_fit:
                        break
            if hi > cur:
                cur = align_up(hi, align)
        offsets[i] = best_off if best_off >= 0 else cur
    return offsets


def _section_totals(lowers: list[int], uppers: list[int], sizes: list[int]) -> list[int]:
    """Per buffer: the max over its lifetime of total live bytes (GreedyByBreadth's key)."""
    points = sorted(set(lowers) | set(uppers))
    index = {p: k for k, p in enumerate(points)}
    diff = [0] * (len(points) + 1)
    for lo, up, s in zip(lowers, uppers, sizes):
        diff[index[lo]] += s
        diff[index[up]] -= s
    live, acc = [], 0
    for k in range(len(points)):
        acc += diff[k]
        live.append(acc)
    return [max(live[index[lo]:index[up]], default=0) for lo, up in zip(lowers, uppers)]


def _greedy_orders(lowers, uppers, sizes) -> dict[str, list[int]]:
    n = len(sizes)
    total = _section_totals(lowers, uppers, sizes)
    length = [u - l for l, u in zip(lowers, uppers)]
    rng = range(n)
    return {
        "size": sorted(rng, key=lambda i: (-sizes[i], lowers[i], i)),
        "breadth": sorted(rng, key=lambda i: (-total[i], -sizes[i], lowers[i], i)),
        "area": sorted(rng, key=lambda i: (-sizes[i] * length[i], -sizes[i], i)),
        "length": sorted(rng, key=lambda i: (-length[i], -sizes[i], i)),
        "start": sorted(rng, key=lambda i: (lowers[i], -length[i], -sizes[i], i)),
        "total_size": sorted(rng, key=lambda i: (-total[i], -length[i], -sizes[i], i)),
    }


# ---------------------------------------------------------------------------------------------
# Canonical-placement branch and bound (MiniMalloc)


class _Search:
    """Decision search: is there a placement of one time-connected partition within `capacity`?

    Buffers are placed in non-decreasing order of offset, each at the lowest offset its placed
    neighbours allow (canonical solutions); a buffer is skipped where another could fill the gap
    below it (dominance); a branch is cut when some time section cannot hold the bytes still to
    place there above the current offset, or above the lowest offset its remaining buffers can
    take (section inference); a buffer that constrained nobody ends the alternatives at its node
    (hatless pruning). When no unplaced buffer crosses some time boundary, the rest splits into
    independent subproblems solved one after the other (dynamic decomposition).

    Hot loops run over lists with C-level builtins: a buffer's sort key packs (lowest offset,
    preorder rank) into one int.
    """

    def __init__(self, idx: list[int], lowers, uppers, sizes, over, align: int, capacity: int,
                 deadline: float, node_limit: int, preorder: list[int]):
        n = len(sizes)
        self.idx = idx
        self.sizes = sizes
        self.align = align
        self.capacity = capacity
        self.deadline = deadline
        self.nodes_left = node_limit
        self.over = over
        points = sorted({lowers[i] for i in idx} | {uppers[i] for i in idx})
        pos = {p: k for k, p in enumerate(points)}
        self.nsec = len(points) - 1
        self.secs: list = [None] * n
        for i in idx:
            self.secs[i] = range(pos[lowers[i]], pos[uppers[i]])
        self.sec_members: list[list[int]] = [[] for _ in range(self.nsec)]
        self.total = [0] * self.nsec
        self.cuts = [0] * max(0, self.nsec - 1)  # unplaced buffers crossing boundary s|s+1
        for i in idx:
            r = self.secs[i]
            for s in r:
                self.sec_members[s].append(i)
                self.total[s] += sizes[i]
            for s in range(r.start, r.stop - 1):
                self.cuts[s] += 1
        self.shift = max(1, n.bit_length())
        self.pre = [0] * n
        for k, i in enumerate(preorder):
            self.pre[i] = k
        self.key = list(self.pre)  # (lowest offset << shift) | preorder rank; offsets start at 0
        self.flags = bytearray(n)  # 1 = unplaced
        for i in idx:
            self.flags[i] = 1
        self.offsets: dict[int, int] = {}
        self.result: dict[int, int] = {}
        self.timed_out = False
        self.aborted = False
        self.nodes = 0

    def run(self) -> bool:
        return self._node(set(self.idx), 0, self.nsec, -1)

    def _node(self, todo: set, lo: int, hi: int, min_key: int) -> bool:
        self.nodes += 1
        self.nodes_left -= 1
        if self.nodes_left < 0:
            self.aborted = True
            return False
        if (self.nodes & 63) == 0 and time.perf_counter() > self.deadline:
            self.timed_out = True
            return False
        if not todo:
            self.result.update(self.offsets)
            return True
        key, sizes, pre, sh = self.key, self.sizes, self.pre, self.shift
        ordering = sorted(todo, key=key.__getitem__)
        offs = [key[i] >> sh for i in ordering]
        min_height = min(map(add, offs, map(sizes.__getitem__, ordering)))
        cap = self.capacity
        total, cuts, secs_of = self.total, self.cuts, self.secs
        members, flags, over = self.sec_members, self.flags, self.over
        get_key, is_unplaced = key.__getitem__, flags.__getitem__
        # Later placements in this subproblem sit at or above the current offset (canonical order),
        # so every section must still have room for its remaining bytes above that offset.
        room = cap - max(total[lo:hi])
        for i, off in zip(ordering, offs):
            if off >= min_height or off > room:
                break  # later candidates leave a gap another buffer must fill, or cannot fit
            ki = key[i]
            if ki < min_key:
                continue  # canonical order: never below the previous placement
            size = sizes[i]
            height = off + size
            if height > cap:
                continue
            # Place i; record what changes so it can be undone.
            self.offsets[i] = off
            flags[i] = 0
            todo.discard(i)
            secs = secs_of[i]
            a, b = secs.start, secs.stop
            saved_total = total[a:b]
            total[a:b] = [t - size for t in saved_total]
            changed = []
            top = align_up(height, self.align)
            top_key = top << sh
            a_lo, a_hi = a, b
            for j in over[i]:
                if flags[j] and key[j] < top_key:
                    changed.append((j, key[j]))
                    key[j] = top_key | pre[j]
                    r = secs_of[j]
                    if r.start < a_lo:
                        a_lo = r.start
                    if r.stop > a_hi:
                        a_hi = r.stop
            ok = True
            if changed:
                # Nothing in a section can sit below the lowest offset its remaining buffers can
                # take: if that leaves too little room for the bytes still to place there, prune.
                lim = cap - top
                for s in range(a_lo, a_hi):
                    t = total[s]
                    if t > lim:
                        below = (cap - t + 1) << sh
                        if not any(map(below.__gt__, map(get_key, filter(is_unplaced, members[s])))):
                            ok = False
                            break
            found = False
            if ok:
                saved_cuts = cuts[a:b - 1]
                cuts[a:b - 1] = [c - 1 for c in saved_cuts]
                if 1 not in saved_cuts:
                    found = self._node(todo, lo, hi, ki)
                else:
                    cutpoints = [a + 1 + k for k, c in enumerate(saved_cuts) if c == 1]
                    found = self._split(todo, lo, hi, cutpoints)
                cuts[a:b - 1] = saved_cuts
            total[a:b] = saved_total
            for j, k in reversed(changed):
                key[j] = k
            flags[i] = 1
            todo.add(i)
            del self.offsets[i]
            if found or self.timed_out or self.aborted:
                return found
            if not changed:
                break  # i constrained nobody, so no other choice here can do better (hatless pruning)
        return False

    def _split(self, todo: set, lo: int, hi: int, cutpoints: list[int]) -> bool:
        """Solve the independent pieces between cut points; all must succeed."""
        bounds = [lo] + [c for c in cutpoints if lo < c < hi] + [hi]
        groups = []
        for a, b in zip(bounds, bounds[1:]):
            g = {i for i in todo if self.secs[i].start < b and a < self.secs[i].stop}
            if g:
                groups.append((g, a, b))
        if not groups:
            self.result.update(self.offsets)
        for g, a, b in groups:
            if not self._node(g, a, b, -1):
                return False
        return True


def _partitions(lowers, uppers, idx: list[int]) -> list[list[int]]:
    """Split buffers into groups with no lifetime crossing between groups."""
    parts: list[list[int]] = []
    end = None
    for i in sorted(idx, key=lambda i: lowers[i]):
        if end is None or lowers[i] >= end:
            parts.append([])
            end = uppers[i]
        parts[-1].append(i)
        end = max(end, uppers[i])
    return parts


def _preorders(idx, lowers, uppers, sizes, total, over, round_no: int) -> list[list[int]]:
    """Static buffer orderings to try (a portfolio: each instance tends to fall to one of them),
    plus a few randomly perturbed ones that change with the round."""
    length = {i: uppers[i] - lowers[i] for i in idx}
    area = {i: sizes[i] * length[i] for i in idx}
    nover = {i: len(over[i]) for i in idx}
    keys: list[Callable[[int], tuple]] = [
        lambda i: (-length[i], -area[i], -total[i], i),  # MiniMalloc's WAT
        lambda i: (-total[i], -area[i], -length[i], i),  # TAW
        lambda i: (-total[i], -length[i], -area[i], i),  # TWA
        lambda i: (-uppers[i], -length[i], i),  # latest end first
        lambda i: (lowers[i], -sizes[i], i),  # earliest start, largest first
        lambda i: (-nover[i], -sizes[i], i),  # most overlaps first
        lambda i: (-uppers[i], -lowers[i], i),
        lambda i: (-total[i], -area[i], i),
        lambda i: (-sizes[i], -total[i], -length[i], i),
        lambda i: (-lowers[i], -length[i], i),  # latest start first
    ]
    out = [sorted(idx, key=k) for k in keys]
    rng = random.Random(round_no)
    for base in (0, 1, 3, 0, 1, 3):
        w = {i: rng.uniform(0.9, 1.1) for i in idx}
        k = keys[base]
        out.append(sorted(idx, key=lambda i: (k(i)[0] * w[i], k(i)[1:])))
    return out


def _search_capacity(parts, lowers, uppers, sizes, over, total, align, capacity, deadline, node_limit,
                     round_no: int, stats: dict, portfolio: slice = slice(None),
                     solved: dict | None = None) -> tuple[dict[int, int] | None, bool]:
    """(offsets within `capacity` or None, proven infeasible). Every ordering of the portfolio
    gets `node_limit` nodes per partition; the first to succeed wins. `solved` keeps partitions
    already placed within a capacity, so later rounds spend their nodes on the hard ones."""
    offsets: dict[int, int] = {}
    solved = {} if solved is None else solved
    for p, part in enumerate(parts):
        done = [v for (q, c), v in solved.items() if q == p and c <= capacity]
        if done:
            offsets.update(done[0])
            continue
        found = None
        for k, order in enumerate(_preorders(part, lowers, uppers, sizes, total, over, round_no)[portfolio]):
            search = _Search(part, lowers, uppers, sizes, over, align, capacity, deadline, node_limit, order)
            ok = search.run()
            stats["nodes"] = stats.get("nodes", 0) + search.nodes
            if ok:
                found = search.result
                stats["found_by"] = (round_no, k, search.nodes)
                break
            if search.timed_out:
                return None, False
            if not search.aborted:
                return None, True  # the search was complete: nothing fits this capacity
        if found is None:
            return None, False
        solved[(p, capacity)] = found
        offsets.update(found)
    return offsets, False


# ---------------------------------------------------------------------------------------------


def solve(intervals: Sequence[Interval], strategy: str = "default", *, align: int = 64,
          time_limit: float = 0.5) -> Solution:
    """Offsets for every interval under `strategy`. Zero-size or empty-lifetime buffers get offset 0."""
    if strategy not in STRATEGIES:
        raise PlanError(f"unknown placement strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    start = time.perf_counter()
    items = list(intervals)
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise PlanError("interval ids must be unique")
    for it in items:
        if it.size < 0 or it.upper < it.lower:
            raise PlanError(f"interval {it.id!r}: size {it.size}, lifetime [{it.lower}, {it.upper}) is invalid")
    real = [k for k, it in enumerate(items) if it.size > 0 and it.upper > it.lower]
    lowers = [items[k].lower for k in real]
    uppers = [items[k].upper for k in real]
    sizes = [items[k].size for k in real]
    n = len(real)
    lb = lower_bound(items, align)
    stats: dict = {}

    def finish(offs: list[int] | dict, name: str, proven: bool = False) -> Solution:
        out = {it.id: 0 for it in items}
        for j in range(n):
            out[items[real[j]].id] = offs[j]
        peak = max((offs[j] + sizes[j] for j in range(n)), default=0)
        stats["ms"] = (time.perf_counter() - start) * 1000
        return Solution(out, peak, lb, name, proven or peak == lb, stats)

    if strategy == "naive":
        offs, cur = [], 0
        for j in range(n):
            offs.append(cur)
            cur = align_up(cur + sizes[j], align)
        return finish(offs, strategy)

    over = _overlap_lists(lowers, uppers)
    orders = _greedy_orders(lowers, uppers, sizes)
    if strategy == "greedy":
        return finish(_best_fit(orders["size"], sizes, over, align), strategy)
    if strategy == "breadth":
        return finish(_best_fit(orders["breadth"], sizes, over, align), strategy)

    # default: best of several greedy orderings, then search at the lower bound.
    best, best_peak, best_name = None, None, ""
    for name, order in orders.items():
        for ff in (False, True):
            offs = _best_fit(order, sizes, over, align, first_fit=ff)
            peak = max((offs[j] + sizes[j] for j in range(n)), default=0)
            if best_peak is None or peak < best_peak:
                best, best_peak, best_name = offs, peak, name + ("/first" if ff else "")
        if best_peak is not None and best_peak <= lb:
            break
    stats["greedy"] = best_name
    stats["greedy_peak"] = best_peak
    if n == 0 or best_peak <= lb:
        return finish(best or [], strategy)
    deadline = start + time_limit
    total = _section_totals(lowers, uppers, sizes)
    parts = _partitions(lowers, uppers, list(range(n)))
    # Rounds of decision searches with a node limit that doubles each round: at the lower bound
    # (often feasible, and then optimal) with the whole portfolio, then halfway between it and
    # the best peak known with a few orderings, so a good placement keeps tightening meanwhile.
    lo, hi = lb, best_peak
    limit = max(64, n)
    round_no = 0
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 4 * n + 1000))  # the search recurses once per placed buffer

    solved: dict = {}

    def attempt(cap: int, portfolio: slice) -> bool | None:
        """True: found (hi lowered); False: not found; None: proven infeasible."""
        nonlocal best, best_peak, hi
        found, infeasible = _search_capacity(parts, lowers, uppers, sizes, over, total, align, cap,
                                             deadline, limit, round_no, stats, portfolio, solved)
        if found is None:
            return None if infeasible else False
        offs = [found[j] for j in range(n)]
        peak = max(offs[j] + sizes[j] for j in range(n))
        if peak < best_peak:
            best, best_peak = offs, peak
        hi = min(hi, peak)
        return True

    try:
        while lo < hi and time.perf_counter() < deadline:
            got = attempt(lo, slice(None))
            if got is None:
                lo += 1
            cap = (lo + hi) // 2
            if not got and lo < cap < hi and time.perf_counter() < deadline:
                if attempt(cap, slice(0, 4)) is None:
                    lo = cap + 1
            limit *= 2
            round_no += 1
    finally:
        sys.setrecursionlimit(old_limit)
    proven = lo >= hi
    stats["node_limit"] = limit
    stats["rounds"] = round_no
    return finish(best, strategy, proven)


def read_intervals_csv(path: str) -> list[Interval]:
    """A raw instance: CSV with header id,lower,upper,size (MiniMalloc's format; extra columns ignored)."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise PlanError(f"cannot read interval file {path}: {exc.strerror}") from exc
    out = []
    for n, row in enumerate(rows, start=2):
        try:
            out.append(Interval(row["id"], int(row["lower"]), int(row["upper"]), int(row["size"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{path}:{n}: need columns id,lower,upper,size with integers ({exc!r})") from exc
    return out
