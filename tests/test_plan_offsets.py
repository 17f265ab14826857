"""Offset assignment on raw interval instances: validity, never worse than greedy, exact on small ones."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgert.errors import PlanError
from edgert.plan.offsets import (STRATEGIES, Interval, align_up, check_solution, lower_bound, read_intervals_csv,
                                 solve)

MINIMALLOC = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "minimalloc"

intervals_st = st.lists(
    st.tuples(st.integers(0, 30), st.integers(1, 12), st.integers(0, 5000)),
    min_size=0, max_size=40,
).map(lambda xs: [Interval(k, lo, lo + ln, size) for k, (lo, ln, size) in enumerate(xs)])


def optimum(its: list[Interval]) -> int:
    """Best peak over every canonical placement (each buffer right above the placed ones it meets)."""
    best = None
    for perm in itertools.permutations(range(len(its))):
        off: dict[int, int] = {}
        for i in perm:
            a = its[i]
            off[i] = max((off[j] + its[j].size for j in off
                          if a.lower < its[j].upper and its[j].lower < a.upper), default=0)
        peak = max((off[i] + its[i].size for i in off), default=0)
        best = peak if best is None else min(best, peak)
    return best or 0


@settings(max_examples=120, deadline=None)
@given(intervals_st, st.sampled_from([1, 64]))
def test_every_strategy_places_validly(its, align):
    greedy = solve(its, "greedy", align=align)
    for strategy in STRATEGIES:
        sol = solve(its, strategy, align=align, time_limit=0.05)
        check_solution(its, sol.offsets, align)
        assert sol.peak >= sol.lower_bound == lower_bound(its, align)
        assert set(sol.offsets) == {it.id for it in its}
        if strategy == "default":
            assert sol.peak <= greedy.peak
        if strategy == "naive":
            live = [it for it in its if it.size and it.upper > it.lower]
            assert sol.peak <= sum(align_up(it.size, align) for it in live)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(1, 6), st.integers(1, 9)), min_size=1, max_size=6))
def test_default_is_optimal_on_small_instances(xs):
    its = [Interval(k, lo, lo + ln, size) for k, (lo, ln, size) in enumerate(xs)]
    sol = solve(its, "default", align=1, time_limit=5.0)
    check_solution(its, sol.offsets, 1)
    assert sol.peak == optimum(its)


def test_aligned_lower_bound_counts_padding_below_the_top():
    its = [Interval("a", 0, 2, 10), Interval("b", 0, 2, 100), Interval("c", 2, 3, 1000)]
    assert lower_bound(its, 1) == 1000
    # at steps 0-1, one of a/b must be padded to 64 bytes: 64 + 100 or 128 + 10
    assert lower_bound([its[0], its[1]], 64) == 138
    sol = solve(its, "default", align=64)
    assert sol.peak == 1000


def test_aligned_buffers_packed_exactly_to_capacity():
    # A perfect packing in 64-byte units: sizes are multiples of 64, the bound is exactly 64 * 64
    # bytes, so the buffers at the top must end exactly at capacity (a node whose aligned top
    # equals capacity used to be treated as over it).
    hits = 0
    for seed in range(4):
        its = [Interval(it.id, it.lower, it.upper, 64 * it.size) for it in guillotine(seed, 30, height=64)]
        assert lower_bound(its, 64) == 4096
        sol = solve(its, "default", align=64, time_limit=10.0)
        check_solution(its, sol.offsets, 64)
        assert sol.peak == 4096 and sol.proven_optimal
        check_solution(its, sol.offsets, 64, capacity=4096)
        hits += solve(its, "greedy", align=64).peak > 4096
    assert hits >= 1


def test_greedy_is_best_fit_largest_first():
    # TFLite's GreedyBySize: 'big' goes first at 0; 'mid' cannot share its time, so sits above it;
    # 'small' (later in time) fits in the smallest gap that holds it.
    its = [Interval("big", 0, 4, 300), Interval("mid", 1, 2, 200), Interval("small", 3, 5, 100)]
    sol = solve(its, "greedy", align=1)
    assert sol.offsets["big"] == 0 and sol.offsets["mid"] == 300
    assert sol.offsets["small"] == 300
    check_solution(its, sol.offsets)


def test_check_solution_rejects_overlap_and_misalignment():
    its = [Interval("a", 0, 2, 10), Interval("b", 1, 3, 10)]
    with pytest.raises(PlanError, match="overlap"):
        check_solution(its, {"a": 0, "b": 5})
    with pytest.raises(PlanError, match="offset"):
        check_solution(its, {"a": 0, "b": 65}, align=64)
    check_solution(its, {"a": 0, "b": 64}, align=64)


def test_bad_input_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match="strategy"):
        solve([], "fastest")
    with pytest.raises(PlanError, match="unique"):
        solve([Interval(1, 0, 1, 1), Interval(1, 0, 1, 1)])
    bad = tmp_path / "bad.csv"
    bad.write_text("id,lower,upper,size\nx,0,one,4\n")
    with pytest.raises(PlanError, match="bad.csv:2"):
        read_intervals_csv(str(bad))


def test_minimalloc_worked_example(tmp_path):
    csv = tmp_path / "input.12.csv"
    csv.write_text("id,lower,upper,size\nb1,0,3,4\nb2,3,9,4\nb3,0,9,4\nb4,9,21,4\nb5,0,21,4\n")
    its = read_intervals_csv(str(csv))
    sol = solve(its, "default", align=1)
    check_solution(its, sol.offsets, 1, capacity=12)
    assert sol.peak == sol.lower_bound == 12 and sol.proven_optimal


@pytest.mark.skipif(not MINIMALLOC.is_dir(), reason="MiniMalloc benchmark not present")
def test_minimalloc_instance_beats_greedy_and_is_valid():
    its = read_intervals_csv(str(MINIMALLOC / "C.1048576.csv"))
    greedy = solve(its, "greedy", align=1)
    ours = solve(its, "default", align=1, time_limit=20.0)
    check_solution(its, ours.offsets, 1)
    assert ours.peak < greedy.peak
    assert ours.peak <= 1_048_576


@pytest.mark.skipif(not MINIMALLOC.is_dir(), reason="MiniMalloc benchmark not present")
def test_minimalloc_instance_i_within_five_percent_of_capacity():
    # No fixed ordering reaches I's bound (1,048,576) in minutes, and the first three fail for
    # 100,000 nodes and more at 1.035-1.05x too; a latest-end-first ordering reaches those targets
    # with no backtracking, so the descent tries all orderings (it stayed at 1.0625x without).
    its = read_intervals_csv(str(MINIMALLOC / "I.1048576.csv"))
    # It gets there within the descent (the first 15% of the limit: ~30,000 nodes); the limit leaves
    # room for a machine several times slower than the 10 s benchmark's.
    sol = solve(its, "default", align=1, time_limit=15.0)
    check_solution(its, sol.offsets, 1)
    assert sol.peak <= 1.05 * 1_048_576


def guillotine(seed: int, pieces: int, width: int = 64, height: int = 4096) -> list[Interval]:
    """A perfect packing cut into `pieces` rectangles: lifetime = x range, size = y range. Every time
    step is full, so the optimum peak is exactly `height` (= the lower bound)."""
    import random

    rng = random.Random(seed)
    rects = [(0, width, 0, height)]
    while len(rects) < pieces:
        k = max(range(len(rects)), key=lambda k: (rects[k][1] - rects[k][0]) * (rects[k][3] - rects[k][2]) * rng.random())
        x0, x1, y0, y1 = rects[k]
        if rng.random() < 0.5 and x1 - x0 > 1:
            c = rng.randint(x0 + 1, x1 - 1)
            rects[k:k + 1] = [(x0, c, y0, y1), (c, x1, y0, y1)]
        elif y1 - y0 > 1:
            c = rng.randint(y0 + 1, y1 - 1)
            rects[k:k + 1] = [(x0, x1, y0, c), (x0, x1, c, y1)]
    return [Interval(k, x0, x1, y1 - y0) for k, (x0, x1, y0, y1) in enumerate(rects)]


def test_search_packs_perfect_instances_that_greedy_cannot():
    greedy_above = 0
    for seed in range(6):
        its = guillotine(seed, 60)
        assert lower_bound(its, 1) == 4096
        sol = solve(its, "default", align=1, time_limit=20.0)
        check_solution(its, sol.offsets, 1)
        assert sol.peak == 4096 and sol.proven_optimal
        greedy_above += solve(its, "greedy", align=1).peak > 4096
    assert greedy_above >= 4
