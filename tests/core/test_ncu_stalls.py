"""benchmarks/cuda/ncu_stalls.py reads the committed H200 profile the way cuda.md v9 quotes it."""

import bench_scripts
import pytest

ROOT = bench_scripts.ROOT
PROFILE = ROOT / "benchmarks/cuda/results/h200_v9_ncu_source_fixup.csv.gz"


def _tool():
    return bench_scripts.load("benchmarks/cuda/ncu_stalls.py")


def test_reads_the_per_instruction_table_and_ranks_stalls(capsys):
    tool = _tool()
    header, rows = tool.read_rows(str(PROFILE))
    assert len(rows) == 840 and "stall_long_sb" in header
    assert tool.main([str(PROFILE), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "3472 warp-stall samples" in out
    assert "| long_sb | 34.0% |" in out and "| barrier | 22.4% |" in out
    top = [line for line in out.splitlines() if line.startswith("| 10.6% |")]
    assert len(top) == 1 and "BAR.SYNC" in top[0]


def test_a_file_without_the_table_is_refused(tmp_path):
    bad = tmp_path / "log.csv"
    bad.write_text("==PROF== Connected\n")
    with pytest.raises(SystemExit, match="log.csv: no per-instruction table"):
        _tool().read_rows(str(bad))
