"""pytest entry of the conformance suite: ``pytest conformance --backend NAME [--emulate] [--quick]``.

The same checks as ``dsq conformance``: one test per scheme x op, skipped (with the backend's reason) when
the backend does not support it. ``--conformance-report FILE`` also writes the JSON + markdown report.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("dsq conformance")
    group.addoption("--backend", default="cpu", help="backend to check against the cpu reference (default cpu)")
    group.addoption("--emulate", action="store_true",
                    help="set DSQ_EMULATE=1 before loading the backend (ascend: emulated torch_npu ops)")
    group.addoption("--quick", action="store_true", help="small shapes and fewer cases (slow backends, CI)")
    group.addoption("--conformance-report", default=None, metavar="FILE",
                    help="write the report to FILE (.json, .md, or both when FILE has another suffix)")


def pytest_configure(config):
    if config.getoption("--emulate"):
        os.environ["DSQ_EMULATE"] = "1"  # before any backend is built


@pytest.fixture(scope="session")
def conformance_session(request):
    """(backend, checks, golden checks, collected cells) shared by every conformance test."""
    import dsq
    from dsq_conformance.checks import Checks
    from dsq_conformance.golden import golden_checks
    from dsq_conformance.runner import load_backend

    backend = load_backend(request.config.getoption("--backend"), request.config.getoption("--emulate"))
    ref = dsq.get_backend("cpu-reference")
    cells: list = []
    yield backend, Checks(backend, ref), golden_checks(ref), cells
    path = request.config.getoption("--conformance-report")
    if path and cells:
        from dsq_conformance.report import ConformanceReport, environment, now
        from dsq_conformance.runner import backend_mode

        device, versions = environment(backend)
        ConformanceReport(backend.name, backend_mode(backend, request.config.getoption("--emulate")), device,
                          request.config.getoption("--quick"), now(), versions, cells).write(path)
