"""Human views of a MemoryPlan: a text summary and an SVG lifetime x offset chart."""

from __future__ import annotations

from html import escape

from edgert.model.graph import Graph
from edgert.plan.plan import MemoryPlan, format_size

_COLORS = {None: "#4e79a7", "view": "#f28e2b", "inplace": "#59a14f", "concat": "#b07aa1", "scratch": "#9c9c9c"}


def summary_text(plan: MemoryPlan, graph: Graph) -> str:
    """A few lines: arena, lower bound, naive, persistent, strategy, order, aliases, time."""
    kinds: dict[str, int] = {}
    for p in plan.placements.values():
        if p.alias_kind:
            kinds[p.alias_kind] = kinds.get(p.alias_kind, 0) + 1
    gap = plan.arena_bytes - plan.lower_bound_bytes
    lines = [
        f"model        {graph.path or '(bytes)'}  sha256 {plan.model_sha256[:16]}...",
        f"arena        {plan.arena_bytes:>12,} B  ({format_size(plan.arena_bytes)}) = "
        f"{plan.persistent_bytes:,} persistent + {plan.activation_bytes:,} activations",
        f"lower bound  {plan.lower_bound_bytes:>12,} B  (gap {gap:,} B, "
        f"{100.0 * gap / max(1, plan.lower_bound_bytes):.2f}%)",
        f"no aliasing  {plan.no_alias_lower_bound_bytes:>12,} B  lower bound with every aliasing rule off",
        f"naive        {plan.naive_bytes:>12,} B  every tensor its own buffer",
        f"strategy     {plan.strategy}, order {plan.order_kind} ({len(plan.order)} steps, "
        f"{len(plan.folded)} ops folded at load), aliasing {plan.aliasing.label()}",
        f"aliases      " + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"),
        f"scratch      {sum(s.size for s in plan.scratch.values()):,} B over {len(plan.scratch)} ops",
        f"plan time    {plan.plan_ms:.1f} ms",
    ]
    if plan.budget is not None:
        lines.append(f"budget       {plan.budget:>12,} B  ({format_size(plan.budget)}), "
                     f"{plan.budget - plan.arena_bytes:,} B to spare")
    return "\n".join(lines)


def svg(plan: MemoryPlan, graph: Graph, width: int = 1000, height: int = 600) -> str:
    """Activation region chart: x = step, y = offset; one rectangle per tensor or scratch, <title> on hover."""
    sg = graph.subgraphs[plan.subgraph]
    steps = max(1, len(plan.order))
    top = max(1, plan.activation_bytes)
    margin_l, margin_b, margin_t = 70, 30, 30
    w, h = width - margin_l - 10, height - margin_b - margin_t
    sx = w / steps
    sy = h / top

    def rect(first: int, last: int, lo: int, hi: int, color: str, title: str, opacity: float) -> str:
        x = margin_l + first * sx
        y = margin_t + h - hi * sy
        return (f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(0.5, (last - first + 1) * sx):.2f}" '
                f'height="{max(0.5, (hi - lo) * sy):.2f}" fill="{color}" fill-opacity="{opacity}" '
                f'stroke="#222" stroke-width="0.3"><title>{escape(title)}</title></rect>')

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{margin_l}" y="18">{escape(graph.path or "model")}: activations {plan.activation_bytes:,} B, '
        f'lower bound {plan.lower_bound_bytes - plan.persistent_bytes:,} B '
        f'({plan.strategy}, order {plan.order_kind}, aliasing {plan.aliasing.label()})</text>',
        f'<rect x="{margin_l}" y="{margin_t}" width="{w}" height="{h}" fill="none" stroke="#000"/>',
    ]
    for p in sorted(plan.placements.values(), key=lambda p: p.alias_of is not None):
        if p.region != "activation" or p.size == 0:
            continue
        kind = p.alias_kind
        title = (f"{p.name} (tensor {p.index}) {tuple(sg.tensors[p.index].shape)} {sg.tensors[p.index].dtype}\n"
                 f"offset {p.offset:,} size {p.size:,} steps {p.first}-{p.last}"
                 + (f"\n{kind} of {plan.placements[p.alias_of].name}" if kind else ""))
        parts.append(rect(p.first, p.last, p.offset, p.offset + p.size, _COLORS.get(kind, "#4e79a7"), title,
                          0.35 if kind else 0.75))
    for s in plan.scratch.values():
        if s.step >= 0:
            parts.append(rect(s.step, s.step, s.offset, s.offset + s.size, _COLORS["scratch"],
                              f"scratch of op {s.op} ({sg.operators[s.op].name}): {s.size:,} B @ {s.offset:,}", 0.8))
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        y = margin_t + h - frac * h
        parts.append(f'<text x="{margin_l - 4}" y="{y + 4:.1f}" text-anchor="end">{int(frac * top):,}</text>')
    parts.append(f'<text x="{margin_l + w / 2}" y="{height - 8}" text-anchor="middle">step (0..{steps - 1})</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
