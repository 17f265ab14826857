"""MemoryPlan: where every non-constant tensor of a subgraph lives, checked against a budget, to/from JSON.

Layout handed to the runtime: one arena `[ persistent | activations ]`. Persistent offsets are
relative to the persistent region, activation and scratch offsets to the activation region (which
several models may share). Root offsets are 64-byte aligned; an alias's offset is its root's
offset plus the byte offset of its first element (informational: the runtime builds alias views
from `alias_of` / `alias_kind` / `concat_axis` / `concat_start`, recursively).

Folded ops (`MemoryPlan.folded`) run once at load, in that order; their outputs are persistent.
Their kernel scratch, if any, sits at offset 0 of the activation region and is valid only at load.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from edgert.errors import BudgetExceeded, PlanError
from edgert.model.graph import Graph, Operator, Subgraph
from edgert.plan import offsets as _offsets
from edgert.plan.aliasing import Alias, Aliasing, _info, find_aliases
from edgert.plan.lifetimes import (Lifetime, check_order, fold_ops, lifetimes, live_bytes,
                                   persistent_tensors, state_bytes)
from edgert.plan.order import candidate_orders

ALIGN = 64
JSON_VERSION = 1

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3}


def parse_size(text: str | int) -> int:
    """'8MiB' -> 8388608, '64 kB' -> 64000, '1.5GiB', 4096 -> 4096. Raises ValueError on anything else."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 64KiB, 8MiB, 1.5GiB, 10MB)")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value != int(value):
        raise ValueError(f"size is not a whole number of bytes: {text!r}")
    return int(value)


def format_size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


@dataclass
class Placement:
    """Where one tensor lives. first/last are steps in MemoryPlan.order (see plan.lifetimes)."""

    index: int
    name: str
    region: str  # "activation" | "persistent"
    offset: int
    size: int
    first: int
    last: int
    alias_of: int | None = None
    alias_kind: str | None = None  # None | "view" | "inplace" | "concat"
    concat_axis: int | None = None
    concat_start: int | None = None
    strided: bool = False  # concat sub-view that is not contiguous


@dataclass
class ScratchPlacement:
    """Kernel scratch of one op: activation-region bytes valid during its step only."""

    op: int
    offset: int
    size: int
    step: int  # step in `order`; -1 for a folded op (valid only at load)


