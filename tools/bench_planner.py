"""Benchmark the memory planner on every model in ../shared/models and on the MiniMalloc set; write docs/planner.md.

Usage: python tools/bench_planner.py [--models DIR] [--minimalloc DIR] [--time-limit S]
       [--mm-time-limit S] [--mm-runs N] [--out docs/planner.md] [--no-kernel-info]
       [--skip-minimalloc | --minimalloc-only]

Plans use the kernel registry's answers (scratch bytes, in-place inputs, strided outputs) unless
--no-kernel-info, so every figure includes kernel scratch. Times are wall-clock on this machine,
which is shared, so they are indicative.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import sys
import time
from pathlib import Path

from edgert.errors import UnsupportedOpError
from edgert.model import load_model
from edgert.plan import Aliasing, plan, validate
from edgert.plan.offsets import check_solution, lower_bound, read_intervals_csv, solve

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = 1_048_576
MARKER = "<!-- bench -->"


def kernel_info_for(graph, enabled: bool):
    if not enabled:
        return None
    from edgert.kernels.registry import OpContext, default_registry

    registry, sg = default_registry(), graph.main

    def info(op):
        try:
            return registry.info(OpContext.of(sg, op))
        except UnsupportedOpError:
            return None
    return info


def bench_models(models_dir: Path, time_limit: float, use_kernels: bool) -> tuple[list[str], list[dict]]:
    rows = []
    files = sorted(glob.glob(str(models_dir / "**" / "*.tflite"), recursive=True))
    for f in files:
        graph = load_model(f)
        kinfo = kernel_info_for(graph, use_kernels)
        r = {"model": os.path.relpath(f, models_dir), "ops": len(graph.main.operators)}
        none, on = Aliasing.none(), Aliasing()
        p_naive = plan(graph, strategy="naive", aliasing=none, kernel_info=kinfo)
        p_greedy = plan(graph, strategy="greedy", aliasing=none, kernel_info=kinfo)
        p_def = plan(graph, aliasing=none, kernel_info=kinfo, time_limit=time_limit)
        p_def_opt = plan(graph, aliasing=none, order="optimized", kernel_info=kinfo, time_limit=time_limit)
        p_al = plan(graph, aliasing=on, kernel_info=kinfo, time_limit=time_limit)
        p_al_opt = plan(graph, aliasing=on, order="optimized", kernel_info=kinfo, time_limit=time_limit)
        for p in (p_naive, p_greedy, p_def, p_def_opt, p_al, p_al_opt):
            validate(p, graph)
        kinds = {}
        for pl in p_al.placements.values():
            if pl.alias_kind:
                kinds[pl.alias_kind] = kinds.get(pl.alias_kind, 0) + 1
        r.update(
            folded=len(p_def.folded), persistent=p_def.persistent_bytes,
            naive=p_naive.arena_bytes, lb=p_def.lower_bound_bytes, greedy=p_greedy.arena_bytes,
            default=p_def.arena_bytes, default_opt=p_def_opt.arena_bytes, lb_opt=p_def_opt.lower_bound_bytes,
            alias_lb=p_al.lower_bound_bytes, alias=p_al.arena_bytes, alias_opt=p_al_opt.arena_bytes,
            aliases=kinds, peak_ops=sorted(set(p_def.stats.get("peak_ops", []))),
            alias_at_peak=bool(p_al.stats.get("alias_at_peak")), ms=p_al.plan_ms, ms_max=max(p.plan_ms for p in (p_def, p_def_opt, p_al, p_al_opt)))
        rows.append(r)
        print(f"{r['model']}: naive {r['naive']:,} lb {r['lb']:,} greedy {r['greedy']:,} default {r['default']:,} "
              f"alias {r['alias']:,} alias+opt {r['alias_opt']:,} ({r['ms_max']:.0f} ms)", file=sys.stderr)
    return files, rows


def bench_minimalloc(mm_dir: Path, time_limit: float, runs: int = 1) -> list[dict]:
    """`runs` consecutive passes over the set (the solver's result depends on machine load)."""
    rows = []
    for f in sorted(glob.glob(str(mm_dir / "*.csv"))):
        name = os.path.basename(f)
        if not name[0].isupper():
            continue  # the small worked example is not part of the challenging set
        intervals = read_intervals_csv(f)
        greedy = solve(intervals, "greedy", align=1)
        check_solution(intervals, greedy.offsets, 1)
        rows.append({"instance": name, "path": f, "buffers": len(intervals), "lb": lower_bound(intervals, 1),
                     "greedy": greedy.peak, "ours": [], "seconds": []})
    for run in range(runs):
        for r in rows:
            intervals = read_intervals_csv(r["path"])
            t = time.perf_counter()
            ours = solve(intervals, "default", align=1, time_limit=time_limit)
            dt = time.perf_counter() - t
            check_solution(intervals, ours.offsets, 1)
            r["ours"].append(ours.peak)
            r["seconds"].append(dt)
            print(f"run {run + 1} {r['instance']}: greedy {r['greedy']:,} ours {ours.peak:,} "
                  f"({ours.peak / CAPACITY:.4f}) {dt:.2f}s", file=sys.stderr)
    return rows


def pct(a: int, b: int) -> str:
    return f"{100.0 * (a - b) / b:+.2f}%" if b else "n/a"


def markdown(rows: list[dict], mm: list[dict], args) -> str:
    out = []
    out.append("## Benchmark\n")
    out.append(f"Generated by `tools/bench_planner.py` on {platform.machine()} / Python {platform.python_version()}, "
               f"{time.strftime('%Y-%m-%d')}. Kernel info: {'kernel registry' if not args.no_kernel_info else 'none'} "
               f"(scratch, in-place, strided outputs), so every figure includes kernel scratch. Solver time limit "
               f"{args.time_limit} s per plan for models, {args.mm_time_limit} s per MiniMalloc instance. "
               "The machine is shared with other work, so times are indicative.\n")
    out.append("All byte figures are whole arenas (persistent + activations). *lower bound* is the max over steps "
               "of live bytes (64-byte padding counted for all but one buffer) with no aliasing, file order; "
               "*greedy* is TFLite's GreedyBySize best fit; *default* is our solver; *alias* columns switch on "
               "views, in-place and concat placement. Plan time is the slowest of the default-strategy plans.\n")
    out.append("| model | ops | folded | persistent | naive | lower bound | greedy best fit | default | default vs LB "
               "| optimized order | alias LB | alias | alias + optimized | aliases | peak step ops (no alias) "
               "| alias pair live at every peak step | plan ms |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|")
    for r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["aliases"].items())) or "-"
        out.append(
            f"| {r['model']} | {r['ops']} | {r['folded']} | {r['persistent']:,} | {r['naive']:,} | {r['lb']:,} | "
            f"{r['greedy']:,} | {r['default']:,} | {pct(r['default'], r['lb'])} | {r['default_opt']:,} | "
            f"{r['alias_lb']:,} | {r['alias']:,} | {r['alias_opt']:,} | {kinds} | {', '.join(r['peak_ops'])} | "
            f"{'yes' if r['alias_at_peak'] else 'no'} | {r['ms_max']:.0f} |")
    n = len(rows)
    at_lb = sum(r["default"] <= r["lb"] for r in rows)
    worst = max((r["default"] / r["lb"] for r in rows if r["lb"]), default=1.0)
    opp = [r for r in rows if r["aliases"]]
    below = [r for r in opp if r["alias"] < r["lb"]]
    out.append("")
    out.append(f"- default solver at the lower bound (no aliasing, file order): **{at_lb}/{n}** models "
               f"({100.0 * at_lb / max(1, n):.0f}%); worst ratio {worst:.4f}.")
    out.append(f"- with aliasing, arena below the no-alias lower bound: **{len(below)}/{len(opp)}** models that have "
               f"an aliasing opportunity; not below: "
               + (", ".join(r["model"] for r in opp if r not in below) or "none") + ".")
    at_peak = [r for r in opp if r["alias_at_peak"]]
    out.append(f"- an alias pair is live at every peak step (the only place aliasing can free bytes) on "
               f"**{len(at_peak)}** of them; the arena is below the no-alias lower bound on "
               f"**{sum(r['alias'] < r['lb'] for r in at_peak)}/{len(at_peak)}** of those. On the others no alias the "
               "planner forms has both its tensors live at a peak step, so sharing memory frees no byte there "
               "(typically the peak is a conv whose input, output and scratch must coexist).")
    out.append(f"- greedy best fit above the lower bound on {sum(r['greedy'] > r['lb'] for r in rows)} models.")
    out.append(f"- optimized order below file order (no aliasing) on "
               f"{sum(r['default_opt'] < r['default'] for r in rows)} models; slowest plan {max((r['ms_max'] for r in rows), default=0):.0f} ms "
               f"(largest graph {max((r['ops'] for r in rows), default=0)} ops).")
    out.append("")
    if mm:
        out.append("### MiniMalloc challenging set\n")
        out.append(f"Capacity {CAPACITY:,} for every instance (the benchmark's known feasible capacity). *lower bound* is "
                   "the max over time of live bytes. Greedy is TFLite's best fit; ours is the default strategy "
                   "(portfolio of canonical branch-and-bound searches, MiniMalloc-style) under the time limit.\n")
        runs = len(mm[0]["ours"])
        first = "our peak (run 1)" if runs > 1 else "our peak"
        extra = "".join(f" run {k + 1} | run {k + 1} / capacity |" for k in range(1, runs))
        out.append(f"| instance | buffers | lower bound | greedy peak | greedy / capacity | {first} | ours / capacity "
                   f"| time s |{extra}")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|" * (runs - 1))
        for r in mm:
            later = "".join(f" {p:,} | {p / CAPACITY:.4f} |" for p in r["ours"][1:])
            out.append(f"| {r['instance']} | {r['buffers']} | {r['lb']:,} | {r['greedy']:,} | {r['greedy'] / CAPACITY:.3f} | "
                       f"{r['ours'][0]:,} | {r['ours'][0] / CAPACITY:.4f} | {r['seconds'][0]:.2f} |{later}")

        def count(limit: float) -> str:
            per_run = [sum(r["ours"][k] <= limit for r in mm) for k in range(runs)]
            every = sum(all(p <= limit for p in r["ours"]) for r in mm)
            detail = f" (per run: {', '.join(map(str, per_run))})" if runs > 1 and len(set(per_run)) > 1 else ""
            return f"**{every}/{len(mm)}**{' in every run' if runs > 1 else ''}{detail}"
        worst = max(p / CAPACITY for r in mm for p in r["ours"])
        out.append("")
        out.append(f"- {f'{runs} consecutive runs' if runs > 1 else 'one run'} of {args.mm_time_limit} s per instance: at or "
                   f"below capacity {count(CAPACITY)}; within 1.05x {count(1.05 * CAPACITY)}; worst {worst:.4f}x; "
                   "every placement checked valid.")
        out.append("")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(ROOT.parent / "shared" / "models"))
    ap.add_argument("--minimalloc", default=str(ROOT.parent / "shared" / "benchmarks" / "minimalloc"))
    ap.add_argument("--time-limit", type=float, default=0.5)
    ap.add_argument("--mm-time-limit", type=float, default=10.0)
    ap.add_argument("--mm-runs", type=int, default=2,
                    help="consecutive passes over the MiniMalloc set, one table column pair each")
    ap.add_argument("--out", default=str(ROOT / "docs" / "planner.md"),
                    help="markdown file; text above a line '<!-- bench -->' is kept, the rest replaced")
    ap.add_argument("--no-kernel-info", action="store_true")
    ap.add_argument("--skip-minimalloc", action="store_true")
    ap.add_argument("--minimalloc-only", action="store_true",
                    help="only the MiniMalloc set: print its table, leave the --out file alone")
    args = ap.parse_args()
    if args.mm_runs < 1:
        ap.error("--mm-runs must be at least 1")
    if args.minimalloc_only:
        mm = bench_minimalloc(Path(args.minimalloc), args.mm_time_limit, args.mm_runs)
        table = markdown([], mm, args).split("### MiniMalloc challenging set")[1]
        print("### MiniMalloc challenging set" + table)
        return 0
    _, rows = bench_models(Path(args.models), args.time_limit, not args.no_kernel_info)
    mm = [] if args.skip_minimalloc else bench_minimalloc(Path(args.minimalloc), args.mm_time_limit, args.mm_runs)
    text = markdown(rows, mm, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = ""
    if out.exists() and MARKER in out.read_text():
        head = out.read_text().split(MARKER)[0] + MARKER + "\n\n"
    out.write_text(head + text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
