"""benchmarks/cuda/plot_decode.py reads the committed H200 v10 run the way cuda.md v10 quotes it."""

import bench_scripts
import pytest

ROOT = bench_scripts.ROOT
RUN = ROOT / "benchmarks/cuda/results/h200_v10_decode.json"


def _tool():
    return bench_scripts.load("benchmarks/cuda/plot_decode.py")


def test_speedups_are_bf16_time_over_method_time():
    import json

    tool = _tool()
    shapes, series = tool.speedups(json.loads(RUN.read_text()), 1)
    assert shapes[0] == "7168x18432" and len(shapes) == 8
    assert series["W4A16"][0] == pytest.approx(81.2 / 39.0, rel=2e-3)  # cuda.md v10: 2.08x (39.0 us)
    assert series["tinygemm"][0] == pytest.approx(1.95, abs=0.01)
    assert "W4A16@v9" in series and series["W4A16@v9"][0] == pytest.approx(1.91, abs=0.01)


def test_writes_one_panel_per_decode_m(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "decode.png"
    assert _tool().main([str(RUN), str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_by_m_is_the_range_and_median_over_the_shapes(tmp_path):
    """--by-m on the v18 run: W4A16 at M = 1 spans 1.41-2.30x bf16 over the 8 shapes (cuda.md v18's table)."""
    import json

    tool = _tool()
    res = json.loads((ROOT / "benchmarks/cuda/results/h200_v18_final.json").read_text())
    rows = {m: (lo, med, hi) for m, lo, med, hi in tool.by_m(res, "W4A16")}
    assert sorted(rows) == [1, 16, 64, 128, 256, 1024, 4096]
    lo, med, hi = rows[1]
    assert lo == pytest.approx(1.41, abs=0.01) and hi == pytest.approx(2.30, abs=0.01) and lo < med < hi
    pytest.importorskip("matplotlib")
    png = tmp_path / "by_m.png"
    assert tool.main(["--by-m", str(ROOT / "benchmarks/cuda/results/h200_v18_final.json"), str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
