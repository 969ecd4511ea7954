"""The conformance report: scheme x op -> pass / fail / unsupported with the worst error seen, plus the
backend, its mode, the device, versions and date. Written as JSON (machines) and markdown (people)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dsq.backend import OPS, Backend

BITWISE_OPS = ("calibrate", "pack", "unpack", "quantize_activation")
STATUSES = ("pass", "fail", "unsupported", "error")


@dataclass
class CellResult:
    """One scheme x op. ``worst``: most differing elements in one case (bitwise ops) or the largest
    error/bound ratio (matmul, moe; <= 1 passes). ``worst_rel_err``: largest normwise relative error."""

    scheme: str
    op: str
    status: str
    reason: str = ""
    cases: int = 0
    failed: int = 0
    worst: float = 0.0
    worst_case: str = ""
    worst_rel_err: float | None = None
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Short human text for the worst error column."""
        if self.status == "unsupported":
            return f"unsupported: {self.reason}"
        if self.status == "error":
            return f"error: {self.reason}"
        if self.op in BITWISE_OPS:
            return "bit-exact" if self.worst == 0 else f"{int(self.worst)} elements differ ({self.worst_case})"
        rel = "" if self.worst_rel_err is None else f", rel err {self.worst_rel_err:.2e}"
        return f"err/bound {self.worst:.3g}{rel} ({self.worst_case})"


def _dist_version(module: str) -> str | None:
    top = module.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def environment(backend: Backend) -> tuple[str, dict]:
    """(device description, versions) of this run."""
    dev = str(getattr(backend, "device", "cpu"))
    if dev.startswith("cuda") and torch.cuda.is_available():
        desc = f"{dev}: {torch.cuda.get_device_name(torch.device(dev))}"
    elif dev.startswith("npu") and hasattr(torch, "npu"):
        try:
            desc = f"{dev}: {torch.npu.get_device_name()}"
        except Exception:  # noqa: BLE001 - only for the description
            desc = dev
    else:
        desc = f"{dev}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                "platform": platform.platform()}
    for dist in ("dsq", "triton", "torch_npu"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    bv = _dist_version(type(backend).__module__)
    if bv:
        versions["backend_distribution"] = bv
    return desc, versions


@dataclass
class ConformanceReport:
    backend: str
    mode: str
    device: str
    quick: bool
    date: str
    versions: dict
    cells: list[CellResult]
    argv: list[str] = field(default_factory=lambda: list(sys.argv))

    @property
    def passed(self) -> bool:
        """True when no supported scheme x op failed or errored."""
        return all(c.status in ("pass", "unsupported") for c in self.cells)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.cells) for s in STATUSES}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["counts"] = self.counts()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)

    def to_markdown(self) -> str:
        from dsq.cli.table import format_table

        c = self.counts()
        lines = [f"# dsq conformance: {self.backend}", "",
                 f"- result: **{'PASS' if self.passed else 'FAIL'}** ({c['pass']} pass, {c['fail']} fail, "
                 f"{c['error']} error, {c['unsupported']} unsupported)",
                 f"- backend: {self.backend} (mode: {self.mode})", f"- device: {self.device}",
                 f"- cases: {'quick' if self.quick else 'full'}", f"- date: {self.date}",
                 "- versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items()), "",
                 "## Matrix", ""]
        schemes = list(dict.fromkeys(cell.scheme for cell in self.cells))
        by = {(cell.scheme, cell.op): cell for cell in self.cells}
        mark = {"pass": "pass", "fail": "**FAIL**", "unsupported": "-", "error": "**ERROR**"}
        rows = [[s] + [mark[by[(s, op)].status] if (s, op) in by else "" for op in OPS] for s in schemes]
        lines += [format_table(["scheme"] + list(OPS), rows, markdown=True), "", "## Details", ""]
        rows = [[cell.scheme, cell.op, cell.status, f"{cell.cases - cell.failed}/{cell.cases}", cell.summary()]
                for cell in self.cells]
        lines.append(format_table(["scheme", "op", "status", "cases passed", "worst error"], rows, markdown=True))
        failing = [cell for cell in self.cells if cell.failures]
        if failing:
            lines += ["", "## Failures", ""]
            for cell in failing:
                lines += [f"- {cell.scheme} {cell.op}:"] + [f"  - {m}" for m in cell.failures]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> list[Path]:
        """Write ``path`` (.json -> JSON, .md -> markdown, else both with those suffixes); temp file + rename."""
        path = Path(path)
        targets = {".json": [path], ".md": [path]}.get(path.suffix, [path.with_suffix(".json"),
                                                                      path.with_suffix(".md")])
        for target in targets:
            text = self.to_json() if target.suffix == ".json" else self.to_markdown()
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(target)
        return targets


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
