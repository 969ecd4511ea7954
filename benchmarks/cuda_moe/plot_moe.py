"""Plot a bench_moe.py results file: each scheme's fused layer against the bf16 fused layer, per token count.

    python benchmarks/cuda_moe/plot_moe.py benchmarks/cuda_moe/results-h200-v15-full.json docs/benchmarks/cuda-moe-v15.png

Two panels (uniform and skewed routing); x: tokens T (log scale), y: bf16 fused time / scheme time (> 1: faster
than bf16). Dashed lines: 1.0 and issue 6's decode targets (3.0x for the int4 schemes, 1.7x for W8A8 / W8A16,
T <= 64) and the T = 4096 target (1.4x, W8A8 and W4A8).
"""

from __future__ import annotations

import argparse
import json

SCHEMES = ["W4A16", "W4A8_DYNAMIC", "W4AFP8", "W8A8", "W8A16", "W8A8_DYNAMIC", "FP8_BLOCK"]


def series(res: dict, routing: str) -> tuple[list[int], dict[str, list[float]]]:
    """Token counts and, per scheme, speed-up over the bf16 fused layer (bf16 time / scheme time)."""
    rows = [r for r in res["results"] if r["routing"] == routing]
    tokens = sorted({r["tokens"] for r in rows})
    by = {(r["method"], r["tokens"]): r for r in rows}
    return tokens, {s: [by[(s, t)]["speedup_vs_bf16"] for t in tokens] for s in SCHEMES
                    if all((s, t) in by for t in tokens)}


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    args = ap.parse_args()
    with open(args.results) as f:
        res = json.load(f)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, routing in zip(axes, ("uniform", "skewed")):
        tokens, ys = series(res, routing)
        for name, y in ys.items():
            ax.plot(tokens, y, marker="o", label=name)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.plot([1, 64], [3.0, 3.0], "k--", lw=0.8)
        ax.plot([1, 64], [1.7, 1.7], "k:", lw=0.8)
        ax.plot([4096], [1.4], "kx")
        ax.set_xscale("log", base=2)
        ax.set_xticks(tokens, [str(t) for t in tokens])
        ax.set_xlabel("tokens T")
        ax.set_title(f"{routing} routing")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bf16 fused time / scheme time")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"DeepSeek-V3 MoE layer, {res['device']}, torch {res['torch']}, triton {res['triton']}, "
                 f"{res['date'][:10]} (dashed: int4 target 3.0x, dotted: 8-bit 1.7x, x: T = 4096 1.4x)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
