"""``python -m dsq.streaming quantize-checkpoint ...`` / ``... verify DST``: the two streaming subcommands alone
(same options as ``dsq quantize-checkpoint`` and ``dsq verify``), without importing the rest of the CLI."""

from __future__ import annotations

import argparse
import sys

from dsq.errors import DsqError


def main(argv: list[str] | None = None) -> int:
    from dsq.cli import quantize_checkpoint_cmd, verify_cmd

    parser = argparse.ArgumentParser(prog="python -m dsq.streaming")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    quantize_checkpoint_cmd.add_parser(sub)
    verify_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DsqError as exc:
        print(f"dsq {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
