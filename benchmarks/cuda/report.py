"""Turn a run_gpu.py results.json into the tables of docs/benchmarks/cuda.md (markdown on stdout).

    python benchmarks/cuda/report.py benchmarks/cuda/results/h200_v2.json
"""

from __future__ import annotations

import json
import sys

SCHEMES = ["W4A16", "W8A16", "W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "W4AFP8", "FP8_BLOCK"]
PEERS = ["tinygemm", "int_mm", "scaled_mm"]
LARGE = {(7168, 18432), (18432, 7168), (16384, 7168)}


def fraction_of_copy(weight_bytes: float, us: float, copy_gbps: float) -> float:
    """Weight bytes read per second over the device-to-device copy rate, both as GB/s. The copy rate counts
    the bytes read plus the bytes written (what ../shared/reference/gpu_baselines.md calls the ceiling: 66 MB
    of int4 weights "at the copy ceiling" is 16 us on an H200). Before 2026-11-29's v10 run the tables divided
    by half that rate, which doubled this fraction (cuda.md v10 says so)."""
    return weight_bytes / (us * 1e-6) / 1e9 / copy_gbps


def ratio(r: dict, name: str) -> float | None:
    return r["bf16"] / r[name] if r.get(name) else None


def targets(rows: list[dict], bw: float) -> list[str]:
    """One line per issue-5 target: the worst measured ratio over the shapes it covers."""
    def worst(name, pred):
        vals = [(ratio(r, name), r) for r in rows if pred(r) and r.get(name)]
        return min(vals, key=lambda v: v[0]) if vals else (None, None)

    def fmt(t, name, pred, what):
        v, r = worst(name, pred)
        if v is None:
            return f"| {what} | >= {t}x | not measured | |"
        ok = "met" if v >= t else f"missed by {t / v:.2f}x"
        return f"| {what} | >= {t}x | {v:.2f}x (worst: K={r['k']} N={r['n']} M={r['m']}) | {ok} |"

    out = ["| target | wanted | measured (worst shape) | status |", "|---|---|---|---|"]
    out.append(fmt(3.3, "W4A16", lambda r: r["m"] == 1, "W4A16 vs bf16, M=1"))
    out.append(fmt(3.0, "W4A16", lambda r: r["m"] == 16, "W4A16 vs bf16, M=16"))
    out.append(fmt(1.5, "W4A16", lambda r: r["m"] == 64, "W4A16 vs bf16, M=64"))
    out.append(fmt(0.9, "W4A16", lambda r: True, "W4A16 vs bf16, any M"))
    out.append(fmt(1.8, "W8A16", lambda r: r["m"] <= 16, "W8A16 vs bf16, M<=16"))
    out.append(fmt(3.0, "W4A8_DYNAMIC", lambda r: r["m"] <= 16, "W4A8 vs bf16, M<=16"))
    out.append(fmt(3.0, "W4AFP8", lambda r: r["m"] <= 16, "W4AFP8 vs bf16, M<=16"))
    out.append(fmt(1.6, "W8A8_DYNAMIC", lambda r: r["m"] == 4096, "W8A8 int8 (dynamic) vs bf16, M=4096"))
    out.append(fmt(1.5, "W4AFP8", lambda r: r["m"] == 4096, "W4AFP8 vs bf16, M=4096"))
    out.append(fmt(1.5, "FP8_BLOCK", lambda r: r["m"] == 4096, "FP8_BLOCK vs bf16, M=4096"))
    vals = [(r["int_mm"] / r["W8A8_DYNAMIC"], r) for r in rows if r["m"] == 4096]
    if vals:
        v, r = min(vals, key=lambda t: t[0])
        ok = "met" if v >= 1.3 else f"missed by {1.3 / v:.2f}x"
        out.append(f"| W8A8 int8 vs torch._int_mm, M=4096 | >= 1.3x | {v:.2f}x (worst: K={r['k']} N={r['n']}) | {ok} |")
    fr = [(fraction_of_copy(r["weight_bytes"]["W4A16"], r["W4A16"], bw), r)
          for r in rows if r["m"] == 1 and (r["k"], r["n"]) in LARGE]
    if fr:
        v, r = min(fr, key=lambda t: t[0])
        ok = "met" if v >= 0.8 else f"missed by {0.8 / v:.2f}x"
        out.append(f"| W4A16 M=1 weight bandwidth, large shapes | >= 80% of copy | {v:.0%} "
                   f"(worst: K={r['k']} N={r['n']}) | {ok} |")
    return out


def table(rows: list[dict], bw: float) -> list[str]:
    cols = PEERS + SCHEMES
    out = ["| K | N | M | bf16 us | " + " | ".join(cols) + " | W4A16 BW / copy |", "|" + "---|" * (len(cols) + 5)]
    for r in rows:
        frac = fraction_of_copy(r["weight_bytes"]["W4A16"], r["W4A16"], bw)
        cells = [f"{ratio(r, c):.2f}x / {r[c]:.0f}" if r.get(c) else "-" for c in cols]
        out.append(f"| {r['k']} | {r['n']} | {r['m']} | {r['bf16']:.1f} | " + " | ".join(cells) + f" | {frac:.0%} |")
    return out


def main(path: str) -> None:
    res = json.load(open(path))
    bw = res["copy_GBps"]
    env = res["env"]
    print(f"Device {env['device']} ({env['sms']} SMs), torch {env['torch']}, triton {env['triton']}, {env['date']}; "
          f"device-to-device copy {bw:.0f} GB/s (read + write).\n")
    print("\n".join(targets(res["timings"], bw)))
    print()
    print("\n".join(table(res["timings"], bw)))
    if "correctness" in res:
        bad = [r for r in res["correctness"] if r.get("bitexact") is False or r.get("ok") is False]
        n = sum(1 for r in res["correctness"] if "bitexact" in r)
        print(f"\nCorrectness on the GPU: {n - len(bad)} of {n} scheme x shape cases pass (bit-exact calibrate/pack/"
              "unpack/quantize_activation, matmul within the conformance tolerance)." +
              ("" if not bad else f" Failures: {bad}"))


if __name__ == "__main__":
    main(sys.argv[1])
