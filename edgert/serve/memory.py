"""What the daemon's memory is made of: process RSS (private vs file-backed) beside the planned arena."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psutil


@dataclass(frozen=True)
class ProcessMemory:
    """Resident memory of one process. private = anonymous pages (heap, arena, JIT code);
    file_backed = resident pages of mapped files (shared libraries, the mmapped models), which the
    kernel can drop and re-read."""

    rss: int
    private: int
    file_backed: int
    peak_rss: int | None = None

    @classmethod
    def of(cls, pid: int | None = None) -> "ProcessMemory":
        proc = psutil.Process(pid)
        info = proc.memory_info()
        # On Linux psutil's `shared` is the resident file-backed + shmem pages (statm field 3).
        shared = int(getattr(info, "shared", 0))
        return cls(rss=int(info.rss), private=int(info.rss) - shared, file_backed=shared,
                   peak_rss=_peak_rss(proc))


def _peak_rss(proc: psutil.Process) -> int | None:
    try:
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@dataclass(frozen=True)
class ModelMemory:
    """Per-model figures from its plan."""

    name: str
    arena_bytes: int
    lower_bound_bytes: int | None
    persistent_bytes: int | None
    file_bytes: int | None


@dataclass(frozen=True)
class MemoryReport:
    """The `memory` control reply: process RSS next to what the planner promised."""

    process: ProcessMemory
    arena_bytes: int
    activation_bytes: int
    persistent_bytes: int
    budget: int | None
    rss_limit: int | None
    kernel_count: int
    models: tuple[ModelMemory, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["models"] = {m["name"]: {k: v for k, v in m.items() if k != "name"} for m in out["models"]}
        out["budget_free_bytes"] = None if self.budget is None else self.budget - self.arena_bytes
        out["over_rss_limit"] = self.rss_limit is not None and self.process.rss > self.rss_limit
        return out


def model_memory(name: str, plan: Any, file_bytes: int | None = None) -> ModelMemory:
    """ModelMemory from a MemoryPlan-like object (reads the attributes it has)."""
    return ModelMemory(name=name, arena_bytes=int(getattr(plan, "arena_bytes", 0)),
                       lower_bound_bytes=_opt_int(plan, "lower_bound_bytes"),
                       persistent_bytes=_opt_int(plan, "persistent_bytes"), file_bytes=file_bytes)


def _opt_int(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return None if value is None else int(value)


def format_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB' (for tables and STATUS= lines)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# -- tune: the smallest budget per planner option ------------------------------------------------

def tune(config: Any) -> dict[str, Any]:
    """For the config's models: the arena each planner option needs (= the smallest budget that
    fits), combined as the executor combines them (persistent regions add up, the activation
    region is shared: max over models), and what the configured budget leaves free."""
    from edgert.kernels.registry import OpContext, default_registry
    from edgert.model.reader import load_model
    from edgert.plan import Aliasing, plan
    from edgert.plan.offsets import STRATEGIES

    registry = default_registry()
    graphs = {m.name: load_model(m.path) for m in config.models}
    aliasings = {"all": Aliasing(), "none": Aliasing(views=False, inplace=False, concat=False)}
    configured_aliasing = Aliasing(**config.aliasing) if config.aliasing else Aliasing()
    rows = []
    for alias_name, aliasing in aliasings.items():
        for order in ("file", "optimized"):
            for strategy in STRATEGIES:
                per_model = {}
                for name, graph in graphs.items():
                    sg = graph.main
                    p = plan(graph, budget=None, strategy=strategy, order=order, aliasing=aliasing,
                                         kernel_info=lambda op, sg=sg: registry.info(OpContext.of(sg, op)))
                    per_model[name] = p
                persistent = sum(p.persistent_bytes for p in per_model.values())
                activation = max(p.activation_bytes for p in per_model.values())
                lower = persistent + max(p.lower_bound_bytes - p.persistent_bytes for p in per_model.values())
                rows.append({
                    "aliasing": alias_name, "order": order, "strategy": strategy,
                    "arena_bytes": persistent + activation, "persistent_bytes": persistent,
                    "activation_bytes": activation, "lower_bound_bytes": lower,
                    "configured": (aliasing == configured_aliasing and order == config.order
                                   and strategy == config.strategy),
                    "models": {n: {"arena_bytes": p.arena_bytes, "activation_bytes": p.activation_bytes,
                                   "persistent_bytes": p.persistent_bytes, "lower_bound_bytes": p.lower_bound_bytes}
                               for n, p in per_model.items()},
                })
    best = min(rows, key=lambda r: r["arena_bytes"])
    configured = next((r for r in rows if r["configured"]), None)
    budget = config.budget
    return {
        "models": list(graphs), "budget": budget, "options": rows,
        "smallest": {k: best[k] for k in ("aliasing", "order", "strategy", "arena_bytes")},
        "configured": None if configured is None else {
            k: configured[k] for k in ("aliasing", "order", "strategy", "arena_bytes", "lower_bound_bytes")},
        "budget_free_bytes": None if budget is None or configured is None else budget - configured["arena_bytes"],
        "fits": None if budget is None or configured is None else configured["arena_bytes"] <= budget,
    }


def format_tune(report: dict[str, Any]) -> str:
    """The tune report as a table."""
    lines = [f"models: {', '.join(report['models'])}",
             f"{'aliasing':8} {'order':9} {'strategy':8} {'arena (min budget)':>20} {'lower bound':>14}"]
    for r in sorted(report["options"], key=lambda r: (r["arena_bytes"], r["aliasing"], r["order"], r["strategy"])):
        mark = "  <- configured" if r["configured"] else ""
        lines.append(f"{r['aliasing']:8} {r['order']:9} {r['strategy']:8} {r['arena_bytes']:>14,} B "
                     f"{r['lower_bound_bytes']:>12,} B{mark}")
    s = report["smallest"]
    lines.append(f"smallest: {s['arena_bytes']:,} bytes ({format_bytes(s['arena_bytes'])}) with aliasing="
                 f"{s['aliasing']} order={s['order']} strategy={s['strategy']}")
    if report["budget"] is not None and report["configured"] is not None:
        free = report["budget_free_bytes"]
        verdict = "fits" if free >= 0 else "DOES NOT FIT"
        lines.append(f"budget {report['budget']:,} bytes ({format_bytes(report['budget'])}): configured plan needs "
                     f"{report['configured']['arena_bytes']:,}, {verdict}; "
                     f"{'free' if free >= 0 else 'short by'} {abs(free):,} bytes ({format_bytes(abs(free))})")
    return "\n".join(lines)
