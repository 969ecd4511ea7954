"""The ``dsq`` command line. Each subcommand lives in ``dsq/cli/<name>_cmd.py`` with two functions:
``add_parser(subparsers)`` (which sets ``func``) and the function it points to, ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

from dsq.errors import DsqError

#: subcommand modules, in the order ``dsq --help`` lists them
SUBCOMMANDS = ["backends", "recipes", "plan", "eval", "demo", "conformance", "quantize", "inspect", "quantize_checkpoint", "verify"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsq", description="Quantize DeepSeek-class MoE models once; run and verify them on any backend.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"dsq.cli.{name}_cmd").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DsqError as exc:
        print(f"dsq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dsq backends | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
