"""Plot a run_gpu.py results.json: speed-up over bf16 per shape at decode M, dsq's schemes beside tinygemm.

    python benchmarks/cuda/plot_decode.py benchmarks/cuda/results/h200_v10_decode.json docs/benchmarks/cuda-decode.png
    python benchmarks/cuda/plot_decode.py --by-m benchmarks/cuda/results/h200_v18_final.json docs/benchmarks/cuda-by-m-v18.png

One panel per M (the M values the run has, up to 64). Bars: each shape's time for bf16 over each method's
(> 1: faster than bf16), for W4A16, W8A16, W4A8_DYNAMIC and W4AFP8, tinygemm, and every ``--variant``
column of the run (hatched). Dashed lines: 1.0 and issue 5's W4A16 target at that M.

``--by-m``: one panel per scheme over every M of the run: the median speed-up over the shapes (line) and their
range (band), against the 0.9x floor and the targets.
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


#: every scheme of a run_gpu.py timing row, for --by-m
SCHEMES = ["W4A16", "W8A16", "W4A8_DYNAMIC", "W4AFP8", "W8A8", "W8A8_DYNAMIC", "FP8_BLOCK"]


def by_m(res: dict, name: str) -> list[tuple[int, float, float, float]]:
    """(M, min, median, max) of bf16 time / ``name``'s time over the run's shapes, for each M it has."""
    out = []
    for m in sorted({r["m"] for r in res["timings"]}):
        vals = sorted(r["bf16"] / r[name] for r in res["timings"] if r["m"] == m and r.get(name))
        if vals:
            mid = len(vals) // 2
            med = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
            out.append((m, vals[0], med, vals[-1]))
    return out


def plot_by_m(res: dict, path: str) -> list[str]:
    """Write the --by-m figure to ``path``; returns the schemes plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in SCHEMES if by_m(res, n)]
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.6 * rows), sharey=True, squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        ms, lo, med, hi = zip(*by_m(res, name))
        ax.fill_between(ms, lo, hi, alpha=0.25, label="range over the shapes")
        ax.plot(ms, med, marker="o", label="median")
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.axhline(0.9, color="tab:red", linewidth=0.8, linestyle=":", label="0.9x floor (W4A16)")
        if name == "W4A16":
            ax.plot(list(W4A16_TARGET), list(W4A16_TARGET.values()), "r*", label="W4A16 targets")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (tokens)")
        ax.set_title(name, fontsize=10)
    for row in axes:
        row[0].set_ylabel("x faster than bf16")
    axes[0][0].legend(fontsize=7)
    env = res.get("env", {})
    fig.suptitle(f"dsq cuda GEMMs by M, 8 DeepSeek-V3 shapes: {env.get('device', '?')}, torch {env.get('torch', '?')}, "
                 f"triton {env.get('triton', '?')}, {env.get('date', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="results.json written by benchmarks/cuda/run_gpu.py")
    ap.add_argument("png", help="where to write the figure")
    ap.add_argument("--by-m", action="store_true", help="one panel per scheme over every M (median and range)")
    a = ap.parse_args(argv)
    with open(a.results) as fh:
        res = json.load(fh)
    if a.by_m:
        print(f"{a.png}: {', '.join(plot_by_m(res, a.png))}")
        return 0
    ms = plot(res, a.png)
    print(f"{a.png}: M = {', '.join(map(str, ms))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