@dataclass
class MemoryPlan:
    arena_bytes: int
    activation_bytes: int
    persistent_bytes: int
    lower_bound_bytes: int  # persistent + max over steps of live activation/scratch bytes (this plan's aliasing)
    naive_bytes: int  # persistent + every activation and scratch in its own buffer, no aliasing
    strategy: str
    order_kind: str  # "file" | "optimized" | "given"
    order: list[int]
    folded: list[int]
    placements: dict[int, Placement]
    scratch: dict[int, ScratchPlacement]
    aliasing: Aliasing
    plan_ms: float
    model_sha256: str
    budget: int | None = None
    subgraph: int = 0
    no_alias_lower_bound_bytes: int = 0  # the lower bound with every aliasing rule off (same order)
    stats: dict = field(default_factory=dict)
    # op -> persistent bytes its kernel derives once from constants (repacked weights), step -2
    packed: dict[int, ScratchPlacement] = field(default_factory=dict)

    @property
    def gap_bytes(self) -> int:
        return self.arena_bytes - self.lower_bound_bytes

    def to_json(self) -> dict:
        return {
            "version": JSON_VERSION,
            "model_sha256": self.model_sha256,
            "subgraph": self.subgraph,
            "arena_bytes": self.arena_bytes,
            "activation_bytes": self.activation_bytes,
            "persistent_bytes": self.persistent_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "no_alias_lower_bound_bytes": self.no_alias_lower_bound_bytes,
            "naive_bytes": self.naive_bytes,
            "strategy": self.strategy,
            "order": self.order_kind,
            "order_ops": list(self.order),
            "folded": list(self.folded),
            "aliasing": asdict(self.aliasing),
            "budget": self.budget,
            "plan_ms": round(self.plan_ms, 3),
            "tensors": [asdict(p) for p in sorted(self.placements.values(), key=lambda p: p.index)],
            "scratch": [asdict(s) for s in sorted(self.scratch.values(), key=lambda s: s.op)],
            "packed": [asdict(s) for s in sorted(self.packed.values(), key=lambda s: s.op)],
        }

    @classmethod
    def from_json(cls, d: dict, graph: Graph) -> "MemoryPlan":
        """Rebuild a plan for `graph`; PlanError if it was made for another model or does not fit it."""
        if d.get("model_sha256") != graph.sha256:
            raise PlanError(
                f"plan was made for model sha256 {d.get('model_sha256')}, not for {graph.path or 'this model'} "
                f"(sha256 {graph.sha256})")
        if d.get("version") != JSON_VERSION:
            raise PlanError(f"plan JSON version {d.get('version')!r} is not {JSON_VERSION}")
        try:
            sg = graph.subgraphs[int(d.get("subgraph", 0))]
            placements = {int(t["index"]): Placement(**t) for t in d["tensors"]}
            scratch = {int(s["op"]): ScratchPlacement(**s) for s in d["scratch"]}
            packed = {int(s["op"]): ScratchPlacement(**s) for s in d.get("packed", [])}
            plan = cls(
                arena_bytes=int(d["arena_bytes"]), activation_bytes=int(d["activation_bytes"]),
                persistent_bytes=int(d["persistent_bytes"]), lower_bound_bytes=int(d["lower_bound_bytes"]),
                naive_bytes=int(d["naive_bytes"]), strategy=d["strategy"], order_kind=d["order"],
                order=[int(k) for k in d["order_ops"]], folded=[int(k) for k in d["folded"]],
                placements=placements, scratch=scratch, aliasing=Aliasing(**d["aliasing"]),
                plan_ms=float(d["plan_ms"]), model_sha256=d["model_sha256"], budget=d.get("budget"),
                subgraph=int(d.get("subgraph", 0)),
                no_alias_lower_bound_bytes=int(d.get("no_alias_lower_bound_bytes", 0)), packed=packed)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PlanError(f"malformed plan JSON: {exc!r}") from exc
        for p in placements.values():
            if not 0 <= p.index < len(sg.tensors) or sg.tensors[p.index].name != p.name:
                raise PlanError(f"plan JSON names tensor {p.index} {p.name!r}, which is not in the model")
        check_order(sg, plan.order, plan.folded)
        validate(plan, graph)
        return plan


# ---------------------------------------------------------------------------------------------


