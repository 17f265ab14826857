"""`edgert ...` subcommands: parse arguments, call the library, print. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from edgert.errors import EdgeRTError

# Each subcommand: name -> (add_arguments(parser), run(args) -> exit code). Adding a command is
# adding one function pair and one line in COMMANDS.


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _add_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--json", action="store_true", help="machine-readable output (format in README)")


def _run_inspect(args: argparse.Namespace) -> int:
    from edgert.inspect import format_inspect, inspect_graph
    from edgert.kernels.registry import default_registry
    from edgert.model import load_model

    info = inspect_graph(load_model(args.model), default_registry())
    if args.json:
        _print_json(info)
    else:
        print(format_inspect(info))
    return 0


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="kernel/BLAS threads (default 1, reproducible)")
    p.add_argument("--aliasing", default="all",
                   help="planner aliasing: all, none, or a comma list of views,inplace,concat (default all)")
    p.add_argument("--strategy", default="default", help="offset placement strategy (see `edgert plan --help`)")
    p.add_argument("--order", default="file", choices=["file", "optimized"], help="execution order")


def _executor_options(args: argparse.Namespace) -> dict:
    from edgert.plan.plan import Aliasing

    if args.aliasing == "all":
        aliasing = Aliasing()
    elif args.aliasing == "none":
        aliasing = Aliasing.none()
    else:
        chosen = {a.strip() for a in args.aliasing.split(",") if a.strip()}
        unknown = chosen - {"views", "inplace", "concat"}
        if unknown:
            raise SystemExit(f"edgert: --aliasing: unknown option(s) {sorted(unknown)}")
        aliasing = Aliasing(views="views" in chosen, inplace="inplace" in chosen, concat="concat" in chosen)
    return {"threads": args.threads, "aliasing": aliasing, "strategy": args.strategy, "order": args.order}


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--input", help=".npz with one array per model input, keyed by input name "
                                   "(or arr_0, arr_1, ... in input order); default: seeded random inputs")
    p.add_argument("--output", help="write the outputs to this .npz, keyed by output name")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    _add_runtime_options(p)


def _load_npz_inputs(path: str, specs) -> list:
    import numpy as np

    from edgert.errors import RequestError

    with np.load(path, allow_pickle=False) as npz:
        names = [s.name for s in specs]
        if all(n in npz.files for n in names):
            return [npz[n] for n in names]
        positional = [f"arr_{i}" for i in range(len(specs))]
        if all(n in npz.files for n in positional):
            return [npz[n] for n in positional]
        raise RequestError(f"{path}: expected arrays named {names} (or {positional}), found {npz.files}")


def _run_run(args: argparse.Namespace) -> int:
    import numpy as np

    from edgert.reference import random_inputs
    from edgert.runtime.executor import Executor

    ex = Executor({"model": args.model}, **_executor_options(args))
    specs = ex.input_specs("model")
    inputs = (_load_npz_inputs(args.input, specs) if args.input
              else random_inputs([(s.shape, s.dtype) for s in specs], seed=args.seed))
    outputs = ex.run("model", inputs)
    for spec, value in zip(ex.output_specs("model"), outputs):
        stats = f"min {value.min():.6g} max {value.max():.6g} mean {value.astype(np.float64).mean():.6g}" if value.size else "empty"
        print(f"{spec.name}: {value.dtype}{list(value.shape)}  {stats}")
    if args.output:
        np.savez(args.output, **{s.name: v for s, v in zip(ex.output_specs("model"), outputs)})
        print(f"wrote {args.output}")
    return 0


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--json", action="store_true", help="machine-readable output: top-level ok, per-output errors")
    p.add_argument("--runs", type=int, default=3, help="seeded requests to compare (state carries across them)")
    p.add_argument("--seed", type=int, default=0)
    _add_runtime_options(p)


def _run_verify(args: argparse.Namespace) -> int:
    from edgert.verify import verify_model

    report = verify_model(args.model, runs=args.runs, seed=args.seed, executor_options=_executor_options(args))
    if args.json:
        _print_json(report)
    else:
        for o in report["outputs"]:
            print(f"{'ok  ' if o['ok'] else 'FAIL'} {o['name']}: {o['dtype']}{o['shape']} max abs err {o['max_abs_error']:.3g} "
                  f"(tolerance {o['tolerance']:.3g}), max rel err {o['max_rel_error']:.3g}"
                  + (f", off by one on {o['off_by_one_fraction']:.2%}" if o["dtype"] != "float32" else ""))
        print(f"{report['model']}: {'OK' if report['ok'] else 'MISMATCH'} against LiteRT BUILTIN_REF "
              f"over {report['runs']} seeded run(s)")
    return 0 if report["ok"] else 1


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to a .tflite file")
    p.add_argument("--runs", type=int, default=50, help="timed runs per runtime (default 50)")
    p.add_argument("--no-memory", action="store_true", help="skip the start-up/RSS subprocess probes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_runtime_options(p)


def _run_bench(args: argparse.Namespace) -> int:
    from edgert.bench import bench, format_bench

    options = _executor_options(args)
    threads = options.pop("threads")
    result = bench(args.model, threads=threads, runs=args.runs, memory=not args.no_memory, executor_options=options)
    if args.json:
        _print_json(result)
    else:
        print(format_bench(result))
    return 0


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config (default: the bundled model on tcp://127.0.0.1:5555)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="override server.log_level")
    p.add_argument("--endpoint", action="append", help="bind this endpoint instead of server.endpoints (repeatable)")


def _run_serve(args: argparse.Namespace) -> int:
    import logging
    import os

    from edgert.config import default_config, load_config, with_endpoints
    from edgert.errors import BudgetExceeded

    cfg = load_config(args.config) if args.config else default_config()
    if args.endpoint:
        cfg = with_endpoints(cfg, args.endpoint)
    journal = "JOURNAL_STREAM" in os.environ  # journald stamps time and level itself
    logging.basicConfig(level=(args.log_level or cfg.log_level).upper(), stream=sys.stderr,
                        format="%(name)s: %(message)s" if journal else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.numba_cache_dir is not None:
        os.environ["NUMBA_CACHE_DIR"] = str(cfg.numba_cache_dir)  # before numba is first imported
    from edgert.serve.server import serve

    try:
        return serve(cfg, config_path=args.config)
    except BudgetExceeded as exc:
        print(f"edgert serve: error: the plan does not fit the budget: needs {exc.needed:,} bytes, budget "
              f"{exc.budget:,} bytes (lower bound {exc.lower_bound:,}). {exc}", file=sys.stderr)
        for hint in exc.hints:
            print(f"  hint: {hint}", file=sys.stderr)
        return 2


def _add_warmup(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="the daemon's TOML config (default: the built-in default config)")


def _run_warmup(args: argparse.Namespace) -> int:
    """Compile every kernel the configured models need into the numba cache, as the daemon would."""
    import os
    import time

    from edgert.config import default_config, load_config

    cfg = load_config(args.config) if args.config else default_config()
    if cfg.numba_cache_dir is not None:
        os.environ["NUMBA_CACHE_DIR"] = str(cfg.numba_cache_dir)  # before numba is first imported
    from edgert.serve.server import load_models

    start = time.monotonic()
    models = load_models(cfg, progress=lambda message: print(message, flush=True))
    print(f"warm: {len(models.executor.models)} model(s), {models.kernel_count} compiled kernel signatures, "
          f"{time.monotonic() - start:.1f} s; cache {os.environ.get('NUMBA_CACHE_DIR', 'beside the edgert package')}")
    return 0


def _add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="daemon endpoint (default %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait per attempt (default 10)")
    p.add_argument("--curve-server-key", help="the daemon's public key file (when it requires CURVE)")
    p.add_argument("--curve-client-key", help="this client's secret key file (when it requires CURVE)")


def _client(args: argparse.Namespace):
    from edgert.client import Client

    return Client(args.endpoint, timeout=args.timeout, retries=1, curve_server_key=args.curve_server_key,
                  curve_client_key=args.curve_client_key)


def _add_infer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model name as configured in the daemon")
    p.add_argument("--input", required=True, help=".npz keyed by input name (or arr_0, arr_1, ... in order)")
    p.add_argument("--output", help="write the outputs to this .npz, keyed by output name")
    _add_client_options(p)


def _run_infer(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    import numpy as np

    from edgert.errors import RequestError

    with _client(args) as client:
        served = client.models()
        spec = served.get(args.model)
        if spec is None:
            raise RequestError(f"the daemon serves no model {args.model!r} (serving: {', '.join(served)})",
                               kind="unknown_model")
        inputs = _load_npz_inputs(args.input, [SimpleNamespace(name=s["name"]) for s in spec["inputs"]])
        outputs = client.infer(args.model, inputs)
    names = [s["name"] for s in spec["outputs"]]
    for name, value in zip(names, outputs):
        summary = (f"min {value.min():.6g} max {value.max():.6g} mean {value.astype(np.float64).mean():.6g}"
                   if value.size else "empty")
        print(f"{name}: {value.dtype}{list(value.shape)}  {summary}")
    if args.output:
        np.savez(args.output, **dict(zip(names, outputs)))
        print(f"wrote {args.output}")
    return 0


def _add_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="ping, stats and memory replies as one JSON object")
    _add_client_options(p)


def _run_status(args: argparse.Namespace) -> int:
    from edgert.client import format_status

    with _client(args) as client:
        status = {"ping": client.ping(), "stats": client.stats(), "memory": client.memory()}
    if args.json:
        _print_json(status)
    else:
        print(format_status(status))
    return 0


def _add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config (default: the built-in default config)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _run_tune(args: argparse.Namespace) -> int:
    from edgert.config import default_config, load_config
    from edgert.serve.memory import format_tune, tune

    cfg = load_config(args.config) if args.config else default_config()
    report = tune(cfg)
    if args.json:
        _print_json(report)
    else:
        print(format_tune(report))
    return 0


def _add_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="path to a .tflite file")
    p.add_argument("--intervals", metavar="FILE.csv",
                   help="solve a raw interval instance (columns id,lower,upper,size; half-open [lower, upper))")
    p.add_argument("--budget", help="fail unless the arena fits, e.g. 8MiB")
    p.add_argument("--strategy", default="default", help="default, greedy, breadth or naive")
    p.add_argument("--order", default="file", choices=("file", "optimized"), help="execution order")
    for name in ("views", "inplace", "concat"):
        p.add_argument(f"--no-{name}", action="store_true", help=f"switch off {name} aliasing")
    p.add_argument("--kernel-info", default="registry", choices=("registry", "none"),
                   help="ask the kernel registry for scratch/in-place/strided support (default) or assume none")
    p.add_argument("--subgraph", type=int, default=0, help="subgraph to plan (default 0, the main one)")
    p.add_argument("--time-limit", type=float, default=None,
                   help="solver time limit in seconds (default 0.5 for models, 10 for --intervals)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--svg", metavar="FILE", help="write the lifetime x offset chart as SVG")


def _run_plan(args: argparse.Namespace) -> int:
    from edgert.errors import PlanError, UnsupportedOpError
    from edgert.plan import Aliasing, parse_size, plan
    from edgert.plan.offsets import read_intervals_csv, solve

    if args.intervals:
        if args.model:
            raise PlanError("give a MODEL or --intervals FILE.csv, not both")
        intervals = read_intervals_csv(args.intervals)
        sol = solve(intervals, args.strategy, align=1, time_limit=10.0 if args.time_limit is None else args.time_limit)
        result = {"peak_bytes": sol.peak, "lower_bound_bytes": sol.lower_bound, "strategy": sol.strategy,
                  "proven_optimal": sol.proven_optimal, "time_ms": round(sol.stats.get("ms", 0.0), 3),
                  "offsets": {str(it.id): sol.offsets[it.id] for it in intervals}}
        if args.json:
            _print_json(result)
        else:
            print(f"peak {sol.peak:,} B, lower bound {sol.lower_bound:,} B, {len(intervals)} buffers, "
                  f"{result['time_ms']:.0f} ms ({sol.strategy})")
        return 0
    if not args.model:
        raise PlanError("give a MODEL to plan, or --intervals FILE.csv")
    from edgert.model import load_model
    from edgert.plan.render import summary_text, svg

    try:
        budget = None if args.budget is None else parse_size(args.budget)
    except ValueError as exc:
        raise PlanError(f"--budget: {exc}") from exc
    graph = load_model(args.model)
    kernel_info = None
    if args.kernel_info == "registry":
        from edgert.kernels.registry import OpContext, default_registry

        registry, sg = default_registry(), graph.subgraphs[args.subgraph] if 0 <= args.subgraph < len(graph.subgraphs) else graph.main

        def kernel_info(op):
            try:
                return registry.info(OpContext.of(sg, op))
            except UnsupportedOpError:
                return None  # plans anyway; `edgert inspect` names what cannot run
    aliasing = Aliasing(views=not args.no_views, inplace=not args.no_inplace, concat=not args.no_concat)
    result = plan(graph, budget=budget, strategy=args.strategy, order=args.order, aliasing=aliasing,
                  kernel_info=kernel_info, time_limit=0.5 if args.time_limit is None else args.time_limit,
                  subgraph=args.subgraph)
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(svg(result, graph))
    if args.json:
        _print_json(result.to_json())
    else:
        print(summary_text(result, graph))
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "run": ("run a model once on given or seeded inputs", _add_run, _run_run),
    "verify": ("compare edgert's outputs with LiteRT's reference kernels", _add_verify, _run_verify),
    "bench": ("latency, start-up and memory of edgert against LiteRT, in the same run", _add_bench, _run_bench),
    "inspect": ("show a model's inputs, outputs, operators and what edgert can run", _add_inspect, _run_inspect),
    "serve": ("run the inference daemon (ZeroMQ) for the models in a config", _add_serve, _run_serve),
    "warmup": ("compile the configured models' kernels into the numba cache (install time / ExecStartPre)",
               _add_warmup, _run_warmup),
    "infer": ("send one inference request to a running daemon", _add_infer, _run_infer),
    "status": ("show a running daemon's health, request stats and memory", _add_status, _run_status),
    "tune": ("smallest arena budget per planner option for a config's models", _add_tune, _run_tune),
    "plan": ("plan a model's memory arena (or solve a raw interval instance) and report it", _add_plan, _run_plan),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgert", description="Inference runtime daemon for edge boards.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _run) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except EdgeRTError as exc:
        print(f"edgert {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
