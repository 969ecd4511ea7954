"""``dsq demo`` on a shortened run: two presets, 200 held-out bytes, cpu reference backend."""

import json

import pytest

from dsq.cli import main
from dsq.errors import DsqError
from dsq.tiny.demo import run_demo


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = main(["demo", "--backend", "cpu", "--presets", "w8a16", "w4a16", "--max-tokens", "200",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_tiny_demo_table(demo_out, capsys):
    res = json.loads((demo_out / "results.json").read_text())
    rows = {r["preset"]: r for r in res["rows"]}
    assert list(rows) == ["bf16", "w8a16", "w4a16"]
    assert res["backend"] == "cpu-reference" and res["max_tokens"] == 200
    # int8 per channel: 8 bits + one scale per 256- or 128-wide row; int4 group 128: 4 bits + a scale per 128
    assert 8.0 < rows["w8a16"]["bits_per_weight"] < 8.6
    assert 4.0 < rows["w4a16"]["bits_per_weight"] < 4.6
    assert rows["w4a16"]["size_bytes"] < rows["w8a16"]["size_bytes"] < rows["bf16"]["size_bytes"]
    for name in ("w8a16", "w4a16"):
        r = rows[name]
        assert r["reload"] == "identical" and not r["error"]
        assert r["ppl"] == pytest.approx(rows["bf16"]["ppl"] * (1 + r["delta_pct"] / 100), rel=1e-9)
        assert abs(r["delta_pct"]) < 10.0  # a trained model; a broken quantizer gives far more
        assert (demo_out / "checkpoints" / name / "config.json").is_file()
    assert abs(rows["w8a16"]["delta_pct"]) < abs(rows["w4a16"]["delta_pct"]) + 0.5


def test_tiny_demo_report_and_plot(demo_out):
    report = (demo_out / "report.md").read_text()
    assert "| preset" in report and "w4a16" in report and "size_vs_ppl.png" in report
    assert (demo_out / "size_vs_ppl.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_demo_refuses_to_overwrite(demo_out):
    with pytest.raises(DsqError, match="already exists"):
        run_demo(backend="cpu", out=demo_out, presets=["w8a16"], max_tokens=50, progress=False)
    assert main(["demo", "--out", str(demo_out), "--presets", "w8a16"]) == 2


def test_tiny_demo_unknown_preset(tmp_path):
    with pytest.raises(DsqError, match="unknown recipe"):
        run_demo(backend="cpu", out=tmp_path, presets=["w3a3"], progress=False)


def test_tiny_eval_reads_demo_checkpoint(demo_out, capsys):
    rows = {r["preset"]: r for r in json.loads((demo_out / "results.json").read_text())["rows"]}
    capsys.readouterr()
    ckpt = demo_out / "checkpoints" / "w4a16"
    assert main(["eval", str(ckpt), "--backend", "cpu", "--max-tokens", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "dsq" and out["backend"] == "cpu"
    assert out["ppl"] == pytest.approx(rows["w4a16"]["ppl"], rel=1e-9)  # reloaded == in-memory quantized model
    assert main(["eval", str(ckpt), "--max-tokens", "50", "--json"]) == 0  # no --backend: the default, named
    assert json.loads(capsys.readouterr().out)["backend"] == "cpu"
