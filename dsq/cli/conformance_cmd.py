"""``dsq conformance``: check a backend against the numpy reference and report scheme x op pass/fail.

Runs the same checks as ``pytest conformance --backend NAME`` (the suite lives in the ``dsq_conformance``
package). Exit status 0 when every supported scheme x op passes, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import json
import sys

from dsq.backend import OPS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "conformance", help="check a backend against the numpy reference (bit-exact quantization, "
                            "toleranced matmul/moe)",
        description="Compare a backend with the cpu-reference oracle: calibrate, pack, unpack and "
                    "quantize_activation bit for bit; matmul and moe within per-scheme tolerances of a float64 "
                    "product on the reference's quantized operands (docs/conformance.md). Prints a scheme x op "
                    "table; exit status 1 if any supported pair fails.")
    p.add_argument("--backend", default="cpu", help="backend name or alias (default: cpu)")
    p.add_argument("--report", metavar="FILE",
                   help="write the report: FILE.json and/or FILE.md (by suffix; both if neither)")
    p.add_argument("--emulate", action="store_true",
                   help="set DSQ_EMULATE=1 before loading the backend (ascend runs emulated torch_npu ops)")
    p.add_argument("--quick", action="store_true", help="small shapes, fewer cases, presets only (CI)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the markdown table")
    p.add_argument("--scheme", action="append", metavar="NAME", help="only this scheme (repeatable)")
    p.add_argument("--op", action="append", choices=OPS, help="only this op (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from dsq_conformance import run_conformance

    def progress(cell) -> None:
        if not args.json:
            print(f"  {cell.scheme:<34} {cell.op:<20} {cell.status}", file=sys.stderr, flush=True)

    report = run_conformance(args.backend, quick=args.quick, emulate=args.emulate, schemes=args.scheme,
                             ops=args.op, progress=progress)
    if args.report:
        for path in report.write(args.report):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=float))
    else:
        print(report.to_markdown())
    return 0 if report.passed else 1
