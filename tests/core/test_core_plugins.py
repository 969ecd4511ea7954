"""Plugin discovery: built-ins come through the entry-point group; broken plugins are reported, not fatal."""

import importlib.metadata
import subprocess
import sys

import pytest
import torch

import dsq
from dsq import plugins, registry


@pytest.fixture
def fresh_registry():
    registry.refresh()
    yield
    for name in ("broken-import", "broken-hook", "toy"):
        plugins.unregister_plugin(name)
        plugins.load_errors.pop(name, None)
        plugins.load_errors.pop(name + ".traceback", None)
    registry.refresh()


def test_builtin_backends_come_from_entry_points():
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="dsq.backends")}
    assert names["cpu-reference"] == "dsq_cpu_reference"
    assert {"cuda", "ascend"} <= set(names)
    plugins.load_plugins()
    assert plugins.pm.get_plugin("cpu-reference") is not None


def test_broken_plugin_is_reported_and_others_still_load(fresh_registry, monkeypatch):
    real = plugins._entry_points()
    fake = importlib.metadata.EntryPoint(name="broken-import", value="no_such_module_for_dsq", group="dsq.backends")
    monkeypatch.setattr(plugins, "_entry_points", lambda: real + [fake])
    plugins.load_plugins(force=True)
    errors = dsq.plugin_errors()
    assert "broken-import" in errors and "ModuleNotFoundError" in errors["broken-import"]
    assert dsq.get_backend("cpu").name == "cpu-reference"
    with pytest.raises(dsq.UnknownNameError, match="broken-import: ModuleNotFoundError"):
        dsq.get_backend("nope")


def test_plugin_whose_hook_raises_is_reported(fresh_registry):
    class Broken:
        @dsq.hookimpl
        def dsq_register_backends(self, register):
            raise RuntimeError("driver exploded")

    plugins.register_plugin(Broken(), name="broken-hook")
    registry.refresh()
    assert "driver exploded" in dsq.plugin_errors()["broken-hook"]
    assert any(b.name == "cpu-reference" for b in dsq.list_backends())


def test_in_process_plugin_registration(fresh_registry):
    class Toy(dsq.Backend):
        name, aliases = "toy", ("toy-alias",)

        def is_available(self):
            return False, "toy backends never run"

    class Plugin:
        @dsq.hookimpl
        def dsq_register_backends(self, register):
            register(Toy())

    plugins.register_plugin(Plugin(), name="toy")
    registry.refresh()
    assert dsq.get_backend("TOY-ALIAS", require_available=False).name == "toy"
    with pytest.raises(dsq.BackendUnavailableError, match="toy backends never run"):
        dsq.get_backend("toy")
    caps = dsq.get_backend("toy", require_available=False).capabilities()
    assert set(caps) == set(dsq.list_schemes()) and set(caps["W8A16"]) == set(dsq.OPS)


def test_import_dsq_survives_a_broken_entry_point(tmp_path):
    """A distribution on sys.path whose dsq.backends entry point cannot import: dsq still imports and lists it."""
    dist = tmp_path / "brokenvendor-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenvendor\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dsq.backends]\nbrokenvendor = brokenvendor_missing_module\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import dsq; print(sorted(dsq.plugin_errors())); "
            "print(dsq.get_backend('cpu').name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "brokenvendor" in out and "cpu-reference" in out


def test_cli_backends_lists_availability_and_matrix():
    from dsq.cli import main

    assert main(["backends"]) == 0


def test_cli_backends_json(capsys):
    import json

    from dsq.cli import main

    main(["backends", "--json"])
    data = json.loads(capsys.readouterr().out)
    ref = next(b for b in data["backends"] if b["name"] == "cpu-reference")
    assert ref["available"] is True
    assert ref["capabilities"]["W4A16"]["quantize_activation"]["supported"] is False
    assert ref["capabilities"]["FP8_BLOCK"]["moe"]["supported"] is True
    assert torch.__version__  # torch imported fine alongside
