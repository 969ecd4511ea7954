"""The example out-of-tree backend is found through its entry point and passes; the CLI reports and exits
with the right status (0 pass, 1 fail)."""

from __future__ import annotations

import importlib.metadata
import json

from broken_backends import MatmulOnePercent

import dsq
from dsq.cli import main
from dsq.plugins import register_plugin, unregister_plugin
from dsq.registry import refresh
from dsq_conformance import run_conformance


def test_example_backend_is_discovered_through_its_entry_point():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="dsq.backends")}
    assert eps.get("example-torch") == "dsq_example_backend.plugin", (
        "the example backend is not installed: pip install -e examples/dsq-example-backend (ci/install.sh does)")
    backend = dsq.get_backend("example-torch")
    assert type(backend).__module__.startswith("dsq_example_backend")


def test_example_backend_passes_conformance():
    report = run_conformance("example-torch", quick=True)
    assert report.passed, report.to_markdown()
    status = {(c.scheme, c.op): c.status for c in report.cells}
    for op in ("calibrate", "pack", "unpack", "matmul", "moe"):
        assert status[("W8A16", op)] == "pass"
        assert status[("W8A8_DYNAMIC", op)] == "pass"
    assert status[("W8A8_DYNAMIC", "quantize_activation")] == "pass"
    assert status[("W4A16", "matmul")] == "unsupported"
    cell = next(c for c in report.cells if c.scheme == "FP8_BLOCK" and c.op == "pack")
    assert "int8 per-channel" in cell.reason


def test_cli_json_report_and_exit_status(tmp_path, capsys):
    rc = main(["conformance", "--backend", "example", "--quick", "--scheme", "w8a16", "--json",
               "--report", str(tmp_path / "rep")])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "example-torch" and data["passed"] and data["mode"] == "native"
    assert {c["op"] for c in data["cells"]} == set(dsq.OPS)
    assert (tmp_path / "rep.json").exists()
    md = (tmp_path / "rep.md").read_text()
    assert "| W8A16  | pass      |" in md and "versions:" in md and "date:" in md


class _BrokenPlugin:
    @dsq.hookimpl
    def dsq_register_backends(self, register):
        register(MatmulOnePercent())


def test_cli_exits_1_when_a_backend_fails(tmp_path, capsys):
    register_plugin(_BrokenPlugin(), name="test-broken")
    refresh()
    try:
        rc = main(["conformance", "--backend", "test-matmul-one-percent", "--quick", "--scheme", "W8A8_DYNAMIC",
                   "--op", "matmul", "--report", str(tmp_path / "r.md")])
    finally:
        unregister_plugin("test-broken")
        refresh()
    assert rc == 1
    out = capsys.readouterr().out
    assert "**FAIL**" in out and "## Failures" in out
    assert "FAIL" in (tmp_path / "r.md").read_text()