def _extent(p: Placement, sg: Subgraph, placements: dict[int, Placement]) -> tuple[int, int]:
    """[lo, hi) bytes a placement may touch within its region (a strided slice spans its rows)."""
    if not p.strided:
        return p.offset, p.offset + p.size
    parent = placements[p.alias_of]
    if parent.strided:  # slice of a slice: bounded by the parent's own span
        return _extent(parent, sg, placements)
    shape = sg.tensors[parent.index].shape
    outer = _prod(shape[:p.concat_axis])
    row = parent.size // max(1, outer)
    inner = row // max(1, shape[p.concat_axis])
    return p.offset, p.offset + (outer - 1) * row + sg.tensors[p.index].shape[p.concat_axis] * inner


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def validate(plan: MemoryPlan, graph: Graph) -> None:
    """Raise PlanError unless no two tensors live at once share a byte (aliases aside), roots are
    64-aligned, and everything fits its region."""
    sg = graph.subgraphs[plan.subgraph]
    pl = plan.placements

    def root(i: int) -> int:
        seen = set()
        while pl[i].alias_of is not None:
            if i in seen:
                raise PlanError(f"alias cycle at tensor {i}")
            seen.add(i)
            i = pl[i].alias_of
        return i

    regions = {"activation": plan.activation_bytes, "persistent": plan.persistent_bytes}
    items = []
    for p in pl.values():
        if p.region not in regions:
            raise PlanError(f"tensor {p.name!r}: unknown region {p.region!r}")
        if p.size != sg.tensors[p.index].nbytes and p.alias_of is None and p.region == "activation":
            raise PlanError(f"tensor {p.name!r}: size {p.size} != {sg.tensors[p.index].nbytes}")
        lo, hi = _extent(p, sg, pl)
        if p.alias_of is None and p.offset % ALIGN:
            raise PlanError(f"tensor {p.name!r}: offset {p.offset} not {ALIGN}-aligned")
        if lo < 0 or hi > regions[p.region]:
            raise PlanError(f"tensor {p.name!r}: bytes [{lo}, {hi}) outside its {p.region} region of {regions[p.region]}")
        if p.alias_of is not None:
            parent = pl[p.alias_of]
            plo, phi = _extent(parent, sg, pl)
            if parent.region != p.region or lo < plo or hi > phi:
                raise PlanError(f"tensor {p.name!r}: alias outside its parent {parent.name!r}")
            if p.alias_kind == "view" and parent.strided:
                raise PlanError(f"tensor {p.name!r}: view of strided slice {parent.name!r}")
        items.append((p.region, p.first, p.last, lo, hi, root(p.index), p.name))
    for s in plan.scratch.values():
        if s.offset % ALIGN or s.offset + s.size > plan.activation_bytes:
            raise PlanError(f"scratch of op {s.op}: [{s.offset}, {s.offset + s.size}) misplaced")
        if s.step >= 0:
            items.append(("activation", s.step, s.step, s.offset, s.offset + s.size, ("scratch", s.op), f"scratch of op {s.op}"))
    last_step = max(0, len(plan.order) - 1)
    for s in getattr(plan, "packed", {}).values():
        if s.offset % ALIGN or s.offset + s.size > plan.persistent_bytes:
            raise PlanError(f"packed data of op {s.op}: [{s.offset}, {s.offset + s.size}) misplaced")
        items.append(("persistent", 0, last_step, s.offset, s.offset + s.size, ("packed", s.op), f"packed data of op {s.op}"))
    items.sort(key=lambda x: (x[0], x[1]))
    active: list[tuple] = []
    for it in items:
        active = [a for a in active if a[0] == it[0] and a[2] >= it[1]]
        for a in active:
            if a[3] < it[4] and it[3] < a[4] and a[5] != it[5] and a[4] > a[3] and it[4] > it[3]:
                raise PlanError(
                    f"{a[6]!r} (steps {a[1]}-{a[2]}, bytes {a[3]}-{a[4]}) and {it[6]!r} "
                    f"(steps {it[1]}-{it[2]}, bytes {it[3]}-{it[4]}) share memory while both live")
        active.append(it)
    _validate_alias_groups(plan, pl, sg)


def _validate_alias_groups(plan: MemoryPlan, pl: dict[int, Placement], sg: Subgraph) -> None:
    """In-place: nothing else in the group may be read after the overwriting step.
    Concat: sibling slices must not overlap along the axis."""
    children: dict[int, list[Placement]] = {}
    for p in pl.values():
        if p.alias_of is not None:
            children.setdefault(p.alias_of, []).append(p)

    def descendants(i: int) -> set[int]:
        out, stack = set(), [i]
        while stack:
            x = stack.pop()
            out.add(x)
            stack.extend(c.index for c in children.get(x, ()))
        return out

    for p in pl.values():
        if p.alias_kind == "inplace":
            r = p.index
            while pl[r].alias_of is not None:
                r = pl[r].alias_of
            newer = descendants(p.index)
            for m in descendants(r) - newer:
                if pl[m].last > p.first:
                    raise PlanError(f"{p.name!r} overwrites {pl[p.alias_of].name!r} at step {p.first} but "
                                    f"{pl[m].name!r} is read until step {pl[m].last}")
    for parent, kids in children.items():
        spans = sorted((c.concat_start, c.concat_start + sg.tensors[c.index].shape[c.concat_axis], c.name) for c in kids if c.alias_kind == "concat")
        for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise PlanError(f"concat slices {an!r} and {bn!r} overlap in {pl[parent].name!r}")


# ---------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    order: list[int]
    life: dict[int, Lifetime]
    aliases: dict[int, Alias]
    roots: dict[int, tuple[int, int, int]]  # root tensor -> (first, last, bytes)
    scratch: dict[int, tuple[int, int]]  # op -> (step, bytes)
    lower_bound: int


