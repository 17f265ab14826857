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


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "inspect": ("show a model's inputs, outputs, operators and what edgert can run", _add_inspect, _run_inspect),
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
