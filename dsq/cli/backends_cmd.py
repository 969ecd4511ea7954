"""``dsq backends``: which backends are installed, whether they can run here, and what they support."""

from __future__ import annotations

import json

from dsq.backend import OPS
from dsq.cli.table import format_table
from dsq.registry import list_backends, plugin_errors
from dsq.schemes import list_schemes

_SHORT = {"calibrate": "cal", "pack": "pack", "unpack": "unpk", "quantize_activation": "qact",
          "matmul": "mm", "moe": "moe"}


def add_parser(sub) -> None:
    p = sub.add_parser("backends", help="list backends, their availability and capability matrix",
                       description="List every registered backend (built-in and vendor plugins), whether it can "
                                   "run on this machine (and why not), and its scheme x op capability matrix.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--reasons", action="store_true", help="list the reason for every unsupported scheme x op")
    p.set_defaults(func=run)


def collect() -> dict:
    """Everything ``dsq backends`` shows, as plain data."""
    out = {"backends": [], "plugin_errors": plugin_errors()}
    for b in sorted(list_backends(), key=lambda b: b.name):
        ok, why = b.is_available()
        caps = b.capabilities()
        out["backends"].append({
            "name": b.name, "aliases": list(b.aliases), "device": b.device, "description": b.description,
            "available": ok, "reason": why,
            "capabilities": {s: {op: {"supported": c.supported, "reason": c.reason} for op, c in ops.items()}
                             for s, ops in caps.items()},
        })
    return out


def run(args) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [[b["name"], ", ".join(b["aliases"]), b["device"], "yes" if b["available"] else "no",
             (b["reason"].split(";")[0] if b["reason"] else "-")] for b in data["backends"]]
    print(format_table(["backend", "aliases", "device", "available", "reason (first clause)"], rows))
    for b in data["backends"]:
        if not b["available"]:
            print(f"\n{b['name']} is unavailable: {b['reason']}")
    for name, err in data["plugin_errors"].items():
        print(f"plugin {name!r} failed to load: {err}")
    legend = ", ".join(f"{v}={k}" for k, v in _SHORT.items())
    print(f"\nCapability matrix (Y supported, - not; {legend})")
    for b in data["backends"]:
        print(f"\n{b['name']}")
        rows = [[s] + ["Y" if b["capabilities"][s][op]["supported"] else "-" for op in OPS] for s in list_schemes()]
        print(format_table(["scheme"] + [_SHORT[o] for o in OPS], rows))
        if args.reasons:
            for s in list_schemes():
                for op in OPS:
                    c = b["capabilities"][s][op]
                    if not c["supported"]:
                        print(f"  {s} {op}: {c['reason']}")
    return 0