def _layout(sg: Subgraph, order: list[int], persistent: set[int], aliasing: Aliasing, kinfo) -> _Layout:
    """Lifetimes, aliases and root intervals for one order. A concat placement stretches the
    output's lifetime back to its earliest placed input, so it is kept only if the bound does not rise."""
    life = lifetimes(sg, order, persistent)
    scratch = {}
    for step, k in enumerate(order):
        nbytes = _info(kinfo, sg.operators[k])[0]
        if nbytes > 0:
            scratch[k] = (step, nbytes)

    def build(concat_inputs: set[int]) -> _Layout:
        aliases = find_aliases(sg, order, life, aliasing=aliasing, persistent=persistent, kernel_info=kinfo,
                               concat_inputs=concat_inputs)

        def root(t: int) -> int:
            while t in aliases:
                t = aliases[t].parent
            return t

        roots: dict[int, tuple[int, int, int]] = {}
        for t, lt in life.items():
            r = root(t)
            f, l, size = roots.get(r, (lt.first, lt.last, sg.tensors[r].nbytes))
            roots[r] = (min(f, lt.first), max(l, lt.last), size)
        spans = list(roots.values()) + [(st, st, b) for st, b in scratch.values()]
        lb = _offsets.lower_bound([_offsets.Interval(j, f, l + 1, s) for j, (f, l, s) in enumerate(spans)], ALIGN)
        return _Layout(order, life, aliases, roots, scratch, lb)

    best = build(set())
    if aliasing.concat:
        # Per concat: all its inputs, or only the latest-written ones. An input written just before
        # the concat costs nothing to place; an early skip connection stretches the output over
        # everything in between. Keep the choice with the lowest bound (then the most aliases),
        # and only if the bound does not rise.
        allowed: set[int] = set()
        first_of = {t: lt.first for t, lt in life.items()}
        for k in order:
            op = sg.operators[k]
            if op.opcode != "CONCATENATION":
                continue
            inputs = sorted({i for i in op.inputs if i in first_of}, key=lambda i: -first_of[i])
            choice, choice_set = best, None
            for n_latest in range(len(inputs), 0, -1):
                cand = build(allowed | set(inputs[:n_latest]))
                if len(cand.aliases) > len(best.aliases) and cand.lower_bound <= best.lower_bound and (
                        choice_set is None or (cand.lower_bound, -len(cand.aliases))
                        < (choice.lower_bound, -len(choice.aliases))):
                    choice, choice_set = cand, set(inputs[:n_latest])
            if choice_set is not None:
                allowed |= choice_set
                best = choice
    return best


def plan(graph: Graph, *, budget: int | None = None, strategy: str = "default",
         order: str | list[int] = "file", aliasing: Aliasing = Aliasing(),
         kernel_info: Callable[[Operator], Any] | None = None,
         time_limit: float = 0.5, subgraph: int = 0) -> MemoryPlan:
    """Plan the memory of one subgraph of `graph`. Raises BudgetExceeded when it does not fit `budget`."""
    start = time.perf_counter()
    if strategy not in _offsets.STRATEGIES:
        raise PlanError(f"unknown strategy {strategy!r}; choose one of {', '.join(_offsets.STRATEGIES)}")
    if not 0 <= subgraph < len(graph.subgraphs):
        raise PlanError(f"model has {len(graph.subgraphs)} subgraphs; there is no subgraph {subgraph}")
    sg = graph.subgraphs[subgraph]
    folded = fold_ops(sg)
    folded_set = set(folded)
    persistent = persistent_tensors(sg, folded)
    run_ops = [op.index for op in sg.operators if op.index not in folded_set]

    if isinstance(order, str):
        if order == "file":
            layout, kind = _layout(sg, run_ops, persistent, aliasing, kernel_info), "file"
        elif order == "optimized":
            layout, kind = _best_order(sg, run_ops, persistent, aliasing, kernel_info), "optimized"
        else:
            raise PlanError(f"unknown order {order!r}; use 'file', 'optimized' or a list of op indices")
    else:
        given = [int(k) for k in order]
        check_order(sg, given, folded)
        layout, kind = _layout(sg, given, persistent, aliasing, kernel_info), "given"

    result = _assemble(graph, sg, subgraph, layout, kind, folded, persistent, strategy, aliasing,
                       kernel_info, time_limit, start)
    result.budget = budget
    if budget is not None and result.arena_bytes > budget:
        _raise_budget(graph, result, budget, strategy=strategy, order=order, aliasing=aliasing,
                      kernel_info=kernel_info, time_limit=time_limit, subgraph=subgraph)
    return result


