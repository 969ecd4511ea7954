"""The conformance suite can fail: each broken backend is caught, and legitimate differences are not."""

from __future__ import annotations

import pytest
from broken_backends import (
    CorrectCopy,
    FlippedBitPack,
    HalfAwayRounding,
    MatmulOnePercent,
    UlpNoise,
    WrongCombine,
)

import dsq
from dsq_conformance import run_conformance

INT_ACT_SCHEMES = ["W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC"]


def _status(report) -> dict[tuple[str, str], str]:
    return {(c.scheme, c.op): c.status for c in report.cells}


def test_correct_backend_passes_everything():
    report = run_conformance(CorrectCopy(), quick=True)
    assert report.passed, report.to_markdown()
    assert report.counts()["pass"] >= 40


def test_one_flipped_bit_in_packing_is_caught():
    report = run_conformance(FlippedBitPack(), quick=True, ops=["calibrate", "pack"])
    st = _status(report)
    for s in dsq.list_schemes():
        assert st[(s, "pack")] == "fail", s
        assert st[(s, "calibrate")] == "pass", s
    assert not report.passed


def test_round_half_away_from_zero_is_caught():
    report = run_conformance(HalfAwayRounding(), quick=True, ops=["pack", "quantize_activation"])
    st = _status(report)
    for s in dsq.list_schemes():  # ties in the edge-case weights of every scheme
        assert st[(s, "pack")] == "fail", s
    for s in INT_ACT_SCHEMES + ["W4AFP8", "FP8_BLOCK"]:
        assert st[(s, "quantize_activation")] == "fail", s
    cell = next(c for c in report.cells if c.scheme == "W8A8_DYNAMIC" and c.op == "quantize_activation")
    assert any("exact-ties" in f for f in cell.failures), cell.failures


def test_one_percent_matmul_error_is_caught():
    report = run_conformance(MatmulOnePercent(), quick=True, ops=["matmul"])
    st = _status(report)
    assert all(st[(s, "matmul")] == "fail" for s in dsq.list_schemes()), report.to_markdown()


def test_wrong_moe_combine_is_caught():
    report = run_conformance(WrongCombine(), quick=True, ops=["moe"])
    st = _status(report)
    assert all(st[(s, "moe")] == "fail" for s in dsq.list_schemes()), report.to_markdown()


def test_one_ulp_noise_in_products_and_moe_intermediates_passes():
    report = run_conformance(UlpNoise(), quick=True, ops=["matmul", "moe"])
    assert report.passed, report.to_markdown()
    worst = max(c.worst for c in report.cells if c.status == "pass")
    assert worst > 0  # the noise is visible, and within the bounds


@pytest.mark.parametrize("op", ["matmul", "moe"])
def test_report_names_the_worst_case(op):
    report = run_conformance(MatmulOnePercent(), quick=True, schemes=["W8A16"], ops=[op])
    md = report.to_markdown()
    assert "W8A16" in md and "| " + op in md
    assert report.to_dict()["cells"][0]["worst"] > 0
