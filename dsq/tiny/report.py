"""The demo's outputs: a text table, ``report.md``, ``results.json`` and the size-vs-perplexity plot (PNG)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dsq.cli.table import format_table

HEADERS = ["preset", "bits/weight", "checkpoint", "ppl", "delta ppl", "target", "met", "quantize s", "eval s",
           "reload"]


def _fmt(v, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def table_rows(rows) -> list[list[str]]:
    out = []
    for r in rows:
        out.append([r.preset, _fmt(r.bits_per_weight, ".2f"),
                    _fmt(None if r.size_bytes is None else r.size_bytes / 1e6, ".2f", " MB"),
                    _fmt(r.ppl, ".4f"), _fmt(r.delta_pct, "+.3f", "%"),
                    _fmt(r.target_pct, ".1f", "%"),
                    r.met, _fmt(r.quantize_s, ".1f"), _fmt(r.eval_s, ".1f"), r.reload if not r.error else r.error])
    return out


def format_results(rows, markdown: bool = False) -> str:
    return format_table(HEADERS, table_rows(rows), markdown=markdown)


def _atomic_text(path: Path, text: str | bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name)
    with os.fdopen(fd, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def plot(path: Path, rows) -> None:
    """Checkpoint size (MB) against perplexity change (%), one labelled point per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.size_bytes is not None and r.delta_pct is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for r in pts:
        ax.scatter(r.size_bytes / 1e6, r.delta_pct, s=40, color="tab:gray" if r.preset == "bf16" else "tab:blue")
        ax.annotate(r.preset, (r.size_bytes / 1e6, r.delta_pct), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("checkpoint size (MB)")
    ax.set_ylabel("held-out perplexity change vs bf16 (%)")
    ax.set_title("dsq demo: tiny DeepSeek-V3, size vs quality")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".png")
    os.close(fd)
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def markdown_report(results: dict, rows) -> str:
    m = results["machine"]
    missed = [r for r in rows if r.met == "no"]
    failed = [r for r in rows if r.error]
    lines = [
        "# dsq demo: the embedded tiny DeepSeek-V3 model under every preset",
        "",
        f"- date: {results['date']}",
        f"- machine: {m['cpu']} ({m['cores']} cores), {m['platform']}; torch {m['torch']}, dsq {m['dsq']}",
        f"- backend: `{results['backend']}`",
        f"- evaluation: first {results['max_tokens']} bytes of the held-out text "
        f"({results['heldout_bytes']} bytes in all); byte unigram baseline perplexity "
        f"{results['unigram_ppl']:.3f} on the same bytes",
        f"- whole demo: {results['total_seconds']:.0f} s",
        "",
        format_results(rows, markdown=True),
        "",
        "bits/weight: on-disk bytes of the quantized modules (codes, scales, zero points) x 8 / weights they "
        "replace. checkpoint: all files of the saved checkpoint folder (compressed-tensors; msModelSlim/Ascend "
        "layout for deepseek-w4a8; float tensors in float32). "
        "delta ppl: against the shipped bf16 weights, float32 compute. reload: logits of the model reloaded "
        f"with dsq.load on a {results['probe_bytes']}-byte probe, compared with the in-memory quantized model.",
        "",
        "![size vs perplexity](size_vs_ppl.png)",
    ]
    if missed or failed:
        lines += ["", "## Misses"]
        lines += [f"- {r.preset}: {r.delta_pct:+.3f}% against a target of +{r.target_pct}%" for r in missed]
        lines += [f"- {r.preset}: failed: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def write_report(out: Path, results: dict, rows) -> None:
    plot(out / "size_vs_ppl.png", rows)
    _atomic_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    _atomic_text(out / "report.md", markdown_report(results, rows))