def _best_order(sg, run_ops, persistent, aliasing, kinfo) -> _Layout:
    """Score candidate orders with aliasing on; keep the file order unless another is strictly lower."""
    sizes = {t: lt_size for t, lt_size in
             ((t, sg.tensors[t].nbytes) for t in lifetimes(sg, run_ops, persistent))}
    scratch = {k: _info(kinfo, sg.operators[k])[0] for k in run_ops}
    best = _layout(sg, run_ops, persistent, aliasing, kinfo)
    for cand in candidate_orders(sg, run_ops, sizes, scratch):
        lay = _layout(sg, cand, persistent, aliasing, kinfo)
        if lay.lower_bound < best.lower_bound:
            best = lay
    return best


def _assemble(graph, sg, subgraph, layout: _Layout, kind, folded, persistent, strategy, aliasing,
              kinfo, time_limit, start) -> MemoryPlan:
    n = max(1, len(layout.order))
    # Persistent region: packed in tensor order, each 64-aligned.
    placements: dict[int, Placement] = {}
    pos = 0
    handle_ops = {o for op in sg.operators if op.opcode == "VAR_HANDLE" for o in op.outputs}
    for t in sorted(persistent):
        size = state_bytes(sg, t) if t in handle_ops else sg.tensors[t].nbytes
        placements[t] = Placement(t, sg.tensors[t].name, "persistent", pos, size, 0, n - 1)
        pos = _offsets.align_up(pos + size, ALIGN)
    packed: dict[int, ScratchPlacement] = {}
    for k in list(folded) + list(layout.order):
        info = kinfo(sg.operators[k]) if kinfo is not None else None
        size = int(getattr(info, "packed_bytes", 0) or 0)
        if size > 0:
            packed[k] = ScratchPlacement(k, pos, size, -2)
            pos = _offsets.align_up(pos + size, ALIGN)
    persistent_bytes = pos

    intervals = [_offsets.Interval(("t", r), f, l + 1, s) for r, (f, l, s) in layout.roots.items()]
    intervals += [_offsets.Interval(("s", k), st, st + 1, b) for k, (st, b) in layout.scratch.items()]
    left = max(0.01, time_limit - (time.perf_counter() - start))
    sol = _offsets.solve(intervals, strategy, align=ALIGN, time_limit=left)
    if strategy == "default":
        greedy = _offsets.solve(intervals, "greedy", align=ALIGN)
        if greedy.peak < sol.peak:  # the default never loses to greedy
            sol = greedy
    folded_scratch = {k: _info(kinfo, sg.operators[k])[0] for k in folded}
    activation_bytes = max([sol.peak] + list(folded_scratch.values()))

    def offset_of(t: int) -> int:
        a = layout.aliases.get(t)
        if a is None:
            return sol.offsets[("t", t)]
        return offset_of(a.parent) + a.byte_offset

    for t, lt in layout.life.items():
        a = layout.aliases.get(t)
        placements[t] = Placement(
            t, sg.tensors[t].name, "activation", offset_of(t), sg.tensors[t].nbytes, lt.first, lt.last,
            alias_of=a.parent if a else None, alias_kind=a.kind if a else None,
            concat_axis=a.axis if a else None, concat_start=a.start if a else None,
            strided=bool(a and a.strided))
    scratch = {k: ScratchPlacement(k, sol.offsets[("s", k)], b, st) for k, (st, b) in layout.scratch.items()}
    for k, b in folded_scratch.items():
        if b > 0:
            scratch[k] = ScratchPlacement(k, 0, b, -1)

    naive_act = sum(_offsets.align_up(sg.tensors[t].nbytes, ALIGN) for t in layout.life)
    naive_act += sum(_offsets.align_up(b, ALIGN) for _, b in layout.scratch.values())
    naive = persistent_bytes + max([naive_act] + list(folded_scratch.values()))
    plain = layout if not (aliasing.views or aliasing.inplace or aliasing.concat) else \
        _layout(sg, layout.order, persistent, Aliasing.none(), kinfo)
    no_alias = plain.lower_bound
    lb_act = max([layout.lower_bound] + list(folded_scratch.values()))
    result = MemoryPlan(
        arena_bytes=persistent_bytes + activation_bytes, activation_bytes=activation_bytes,
        persistent_bytes=persistent_bytes, lower_bound_bytes=persistent_bytes + lb_act,
        naive_bytes=naive, strategy=strategy, order_kind=kind, order=list(layout.order), folded=list(folded),
        placements=placements, scratch=scratch, aliasing=aliasing, plan_ms=0.0, model_sha256=graph.sha256,
        subgraph=subgraph, no_alias_lower_bound_bytes=persistent_bytes + max([no_alias] + list(folded_scratch.values())),
        stats={"solver": sol.stats, "aliases": len(layout.aliases), "peak_ops": _peak_ops(sg, layout),
               "alias_at_peak": _alias_at_peak(plain, layout)},
        packed=packed)
    result.plan_ms = (time.perf_counter() - start) * 1000
    return result


