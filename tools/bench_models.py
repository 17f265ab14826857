#!/usr/bin/env python3
"""Benchmark every shared model against LiteRT in the same run and write a markdown table.

    python tools/bench_models.py [--kind float|int8|all] [--threads 1 2] [--runs 30] [--out docs/benchmarks-float.md]

For each model: latency median of edgert, LiteRT XNNPACK and LiteRT builtin kernels (interleaved
in one process), the ratios, edgert's arena against its lower bound and LiteRT's own arena
(figures from ../shared/models/README.md), cold and warm start, and process RSS of each runtime
(fresh subprocess each). Skips cleanly when ../shared/models is absent.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "models"


def tflite_arena_figures() -> dict[str, int]:
    """'TFLite arena (builtin kernels)' column of ../shared/models/README.md, by file name."""
    readme = SHARED / "README.md"
    out: dict[str, int] = {}
    if not readme.is_file():
        return out
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0].endswith(".tflite") and re.fullmatch(r"[\d,]+", cells[7] or "-"):
            out[Path(cells[0]).name] = int(cells[7].replace(",", ""))
    return out


def models(kind: str) -> list[Path]:
    found = sorted(SHARED.rglob("*.tflite"))
    quant = [p for p in found if "int8" in p.name or "wakeword" in str(p)]
    if kind == "float":
        return [p for p in found if p not in quant]
    if kind == "int8":
        return quant
    return found


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="float", choices=["float", "int8", "all"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", help="substring filter on model paths")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} not present")
        return 0
    sys.path.insert(0, str(REPO))
    from edgert.bench import latency, startup_and_memory
    from edgert.errors import EdgeRTError

    tfl = tflite_arena_figures()
    rows, ratios = [], {t: {"xnnpack": [], "builtin": []} for t in args.threads}
    for path in models(args.kind):
        if args.only and args.only not in str(path):
            continue
        name = path.relative_to(SHARED).as_posix()
        row = {"model": name}
        try:
            for t in args.threads:
                lat = latency(path, threads=t, runs=args.runs)
                row[t] = lat
                ratios[t]["xnnpack"].append(lat["litert_xnnpack"]["edgert_ratio"])
                ratios[t]["builtin"].append(lat["litert_builtin"]["edgert_ratio"])
            if not args.no_memory:
                row["mem"] = startup_and_memory(path, threads=args.threads[0])
        except EdgeRTError as e:
            row["error"] = str(e).splitlines()[0]
        rows.append(row)
        print(name, "done" if "error" not in row else row["error"], flush=True)

    t0 = args.threads[0]
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on this project's CI machine kind (2 cores, x86-64), "
             f"{args.runs} interleaved runs per runtime, medians. Ratio = edgert / LiteRT (below 1: edgert faster).", ""]
    head = "| model | arena (bytes) | lower bound | TFLite arena |"
    sep = "|---|---:|---:|---:|"
    for t in args.threads:
        head += f" edgert ms ({t}t) | XNNPACK ms | builtin ms | / XNNPACK | / builtin |"
        sep += "---:|---:|---:|---:|---:|"
    if not args.no_memory:
        head += " cold start s | warm start s | RSS MiB edgert / XNNPACK / builtin | private MiB edgert / XNNPACK |"
        sep += "---:|---:|---|---|"
    lines += [head, sep]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | not run: {row['error']} |")
            continue
        lat0 = row[t0]
        tfl_arena = tfl.get(Path(row["model"]).name)
        cells = [row["model"], f"{lat0['edgert']['arena_bytes']:,}", f"{lat0['edgert']['lower_bound_bytes']:,}",
                 f"{tfl_arena:,}" if tfl_arena else ""]
        for t in args.threads:
            lat = row[t]
            cells += [f"{lat['edgert']['median_ms']:.3f}", f"{lat['litert_xnnpack']['median_ms']:.3f}",
                      f"{lat['litert_builtin']['median_ms']:.3f}", f"{lat['litert_xnnpack']['edgert_ratio']:.2f}",
                      f"{lat['litert_builtin']['edgert_ratio']:.2f}"]
        if "mem" in row:
            m = row["mem"]
            mib = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
            cells += [f"{m['edgert']['cold_start_s']:.2f}", f"{m['edgert']['warm_start_s']:.2f}",
                      " / ".join(mib(m[k]["rss_bytes"]) for k in ("edgert", "litert_xnnpack", "litert_builtin")),
                      " / ".join(mib(m[k]["private_bytes"]) for k in ("edgert", "litert_xnnpack"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for t in args.threads:
        lines.append(f"Geometric mean ratio, {t} thread(s): edgert / XNNPACK = {geomean(ratios[t]['xnnpack']):.2f}, "
                     f"edgert / builtin = {geomean(ratios[t]['builtin']):.2f} "
                     f"(slower than builtin on {sum(r > 1 for r in ratios[t]['builtin'])} of {len(ratios[t]['builtin'])} models).")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
