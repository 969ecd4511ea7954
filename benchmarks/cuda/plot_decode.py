"""Plot a run_gpu.py results.json: speed-up over bf16 per shape at decode M, dsq's schemes beside tinygemm.

    python benchmarks/cuda/plot_decode.py benchmarks/cuda/results/h200_v10_decode.json docs/benchmarks/cuda-decode.png

One panel per M (the M values the run has, up to 64). Bars: each shape's time for bf16 over each method's
(> 1: faster than bf16), for W4A16, W8A16, W4A8_DYNAMIC and W4AFP8, tinygemm, and every ``--variant``
column of the run (hatched). Dashed lines: 1.0 and issue 5's W4A16 target at that M.
"""

from __future__ import annotations

import argparse
import json

#: issue 5's W4A16 targets (times faster than bf16) at the decode M it names
W4A16_TARGET = {1: 3.3, 16: 3.0, 64: 1.5}
METHODS = ["W4A16", "W8A16", "W4A8_DYNAMIC", "W4AFP8", "tinygemm"]


def speedups(res: dict, m: int) -> tuple[list[str], dict[str, list[float]]]:
    """Shape labels (K x N) and, per method, bf16 time / method time at this M (0 where not measured)."""
    rows = [r for r in res["timings"] if r["m"] == m]
    variants = [c for c in dict.fromkeys(key for r in rows for key in r) if "@" in c]
    shapes = [f"{r['k']}x{r['n']}" for r in rows]
    return shapes, {name: [r["bf16"] / r[name] if r.get(name) else 0.0 for r in rows]
                    for name in METHODS + variants}


def plot(res: dict, path: str) -> list[int]:
    """Write the figure to ``path``; returns the M values plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = sorted({r["m"] for r in res["timings"] if r["m"] <= 64})
    fig, axes = plt.subplots(len(ms), 1, figsize=(13, 3.6 * len(ms)), squeeze=False)
    for ax, m in zip(axes[:, 0], ms):
        shapes, series = speedups(res, m)
        width = 0.8 / len(series)
        for i, (name, vals) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(shapes))]
            ax.bar(xs, vals, width, label=name, hatch="//" if "@" in name else None)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        if m in W4A16_TARGET:
            ax.axhline(W4A16_TARGET[m], color="tab:red", linewidth=0.8, linestyle="--",
                       label=f"W4A16 target at M = {m}")
        ax.set_xticks(range(len(shapes)), shapes, fontsize=8)
        ax.set_ylabel("x faster than bf16")
        ax.set_title(f"M = {m}")
    handles: dict = {}
    for ax in axes[:, 0]:  # every method once, and each panel's target line
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), ncol=6, fontsize=8, loc="lower center")
    env = res.get("env", {})
    fig.suptitle(f"dsq cuda decode GEMMs (K x N) vs bf16 torch.matmul: {env.get('device', '?')}, "
                 f"torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, {env.get('date', '?')}")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="results.json written by benchmarks/cuda/run_gpu.py")
    ap.add_argument("png", help="where to write the figure")
    a = ap.parse_args(argv)
    with open(a.results) as fh:
        res = json.load(fh)
    ms = plot(res, a.png)
    print(f"{a.png}: M = {', '.join(map(str, ms))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
