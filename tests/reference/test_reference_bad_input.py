"""Bad input to the reference backend: every case raises a dsq error that names the tensor and the expected form.

Complements test_reference_backend.test_bad_inputs_have_clear_errors (NaN weights, int weights, 1-D weights,
wrong K, missing act_stats, out-of-range expert ids, float topk_ids).
"""

import numpy as np
import pytest
import torch

import dsq

REF = dsq.get_backend("cpu")
DYN = dsq.get_scheme("w8a8_dynamic")
STATIC = dsq.get_scheme("w8a8")


def _experts(scheme=DYN, e=2, i=8, h=16):
    g = torch.Generator().manual_seed(0)
    return dsq.ExpertWeights(REF.quantize_weight(torch.randn(e, 2 * i, h, generator=g), scheme),
                             REF.quantize_weight(torch.randn(e, h, i, generator=g), scheme))


@pytest.mark.parametrize("value,counts", [(float("inf"), "0 NaN and 1 Inf"), (float("-inf"), "0 NaN and 1 Inf"),
                                          (float("nan"), "1 NaN and 0 Inf")])
def test_non_finite_weights_and_activations(value, counts):
    w = torch.randn(4, 16)
    w[3, 7] = value
    with pytest.raises(dsq.QuantInputError, match=rf"weight has {counts} values \(first at index \(3, 7\)\)"):
        REF.calibrate(w, DYN)
    with pytest.raises(dsq.QuantInputError, match=rf"weight has {counts}"):
        REF.pack(w, REF.calibrate(torch.randn(4, 16), DYN), DYN)
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    x[1, 2] = value
    with pytest.raises(dsq.QuantInputError, match=rf"x has {counts} values \(first at index \(1, 2\)\)"):
        REF.quantize_activation(x, DYN)
    with pytest.raises(dsq.QuantInputError, match=rf"x has {counts}"):
        REF.matmul(x, REF.quantize_weight(torch.randn(4, 16), DYN), DYN)


def test_activation_dtype_and_shape():
    packed = REF.quantize_weight(torch.randn(4, 16), DYN)
    with pytest.raises(dsq.QuantInputError, match="x has dtype torch.float64; expected one of float32"):
        REF.matmul(torch.randn(2, 16, dtype=torch.float64), packed, DYN)
    with pytest.raises(dsq.QuantInputError, match=r"x has shape \(1, 2, 16\); expected \[M, K\]"):
        REF.matmul(torch.randn(1, 2, 16), packed, DYN)
    with pytest.raises(dsq.QuantInputError, match="weight has dtype torch.float64"):
        REF.calibrate(torch.randn(4, 16, dtype=torch.float64), DYN)
    with pytest.raises(dsq.QuantInputError, match=r"weight has shape \(0, 16\).*every dimension >= 1"):
        REF.calibrate(torch.ones(0, 16), DYN)


def test_packed_weight_must_fit_its_scheme():
    packed = REF.quantize_weight(torch.randn(4, 16), DYN)
    with pytest.raises(dsq.QuantInputError, match="made for scheme W8A8_DYNAMIC, but is used with W8A16"):
        REF.matmul(torch.randn(2, 16), packed, dsq.get_scheme("w8a16"))
    with pytest.raises(dsq.QuantInputError, match=r"weight_scale has shape \(3, 1\); W8A8_DYNAMIC expects \(4, 1\)"):
        REF.pack(torch.randn(4, 16), dsq.QParams(weight_scale=torch.ones(3, 1)), DYN)


@pytest.mark.parametrize("bias,match", [
    (torch.zeros(5), r"bias has shape \(5,\); expected \[N\] = \[4\]"),
    (torch.tensor([0.0, float("nan"), 0.0, 0.0]), r"bias has 1 NaN and 0 Inf values \(first at index \(1,\)\)"),
    (torch.tensor([0.0, 0.0, float("inf"), 0.0]), "bias has 0 NaN and 1 Inf"),
    (torch.zeros(4, dtype=torch.int64), "bias has dtype torch.int64; expected one of float32"),
])
def test_bad_bias(bias, match):
    packed = REF.quantize_weight(torch.randn(4, 16), DYN)
    with pytest.raises(dsq.QuantInputError, match=match):
        REF.matmul(torch.randn(2, 16), packed, DYN, bias)