def _peak_steps(layout: _Layout) -> list[int]:
    """The steps where the most bytes are live (where any saving must happen)."""
    spans = [(f, l, sz) for f, l, sz in layout.roots.values()] + [(st, st, b) for st, b in layout.scratch.values()]
    live = live_bytes(spans, max(1, len(layout.order)))
    top = max(live, default=0)
    return [k for k, v in enumerate(live) if v == top and k < len(layout.order)]


def _peak_ops(sg: Subgraph, layout: _Layout) -> list[str]:
    return [sg.operators[layout.order[k]].name for k in _peak_steps(layout)]


def _alias_at_peak(plain: _Layout, aliased: _Layout) -> bool:
    """Whether every peak step of the unaliased layout holds a tensor together with the one it aliases.

    Only there can aliasing lower the bound: at a step where no alias pair is live at once, sharing
    memory frees no byte. False when the plan has no aliases.
    """
    pairs = [(aliased.life[t], aliased.life[a.parent]) for t, a in aliased.aliases.items()
             if t in aliased.life and a.parent in aliased.life]

    def shared(step: int) -> bool:
        return any(x.first <= step <= x.last and y.first <= step <= y.last for x, y in pairs)

    return bool(pairs) and all(shared(k) for k in _peak_steps(plain))


def _raise_budget(graph, result: MemoryPlan, budget: int, **opts) -> None:
    hints = []
    tries = []
    if opts["order"] == "file":
        tries.append(("--order optimized", dict(opts, order="optimized")))
    if opts["aliasing"] != Aliasing():
        tries.append(("aliasing on", dict(opts, aliasing=Aliasing())))
    if opts["strategy"] != "default":
        tries.append(("--strategy default", dict(opts, strategy="default")))
    if len(tries) > 1:
        tries.append(("all of these", dict(opts, order="optimized", aliasing=Aliasing(), strategy="default")))
    for label, kw in tries:
        try:
            alt = plan(graph, budget=None, **kw)
        except PlanError:
            continue
        if alt.arena_bytes < result.arena_bytes:
            fits = "fits" if alt.arena_bytes <= budget else "still over"
            hints.append(f"{label} would need {alt.arena_bytes:,} bytes ({fits})")
    where = f" for {graph.path}" if graph.path else ""
    msg = (f"memory plan{where} needs {result.arena_bytes:,} bytes ({format_size(result.arena_bytes)}: "
           f"{result.persistent_bytes:,} persistent + {result.activation_bytes:,} activations) but the budget is "
           f"{budget:,} bytes ({format_size(budget)}); lower bound for this order and aliasing is "
           f"{result.lower_bound_bytes:,} bytes")
    if hints:
        msg += "; " + "; ".join(hints)
    else:
        msg += "; no planner option lowers it: raise the budget"
    raise BudgetExceeded(msg, needed=result.arena_bytes, lower_bound=result.lower_bound_bytes, budget=budget,
                         hints=tuple(hints))
