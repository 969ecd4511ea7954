"""``dsq inspect DIR [--json]``: summarise a quantized checkpoint (format, schemes, bytes, tensors, files).

Reads JSON files and safetensors headers only (no weights); see :mod:`dsq.checkpoint.summary`.
"""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="summarise a quantized checkpoint (schemes, bytes, tensors)",
                       description="Summarise a dsq, compressed-tensors or msModelSlim checkpoint directory: "
                                   "format, schemes with module/tensor counts and bytes, files.")
    p.add_argument("directory", help="checkpoint directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from dsq.checkpoint import inspect
    from dsq.checkpoint.summary import format_summary

    summary = inspect(args.directory)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
