"""Where a kernel's warps wait, per SASS instruction, from Nsight Compute's source page.

On the GPU machine (the command that made benchmarks/cuda/results/h200_v9_ncu_source_fixup.csv.gz):

    PYTHONPATH=backends:conformance:. ncu --clock-control none --kernel-name regex:mma_decode \\
        --launch-skip 2 --launch-count 1 --section SourceCounters --section WarpStateStats \\
        --page source --print-source sass --csv \\
        python3 benchmarks/cuda/profile_decode.py --shape 7168x18432 --m 1 --scheme W4A16 > ncu_source.csv

then anywhere: ``python benchmarks/cuda/ncu_stalls.py ncu_source.csv[.gz]``. It prints the share of warp-stall
samples per reason over the whole kernel, and the instructions that collect the most samples with their top
reasons (a sample is a warp caught not issuing, so a share is where waiting time goes, not instruction cost).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys


def read_rows(path: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the per-instruction table (the lines before it are the profiler's own log)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        lines = fh.read().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith('"Address"')]
    if not starts:
        raise SystemExit(f"{path}: no per-instruction table (expected ncu --page source --print-source sass --csv)")
    table = list(csv.reader(lines[starts[0]:]))
    return table[0], [row for row in table[1:] if len(row) == len(table[0])]


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="output of ncu --page source --print-source sass --csv (may be gzipped)")
    ap.add_argument("--top", type=int, default=15, help="instructions to list")
    a = ap.parse_args(argv)
    header, rows = read_rows(a.csv)
    col = {name: i for i, name in enumerate(header)}
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    samples = [_num(r[col["Warp Stall Sampling (All Samples)"]]) for r in rows]
    total = sum(samples) or 1.0
    by_reason = {h[6:]: sum(_num(r[col[h]]) for r in rows) / total for h in reasons}
    print(f"{len(rows)} instructions, {total:.0f} warp-stall samples")
    print("| reason | share |\n|---|---|")
    for name, share in sorted(by_reason.items(), key=lambda kv: -kv[1])[:10]:
        print(f"| {name} | {share:.1%} |")
    print("\n| share | address | instruction | top reasons |\n|---|---|---|---|")
    for s, r in sorted(zip(samples, rows), key=lambda sr: -sr[0])[:a.top]:
        top = sorted(((_num(r[col[h]]), h[6:]) for h in reasons), reverse=True)[:2]
        why = ", ".join(f"{name} {v / s:.0%}" for v, name in top if v)
        print(f"| {s / total:.1%} | {r[col['Address']][-5:]} | `{r[col['Source']].strip()[:60]}` | {why} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
