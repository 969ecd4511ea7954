"""Progress (bytes, GB/s, ETA) and the final summary of a streaming conversion."""

from __future__ import annotations

import resource
import sys

from dsq.cli.table import format_table

__all__ = ["Progress", "peak_rss_bytes", "format_summary"]


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class Progress:
    """A tqdm bar over source bytes (rate shown in GB/s, with tqdm's ETA); silent when disabled."""

    def __init__(self, total_bytes: int, enabled: bool, desc: str = "quantize-checkpoint"):
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1000,
                             dynamic_ncols=True, smoothing=0.1, file=sys.stderr)

    def update(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.update(nbytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _gb(n: int) -> str:
    return f"{n / 1e9:.3f}"


def format_summary(summary: dict) -> str:
    """The table printed at the end: one row per scheme (and copied / dequantized), then totals."""
    rows = []
    for kind, c in sorted(summary["stats"].items()):
        rows.append([kind, c["modules"], c["tensors_out"], _gb(c["bytes_in"]), _gb(c["bytes_out"])])
    tin = sum(c["bytes_in"] for c in summary["stats"].values())
    tout = sum(c["bytes_out"] for c in summary["stats"].values())
    rows.append(["total", sum(c["modules"] for c in summary["stats"].values()),
                 sum(c["tensors_out"] for c in summary["stats"].values()), _gb(tin), _gb(tout)])
    lines = [format_table(["scheme", "modules/tensors in", "tensors out", "GB in", "GB out"], rows), ""]
    secs = summary["seconds"]
    rate = summary["bytes_done"] / secs / 1e9 if secs > 0 else 0.0
    lines.append(f"shards: {summary['shards_done']} converted, {summary['shards_skipped']} already finished "
                 f"(resumed), {summary['shards_total']} total; ranks: {summary['world']}; engine: {summary['engine']}")
    lines.append(f"time: {secs:.1f} s for {summary['bytes_done'] / 1e9:.3f} GB of source = {rate:.3f} GB/s; "
                 f"peak RSS {summary['peak_rss'] / 1e9:.2f} GB (largest source shard "
                 f"{summary['largest_shard'] / 1e9:.2f} GB)")
    if summary.get("skipped_calibrated"):
        lines.append(f"kept float (scheme needs calibration): {len(summary['skipped_calibrated'])} modules, e.g. "
                     + ", ".join(summary["skipped_calibrated"][:3]))
    for t in summary.get("unmatched", []):
        lines.append(f"warning: recipe target {t!r} matched no module")
    lines.append(f"output: {summary['output']}")
    return "\n".join(lines)
