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
from itertools import compress
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


class _Part:
    """Static data of one time-connected partition, shared by every search over it."""

    def __init__(self, idx: list[int], lowers, uppers, sizes, over, total):
        self.idx = idx
        points = sorted({lowers[i] for i in idx} | {uppers[i] for i in idx})
        pos = {p: k for k, p in enumerate(points)}
        self.nsec = len(points) - 1
        self.secs: dict[int, range] = {i: range(pos[lowers[i]], pos[uppers[i]]) for i in idx}
        self.sec_members: list[list[int]] = [[] for _ in range(self.nsec)]
        self.total = [0] * self.nsec  # bytes live per section
        self.cuts = [0] * max(0, self.nsec - 1)  # buffers crossing boundary s|s+1
        for i in idx:
            r = self.secs[i]
            for s in r:
                self.sec_members[s].append(i)
                self.total[s] += sizes[i]
            for s in range(r.start, r.stop - 1):
                self.cuts[s] += 1
        self.lower_bound = max(self.total, default=0)
        length = {i: uppers[i] - lowers[i] for i in idx}
        area = {i: sizes[i] * length[i] for i in idx}
        nover = {i: len(over[i]) for i in idx}
        # Preordering keys, largest first (MiniMalloc's WAT/TAW/TWA and friends).
        self.keys: list[Callable[[int], tuple]] = [
            lambda i: (length[i], area[i], total[i], -i),
            lambda i: (total[i], area[i], length[i], -i),
            lambda i: (total[i], length[i], area[i], -i),
            lambda i: (uppers[i], length[i], -i),  # latest end first
            lambda i: (-lowers[i], sizes[i], -i),  # earliest start, largest first
            lambda i: (nover[i], sizes[i], -i),  # most overlaps first
            lambda i: (uppers[i], lowers[i], -i),
            lambda i: (total[i], area[i], -i),
            lambda i: (sizes[i], total[i], length[i], -i),
            lambda i: (lowers[i], length[i], -i),  # latest start first
        ]

    def fixed_orders(self) -> list[list[int]]:
        return [sorted(self.idx, key=k, reverse=True) for k in self.keys]

    def random_order(self, rng: random.Random, noise: float = 0.1) -> list[int]:
        """A preorder whose leading key is scaled by a random factor per buffer: small enough to
        keep the heuristic's shape, large enough that each dive commits differently."""
        k = self.keys[rng.choice((0, 0, 1, 2, 3, 4, 5, 8))]
        w = {i: rng.uniform(1.0 - noise, 1.0 + noise) for i in self.idx}
        return sorted(self.idx, key=lambda i: (k(i)[0] * w[i], k(i)[1:]), reverse=True)


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
    preorder rank) into one int, each node re-sorts its parent's (nearly sorted) list, and the
    lowest top edge of the unplaced buffers is kept per buffer (`height`).
    """

    def __init__(self, part: _Part, sizes, over, align: int, capacity: int, deadline: float,
                 node_limit: int, preorder: list[int]):
        n = len(sizes)
        self.part = part
        self.sizes = sizes
        self.align = align
        self.capacity = capacity
        self.deadline = deadline
        self.nodes_left = node_limit
        self.over = over
        self.secs = part.secs
        self.sec_members = part.sec_members
        self.total = list(part.total)
        self.cuts = list(part.cuts)
        self.shift = max(1, n.bit_length())
        self.pre = [0] * n
        for k, i in enumerate(preorder):
            self.pre[i] = k
        self.key = list(self.pre)  # (lowest offset << shift) | preorder rank; offsets start at 0
        self.height = list(sizes)  # lowest offset + size
        self.preorder = preorder
        self.offsets: dict[int, int] = {}
        self.result: dict[int, int] = {}
        self.timed_out = False
        self.aborted = False
        self.nodes = 0

    def run(self) -> bool:
        return self._node(list(self.preorder), 0, self.part.nsec, -1)

    def replay(self, prefix: list[int]) -> bool:
        """Place `prefix` in order, each at its lowest offset, with no search; False if one ends above capacity.

        The remaining buffers can then be searched (`resume`) on top of this fixed floor.
        """
        key, height, sizes, pre, sh, align = self.key, self.height, self.sizes, self.pre, self.shift, self.align
        placed_key = (self.capacity + align) << sh
        total, cuts = self.total, self.cuts
        for i in prefix:
            off = key[i] >> sh
            size = sizes[i]
            if off + size > self.capacity:
                return False
            self.offsets[i] = off
            key[i] = placed_key
            r = self.secs[i]
            total[r.start:r.stop] = [t - size for t in total[r.start:r.stop]]
            cuts[r.start:r.stop - 1] = [c - 1 for c in cuts[r.start:r.stop - 1]]
            top = -(-(off + size) // align) * align
            top_key = top << sh
            for j in self.over[i]:
                if key[j] < top_key:
                    key[j] = top_key | pre[j]
                    height[j] = top + sizes[j]
        return True

    def resume(self, rest: list[int]) -> bool:
        return self._node(list(rest), 0, self.part.nsec, -1)

    def _node(self, ordering: list[int], lo: int, hi: int, min_key: int) -> bool:
        self.nodes += 1
        self.nodes_left -= 1
        if self.nodes_left < 0:
            self.aborted = True
            return False
        if (self.nodes & 63) == 0 and time.perf_counter() > self.deadline:
            self.timed_out = True
            return False
        if not ordering:
            self.result.update(self.offsets)
            return True
        key, height, sizes, pre, sh = self.key, self.height, self.sizes, self.pre, self.shift
        ordering.sort(key=key.__getitem__)  # the parent's order with a few keys raised: nearly sorted
        min_height = min(map(height.__getitem__, ordering))
        cap = self.capacity
        total, cuts, secs_of = self.total, self.cuts, self.secs
        members, over = self.sec_members, self.over
        get_key = key.__getitem__
        placed_key = (cap + self.align) << sh  # a placed buffer's key: above every bound and top tested below
        # Later placements in this subproblem sit at or above the current offset (canonical order),
        # so every section must still have room for its remaining bytes above that offset.
        room = cap - max(total[lo:hi])
        for p, i in enumerate(ordering):
            ki = key[i]
            off = ki >> sh
            if off >= min_height or off > room:
                break  # later candidates leave a gap another buffer must fill, or cannot fit
            if ki < min_key:
                continue  # canonical order: never below the previous placement
            size = sizes[i]
            h = off + size
            if h > cap:
                continue
            # Place i; record what changes so it can be undone.
            self.offsets[i] = off
            key[i] = placed_key
            secs = secs_of[i]
            a, b = secs.start, secs.stop
            saved_total = total[a:b]
            total[a:b] = [t - size for t in saved_total]
            changed = []
            top = -(-h // self.align) * self.align
            top_key = top << sh
            a_lo, a_hi = a, b
            for j in over[i]:
                if key[j] < top_key:  # unplaced and below i's top
                    changed.append((j, key[j]))
                    key[j] = top_key | pre[j]
                    height[j] = top + sizes[j]
                    r = secs_of[j]
                    if r.start < a_lo:
                        a_lo = r.start
                    if r.stop > a_hi:
                        a_hi = r.stop
            # Nothing in a section can sit below the lowest offset its remaining buffers can
            # take: if that leaves too little room for the bytes still to place there, prune.
            # In i's own sections every remaining buffer meets i, so that offset is >= top.
            lim = cap - top  # negative when i ends at cap and cap is not aligned
            left = max(total[a:b])
            ok = left <= lim or not left
            if ok and changed and max(total[a_lo:a_hi]) > lim:
                for s in compress(range(a_lo, a_hi), map(lim.__lt__, total[a_lo:a_hi])):
                    below = (cap - total[s] + 1) << sh
                    if not any(map(below.__gt__, map(get_key, members[s]))):
                        ok = False
                        break
            found = False
            if ok:
                child = ordering[:p] + ordering[p + 1:]
                saved_cuts = cuts[a:b - 1]
                cuts[a:b - 1] = [c - 1 for c in saved_cuts]
                if 1 not in saved_cuts:
                    found = self._node(child, lo, hi, ki)
                else:
                    cutpoints = [a + 1 + k for k, c in enumerate(saved_cuts) if c == 1]
                    found = self._split(child, lo, hi, cutpoints)
                cuts[a:b - 1] = saved_cuts
            total[a:b] = saved_total
            for j, k in reversed(changed):
                key[j] = k
                height[j] = (k >> sh) + sizes[j]
            key[i] = ki
            del self.offsets[i]
            if found or self.timed_out or self.aborted:
                return found
            if not changed:
                break  # i constrained nobody, so no other choice here can do better (hatless pruning)
        return False

    def _split(self, todo: list[int], lo: int, hi: int, cutpoints: list[int]) -> bool:
        """Solve the independent pieces between cut points; all must succeed."""
        bounds = [lo] + [c for c in cutpoints if lo < c < hi] + [hi]
        secs = self.secs
        groups = []
        for a, b in zip(bounds, bounds[1:]):
            g = [i for i in todo if secs[i].start < b and a < secs[i].stop]
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


class _Portfolio:
    """Anytime search over partitions: each partition keeps its best placement, its peak and a
    proven lower bound on its peak; `attempt(target)` tries to bring every partition to `target`.

    Two kinds of runs per partition, both with the same search: the fixed preorders with a node
    limit that doubles per round (these can prove a target infeasible), and short randomized
    dives. Successful searches at these targets mostly run with hardly any backtracking, while a
    failing preorder tends to fail for millions of nodes (a heavy tail), so many short dives
    with perturbed preorders find solutions that long runs of one preorder do not.
    """

    def __init__(self, parts: list[_Part], sizes, over, align: int, deadline: float, start_offsets: list[int],
                 stats: dict):
        self.parts = parts
        self.sizes = sizes
        self.over = over
        self.align = align
        self.deadline = deadline
        self.stats = stats
        self.best: list[dict[int, int]] = []
        self.peak: list[int] = []
        self.lo = [p.lower_bound for p in parts]
        for p in parts:
            self.best.append({i: start_offsets[i] for i in p.idx})
            self.peak.append(max(start_offsets[i] + sizes[i] for i in p.idx))
        self.rng = random.Random(0)  # fixed seed: the same instance gives the same plan
        self.fixed = [p.fixed_orders() for p in parts]

    def _run(self, k: int, cap: int, limit: int, order: list[int], deadline: float | None = None) -> bool | None:
        """True: placed within cap; False: gave up; None: proved nothing fits within cap."""
        s = _Search(self.parts[k], self.sizes, self.over, self.align, cap,
                    self.deadline if deadline is None else deadline, limit, order)
        ok = s.run()
        self.stats["nodes"] = self.stats.get("nodes", 0) + s.nodes
        self.stats["searches"] = self.stats.get("searches", 0) + 1
        if ok:
            res = s.result
            self.best[k] = res
            self.peak[k] = max(res[i] + self.sizes[i] for i in self.parts[k].idx)
            return True
        if not s.timed_out and not s.aborted:
            self.lo[k] = max(self.lo[k], cap + 1)
            return None
        return False

    def attempt(self, target: int, limit_factor: float, dives: int, fixed: bool, n_fixed: int = 10,
                deadline: float | None = None) -> bool:
        """Bring every partition to a peak <= target by `deadline`; stop at the first one that stays above.

        Per partition: the first `n_fixed` fixed preorders, then `dives` randomized dives, then the
        other fixed preorders (all with `limit_factor` times the buffers as node limit). The later
        preorders come last so that instances the first ones and the dives serve keep their
        search; they are there for instances where only they reach an intermediate target with
        hardly any backtracking (MiniMalloc's I: a latest-end-first preorder reaches 1.035x and
        1.045x of the bound in under 400 nodes, where the first three fail for 100,000 and more).
        """
        deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        for k, part in enumerate(self.parts):
            if self.peak[k] <= target:
                continue
            if self.lo[k] > target or time.perf_counter() > deadline:
                return False
            m = len(part.idx)
            limit = int(limit_factor * m)
            runs = [(limit, order) for order in self.fixed[k][:n_fixed]] if fixed else []
            runs += [(int(1.5 * m) + 8, None)] * dives
            runs += [(limit, order) for order in self.fixed[k][n_fixed:]] if fixed else []
            for run_limit, order in runs:
                got = self._run(k, target, run_limit, part.random_order(self.rng) if order is None else order,
                                deadline)
                if got is None or time.perf_counter() > deadline:
                    return False
                if got:
                    break
            else:
                return False
        return True

    def dive(self, k: int, target: int, rng: random.Random) -> bool:
        """One short randomized search of partition k from scratch within `target`."""
        part = self.parts[k]
        return bool(self._run(k, target, int(1.5 * len(part.idx)) + 8, part.random_order(rng)))

    def repair(self, k: int, target: int, rng: random.Random, strict_p: float = 1.0) -> bool:
        """Large-neighbourhood move on partition k's best placement: keep a floor of it (the buffers
        below a random level, and those outside a random time window around a buffer at the peak),
        re-place the floor at its lowest offsets, and search the rest within `target` with a short
        node limit. Targets at the current peak are accepted too: such sideways moves reshape the
        placement, which later moves need to get below a peak that single moves cannot. With
        probability `strict_p` a sideways move must not crowd the top more (`_crowding`), which
        steers the walk towards placements a down move can improve; the rest are free, to escape."""
        part, best, sizes = self.parts[k], self.best[k], self.sizes
        peak = self.peak[k]
        level = peak * rng.choice((0.0, rng.uniform(0.2, 0.95), rng.uniform(0.5, 0.95)))
        canon = sorted(part.idx, key=lambda i: (best[i], -sizes[i]))
        if rng.random() < 0.5:
            c = rng.choice([i for i in part.idx if best[i] + sizes[i] == peak])
            r, nsec = part.secs[c], part.nsec
            w = max(1, int(nsec * rng.uniform(0.02, 0.3)))
            a, b = max(0, r.start - rng.randint(0, w)), min(nsec, r.stop + rng.randint(0, w))
            secs = part.secs
            keep = [best[i] < level or secs[i].stop <= a or secs[i].start >= b for i in canon]
        else:
            keep = [best[i] < level for i in canon]
        prefix = list(compress(canon, keep))
        rest = set(canon) - set(prefix)
        order = [i for i in part.random_order(rng) if i in rest]
        limit = int(1.5 * len(part.idx)) + 8  # the whole partition's size: small neighbourhoods may backtrack more
        strict = rng.random() < strict_p
        s = _Search(part, sizes, self.over, self.align, target, self.deadline, limit, order)
        ok = s.replay(prefix) and s.resume(order)
        self.stats["nodes"] = self.stats.get("nodes", 0) + s.nodes
        self.stats["repairs"] = self.stats.get("repairs", 0) + 1
        if ok:
            new_peak = max(s.result[i] + sizes[i] for i in part.idx)
            if new_peak >= peak and strict and self._crowding(k, s.result, peak) > self._crowding(k, best, peak):
                return False
            self.best[k] = s.result
            self.peak[k] = new_peak
        return ok

    def _crowding(self, k: int, offsets: dict, peak: int) -> int:
        """Bytes x time above 97% of `peak`: what a sideways move should shrink so later moves can lower the peak."""
        part, sizes = self.parts[k], self.sizes
        thr = peak - peak // 32
        return sum((offsets[i] + sizes[i] - thr) * len(part.secs[i]) for i in part.idx if offsets[i] + sizes[i] > thr)

    def overall(self) -> tuple[int, int]:
        return max(self.lo), max(self.peak)


def _improve(pf: _Portfolio, lb: int, align: int, descent_end: float, deadline: float, stats: dict) -> None:
    """Lower the portfolio's peak until `deadline` or the bound.

    First a descent: targets halfway between a soft floor and the best peak, each tried with the
    fixed preorders and a few dives (`attempt`; a failure raises the floor), until `descent_end`.
    Then three kinds of moves share the search nodes (by node count, so the mix does not depend
    on machine load): fixed preorders at the floor with node limits 2, 4, 8... times the buffers
    (these reach the bound on instances where one preorder is right and only needs some
    backtracking), short randomized dives from scratch at the floor or partway
    to it, and local repair of the best placement (which keeps improving where the dives stall).
    The dives' share grows while repair stalls.
    """
    soft = lb
    while time.perf_counter() < descent_end:
        lo, hi = max(lb, pf.overall()[0]), pf.overall()[1]
        if lo >= hi:
            return
        soft = max(soft, lo)
        if hi - soft <= max(1, (hi - lo) // 32):
            break
        mid = (soft + hi) // 2
        if not pf.attempt(mid, 2.0, dives=2, fixed=True, n_fixed=4, deadline=descent_end):
            soft = mid
    weights = (0.2, 0.15, 0.65)  # node shares: fixed preorders, dives, repairs
    stall_moves = 100  # moves without a better peak at which dives get half their extra share
    nfixed = len(pf.fixed[0]) if pf.fixed else 0
    # Every preorder once with a short limit, then the first four with doubling limits.
    schedule = [(2, j) for j in range(nfixed)] + [(f, j) for f in (4, 8, 16, 32, 64) for j in range(min(4, nfixed))]
    step_no = [0] * len(pf.parts)
    spent = [1.0, 1.0, 1.0]  # nodes spent on fixed runs, dives, repairs
    rng = random.Random(1)
    stall, last_hi = 0, None
    while time.perf_counter() < deadline:
        lo, hi = max(lb, pf.overall()[0]), pf.overall()[1]
        if lo >= hi:
            return
        stall = 0 if last_hi is None or hi < last_hi else stall + 1
        last_hi = hi
        stalled = stall / (stall + stall_moves)
        w = (weights[0], weights[1] + 0.3 * stalled, weights[2] - 0.3 * stalled)
        kind = min(range(3), key=lambda c: spent[c] / w[c])
        if kind == 0 and all(q >= len(schedule) for q in step_no):
            kind = 1
        before = stats.get("nodes", 0)
        for k in range(len(pf.parts)):
            floor = max(lb, pf.lo[k]) if len(pf.parts) == 1 else pf.lo[k]
            peak = pf.peak[k]
            if peak <= floor or peak < hi:
                continue  # only partitions at the overall peak can lower it
            if kind == 0:
                if step_no[k] >= len(schedule):
                    continue
                f, j = schedule[step_no[k]]
                step_no[k] += 1
                pf._run(k, floor, int(f * len(pf.parts[k].idx)), pf.fixed[k][j])
            elif kind == 1:
                pf.dive(k, floor + int((peak - floor) * rng.choice((0.0, 0.0, 0.25, 0.5))), rng)
            else:
                if rng.random() < 0.4:
                    target = peak
                else:
                    gap = max(align, int((peak - floor) * rng.choice((0.02, 0.05, 0.1, 0.2))))
                    target = max(floor, peak - gap)
                pf.repair(k, target, rng, strict_p=1.0 - 0.6 * stalled)
            if time.perf_counter() >= deadline:
                break
        spent[kind] += stats.get("nodes", 0) - before + 1


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
    parts = [_Part(p, lowers, uppers, sizes, over, total) for p in _partitions(lowers, uppers, list(range(n)))]
    pf = _Portfolio(parts, sizes, over, align, deadline, best, stats)
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 4 * n + 1000))  # the search recurses once per placed buffer
    try:
        _improve(pf, lb, align, start + 0.15 * time_limit, deadline, stats)
    finally:
        sys.setrecursionlimit(old_limit)
    lo, hi = max(lb, pf.overall()[0]), pf.overall()[1]
    if hi < best_peak:
        best = [0] * n
        for placed in pf.best:
            for j, off in placed.items():
                best[j] = off
    return finish(best, strategy, lo >= hi)


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