@pytest.mark.parametrize("ids,weights,match", [
    (torch.tensor([[0], [-1], [1]]), torch.ones(3, 1), r"topk_ids has values in \[-1, 1\]; expected expert ids in \[0, 2\)"),
    (torch.tensor([[0], [1]]), torch.ones(2, 1), "topk_ids has 2 rows; x has T=3 tokens"),
    (torch.tensor([0, 1, 1]), torch.ones(3), r"topk_ids has dtype torch.int64 and shape \(3,\); expected integer \[T, k\]"),
    (torch.tensor([[0], [1], [1]]), torch.ones(3, 2), r"topk_weights .* shape \(3, 2\); expected float of the same shape"),
    (torch.tensor([[0], [1], [1]]), torch.ones(3, 1, dtype=torch.int64), "topk_weights has dtype torch.int64"),
    (torch.tensor([[0], [1], [1]]), torch.tensor([[1.0], [float("nan")], [1.0]]), "topk_weights has 1 NaN"),
])
def test_bad_routing(ids, weights, match):
    with pytest.raises(dsq.QuantInputError, match=match):
        REF.moe(torch.randn(3, 16), ids, weights, _experts(), DYN)


def test_bad_expert_stacks_and_range():
    ex = _experts()
    ids, tw = torch.tensor([[0], [1], [1]]), torch.ones(3, 1)
    with pytest.raises(dsq.QuantInputError, match=r"experts.down has shape \(2, 16, 16\); expected \[E, H, I\] = \(2, 8, 8\)"):
        REF.moe(torch.randn(3, 16), ids, tw, dsq.ExpertWeights(ex.down, ex.gate_up), DYN)
    with pytest.raises(dsq.QuantInputError, match="x has 8 features"):
        REF.moe(torch.randn(3, 8), ids, tw, ex, DYN)
    with pytest.raises(dsq.QuantInputError, match=r"expert_range \(1, 3\) must satisfy 0 <= lo <= hi <= E=2"):
        REF.moe(torch.randn(3, 16), ids, tw, ex, DYN, expert_range=(1, 3))


@pytest.mark.parametrize("stats,match", [
    (dsq.ActStats.empty(), r"act_stats has min_val=inf, max_val=-inf; expected finite bounds"),
    (dsq.ActStats(float("nan"), 1.0), "act_stats has min_val=nan"),
    (dsq.ActStats(2.0, 1.0), r"act_stats has min_val=2.0 > max_val=1.0; expected min_val <= max_val"),
    ("min=-1,max=1", r"act_stats is 'min=-1,max=1'; expected dsq.ActStats\(min_val, max_val\)"),
    (dsq.ActStats(None, 1.0), r"act_stats is ActStats\(min_val=None.*expected dsq.ActStats"),
])
def test_bad_static_activation_stats(stats, match):
    with pytest.raises(dsq.QuantInputError, match=match):
        REF.calibrate(torch.randn(4, 16), STATIC, stats)


def test_stacked_static_stats_name_the_expert():
    with pytest.raises(dsq.QuantInputError, match="got 1 ActStats for 2 stacked weights"):
        REF.calibrate(torch.randn(2, 4, 16), STATIC, [dsq.ActStats(-1.0, 1.0)])
    with pytest.raises(dsq.QuantInputError, match=r"act_stats\[1\] has min_val=inf"):
        REF.calibrate(torch.randn(2, 4, 16), STATIC, [dsq.ActStats(-1.0, 1.0), dsq.ActStats.empty()])
    # numeric bounds of any kind are accepted and give the same scale as python floats
    a = REF.calibrate(torch.randn(4, 16), STATIC, dsq.ActStats(np.float32(-1.5), torch.tensor(2.25)))
    b = REF.calibrate(torch.randn(4, 16), STATIC, dsq.ActStats(-1.5, 2.25))
    assert torch.equal(a.input_scale, b.input_scale) and torch.equal(a.input_zero_point, b.input_zero_point)
