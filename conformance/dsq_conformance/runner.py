"""Running the suite: which schemes and ops, which cases, and how results become a report.

The schemes are every preset plus a few variants backends meet in practice (msModelSlim's ``qmax`` scale
rule, another group size, bf16 scales, Ascend's half-away activation rounding). Each scheme x op the
backend's ``supports()`` accepts is run over the random, edge and golden cases; the others are reported
as ``unsupported`` with the backend's reason.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dsq.backend import OPS, Backend
from dsq.errors import DsqError
from dsq.registry import get_backend, refresh
from dsq.schemes import QuantScheme, get_scheme, list_schemes

from . import cases as casegen
from .checks import CaseResult, Checks
from .golden import GoldenCheck, golden_checks
from .report import BITWISE_OPS, CellResult, ConformanceReport, environment, now

#: (preset, overrides) of the scheme variants checked besides the presets
VARIANTS: list[tuple[str, dict]] = [
    ("W8A16", {"scale_rule": "qmax"}),
    ("W4A16", {"group_size": 64}),
    ("W4A16", {"scale_dtype": "bfloat16"}),
    ("W8A8", {"act_rounding": "half_away"}),
    ("W8A8_DYNAMIC", {"scale_dtype": "bfloat16"}),
]

_CASES = {"calibrate": casegen.weight_cases, "pack": casegen.weight_cases, "unpack": casegen.weight_cases,
          "quantize_activation": casegen.activation_cases, "matmul": casegen.matmul_cases,
          "moe": casegen.moe_cases}


@dataclass(frozen=True)
class SchemeUnderTest:
    label: str  # name in the report, e.g. "W4A16[group_size=64]"
    scheme: QuantScheme
    preset: bool  # golden cases are filed under presets


def schemes_under_test(names: Iterable[str] | None = None, variants: bool = True) -> list[SchemeUnderTest]:
    """Presets (or the named ones) and, when ``variants``, the variants of those presets."""
    chosen = [get_scheme(n).name for n in (names or list_schemes())]
    out = [SchemeUnderTest(n, get_scheme(n), True) for n in chosen]
    if variants:
        for preset, overrides in VARIANTS:
            if preset in chosen:
                label = preset + "[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]"
                out.append(SchemeUnderTest(label, get_scheme(preset, **overrides), False))
    return out


def load_backend(name: str | Backend, emulate: bool = False) -> Backend:
    """The backend called ``name``; with ``emulate``, DSQ_EMULATE=1 is set before backends are (re)built."""
    if emulate and os.environ.get("DSQ_EMULATE") != "1":
        os.environ["DSQ_EMULATE"] = "1"
        refresh()
    return get_backend(name)


def backend_mode(backend: Backend, emulate: bool) -> str:
    mode = getattr(backend, "mode", None)
    if mode:
        return str(mode)
    return "native (DSQ_EMULATE=1 was set, but the backend has no emulated mode)" if emulate else "native"


def _aggregate(label: str, op: str, results: list[CaseResult]) -> CellResult:
    failed = [r for r in results if not r.ok]
    worst = max(results, key=lambda r: r.metric, default=None)
    rels = [r.rel_err for r in results if r.rel_err is not None]
    return CellResult(
        scheme=label, op=op, status="fail" if failed else "pass", cases=len(results), failed=len(failed),
        worst=0.0 if worst is None else float(worst.metric), worst_case="" if worst is None else worst.case,
        worst_rel_err=max(rels) if rels else None,
        failures=[f"{r.case}: {r.message}" for r in failed[:5]]
        + ([f"... and {len(failed) - 5} more failing cases"] if len(failed) > 5 else []))


def _run_golden(checks: Checks, g: GoldenCheck) -> CaseResult | None:
    """A golden case's result, or None when the backend does not support the case's scheme variant."""
    try:
        if not checks.backend.supports(g.scheme, g.op):
            return None
        return g.run(checks)
    except Exception as exc:  # noqa: BLE001 - reported as the case's failure
        return CaseResult(g.name, False, float("inf"), message="backend raised "
                          + traceback.format_exception_only(type(exc), exc)[-1].strip())


def run_cell(checks: Checks, sut: SchemeUnderTest, op: str, quick: bool = False,
             golden: list[GoldenCheck] | None = None) -> CellResult:
    """Run every case of one scheme x op (or report it unsupported)."""
    try:
        cap = checks.backend.supports(sut.scheme, op)
    except Exception as exc:  # noqa: BLE001
        return CellResult(sut.label, op, "error", reason=f"supports() raised {type(exc).__name__}: {exc}")
    if not cap:
        return CellResult(sut.label, op, "unsupported", reason=cap.reason or "no reason given")
    try:
        case_list = _CASES[op](sut.scheme, quick)
    except DsqError as exc:  # a scheme the case generator cannot build inputs for
        return CellResult(sut.label, op, "error", reason=f"building cases: {exc}")
    check = getattr(checks, op)
    results = [check(sut.scheme, case) for case in case_list]
    if sut.preset:
        for g in golden or []:
            if g.preset == sut.label and g.op == op:
                r = _run_golden(checks, g)
                if r is not None:
                    results.append(r)
    return _aggregate(sut.label, op, results)


def run_conformance(backend: str | Backend, quick: bool = False, emulate: bool = False,
                    schemes: Iterable[str] | None = None, ops: Iterable[str] | None = None,
                    variants: bool | None = None,
                    progress: Callable[[CellResult], None] | None = None) -> ConformanceReport:
    """Compare ``backend`` with the cpu reference over every scheme x op; returns the report.

    ``quick`` uses small shapes and fewer cases (and skips the scheme variants unless ``variants=True``).
    ``schemes``/``ops`` restrict the run; ``progress`` is called after each cell.
    """
    b = load_backend(backend, emulate)
    ref = get_backend("cpu-reference")
    checks = Checks(b, ref)
    golden = golden_checks(ref)
    ops = list(ops or OPS)
    for op in ops:
        if op not in OPS:
            raise DsqError(f"unknown op {op!r}; ops are {', '.join(OPS)}")
    cells = []
    for sut in schemes_under_test(schemes, variants=(not quick) if variants is None else variants):
        for op in ops:
            cell = run_cell(checks, sut, op, quick, golden)
            cells.append(cell)
            if progress:
                progress(cell)
    device, versions = environment(b)
    return ConformanceReport(backend=b.name, mode=backend_mode(b, emulate), device=device, quick=quick,
                             date=now(), versions=versions, cells=cells)


__all__ = ["run_conformance", "run_cell", "schemes_under_test", "load_backend", "SchemeUnderTest",
           "BITWISE_OPS", "VARIANTS"]
