"""The numpy reference reproduces the hand-derived golden vectors (conformance/dsq_conformance/golden)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dsq
from dsq_cpu_reference.packing import unpack_zero_points

GOLDEN = Path(__file__).resolve().parents[2] / "conformance" / "dsq_conformance" / "golden" / "hand_derived.json"
CASES = json.loads(GOLDEN.read_text())["cases"]
REF = dsq.get_backend("cpu")


def _codes_np(t: torch.Tensor) -> np.ndarray:
    return (t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t).numpy().astype(np.int64)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_case(case):
    scheme = dsq.get_scheme(case["scheme"], **case["overrides"])
    inp, exp = case["input"], case["expected"]
    if case["op"] == "weight":
        w = torch.tensor(inp["weight"], dtype=torch.float32)
        stats = inp.get("act_stats")
        stats = dsq.ActStats(stats["min"], stats["max"]) if stats else None
        qp = REF.calibrate(w, scheme, stats)
        packed = REF.pack(w, qp, scheme)
        codes, deq = REF.unpack(packed, scheme)
        np.testing.assert_array_equal(packed["weight_scale"].float().numpy(), np.float32(exp["weight_scale"]))
        np.testing.assert_array_equal(_codes_np(codes), exp["codes"])
        if "weight_packed" in exp:
            np.testing.assert_array_equal(packed["weight_packed"].numpy(), exp["weight_packed"])
        if "weight_group_scale" in exp:
            np.testing.assert_array_equal(packed["weight_group_scale"].numpy(), exp["weight_group_scale"])
        if "weight_zero_point" in exp:
            np.testing.assert_array_equal(packed["weight_zero_point"].numpy(), exp["weight_zero_point"])
            zp = unpack_zero_points(packed["weight_zero_point"].numpy(), w.shape[0])
            np.testing.assert_array_equal(zp, exp["weight_zero_point_unpacked"])
        if "input_scale" in exp:
            np.testing.assert_array_equal(packed["input_scale"].numpy(), np.float32(exp["input_scale"]))
            np.testing.assert_array_equal(packed["input_zero_point"].numpy(), exp["input_zero_point"])
        if "dequantized" in exp:
            np.testing.assert_array_equal(deq.numpy(), np.float32(exp["dequantized"]))
    elif case["op"] == "activation":
        x = torch.tensor(inp["x"], dtype=torch.float32)
        src = None
        if "input_scale" in inp:
            src = dsq.QParams(weight_scale=torch.ones(1), input_scale=torch.tensor(inp["input_scale"]),
                              input_zero_point=torch.tensor(inp["input_zero_point"], dtype=torch.int8))
        qa = REF.quantize_activation(x, scheme, src)
        np.testing.assert_array_equal(_codes_np(qa.values), exp["codes"])
        np.testing.assert_array_equal(qa.scale.numpy(), np.float32(exp["scale"]))
        if "zero_point" in exp:
            np.testing.assert_array_equal(qa.zero_point.numpy(), exp["zero_point"])
    else:
        w = torch.tensor(inp["weight"], dtype=torch.float32)
        packed = REF.quantize_weight(w, scheme)
        y = REF.matmul(torch.tensor(inp["x"], dtype=torch.float32), packed, scheme)
        np.testing.assert_array_equal(y.numpy(), np.float32(exp["y"]))


def test_every_preset_has_a_golden_case():
    covered = {c["scheme"].upper() for c in CASES}
    assert covered == set(dsq.list_schemes())
