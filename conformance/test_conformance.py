"""One test per scheme x op: the backend (``--backend``, default cpu) against the numpy reference.

Unsupported pairs are skipped with the backend's own reason; a failure lists the worst cases.
"""

from __future__ import annotations

import pytest

from dsq.backend import OPS
from dsq_conformance.runner import run_cell, schemes_under_test

SCHEMES = schemes_under_test(variants=True)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("sut", SCHEMES, ids=[s.label for s in SCHEMES])
def test_conformance(conformance_session, request, sut, op):
    backend, checks, golden, cells = conformance_session
    quick = request.config.getoption("--quick")
    if quick and not sut.preset:
        pytest.skip("scheme variants are checked in full mode only")
    cell = run_cell(checks, sut, op, quick, golden)
    cells.append(cell)
    if cell.status == "unsupported":
        pytest.skip(f"{backend.name}: unsupported: {cell.reason}")
    assert cell.status == "pass", (
        f"{backend.name} {sut.label} {op}: {cell.failed}/{cell.cases} cases fail "
        f"(worst: {cell.summary()})\n" + "\n".join(cell.failures))
