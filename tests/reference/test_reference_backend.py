"""Behaviour of the numpy reference backend: shapes, stacked experts, MoE semantics, edge cases, bad input."""

import numpy as np
import pytest
import torch

import dsq

REF = dsq.get_backend("cpu")
SCHEMES = dsq.list_schemes()


def _stats(scheme):
    return dsq.ActStats(-2.0, 3.0) if scheme.static_activations else None


@pytest.mark.parametrize("name", SCHEMES)
def test_stacked_pack_equals_per_expert_pack(name):
    scheme = dsq.get_scheme(name)
    w = torch.randn(3, 24, 136)
    stacked = REF.quantize_weight(w, scheme, _stats(scheme))
    for e in range(3):
        single = REF.quantize_weight(w[e], scheme, _stats(scheme))
        for key, t in single.tensors.items():
            s = stacked.expert(e)[key]
            assert torch.equal(s.view(torch.uint8) if s.dtype == torch.float8_e4m3fn else s,
                               t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t), key


@pytest.mark.parametrize("name", SCHEMES)
def test_matmul_equals_dequantized_product(name):
    """matmul == quantized activations (dequantized) @ dequantized weights, in float64, rounded once."""
    scheme = dsq.get_scheme(name)
    torch.manual_seed(1)
    w, x, b = torch.randn(20, 130), torch.randn(6, 130), torch.randn(20)
    packed = REF.quantize_weight(w, scheme, _stats(scheme))
    _, w_deq = REF.unpack(packed, scheme)
    if scheme.weight_only:
        x_deq = x.double()
    else:
        qa = REF.quantize_activation(x, scheme, packed)
        vals = qa.values.double() if qa.values.dtype != torch.float8_e4m3fn else qa.values.to(torch.float64)
        if qa.zero_point is not None:
            vals = vals - qa.zero_point.double()
        s = qa.scale.double()
        if s.shape[-1] not in (1, 130) and s.ndim == 2:
            s = s.repeat_interleave(scheme.act_group_size, dim=1)[:, :130]
        x_deq = vals * s
    expected = (x_deq @ w_deq.double().T + b.double()).float()
    y = REF.matmul(x, packed, scheme, bias=b)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    # and quantization error is what the scheme promises: small against the float product
    rel = float((y - x @ w.T - b).norm() / (x @ w.T).norm())
    # (static W8A8 also clips the few |x| > 3 that lie outside the calibrated range)
    assert rel < (0.2 if scheme.weight_bits == 4 else 0.1 if scheme.static_activations else 0.06), rel


def _naive_moe(x, ids, weights, experts_w, scheme, lo, hi):
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            if not lo <= e < hi:
                continue
            h = REF.matmul(x[t:t + 1], experts_w.gate_up.expert(e), scheme)
            i = h.shape[1] // 2
            a = (torch.nn.functional.silu(h[:, :i].float()) * h[:, i:].float()).to(x.dtype)
            o = REF.matmul(a, experts_w.down.expert(e), scheme)
            out[t] += float(weights[t, j]) * o[0].double()
    return out.to(x.dtype)


@pytest.mark.parametrize("name", ["W8A16", "W4A8_DYNAMIC", "FP8_BLOCK", "W8A8"])
def test_moe_matches_per_token_loop(name):
    scheme = dsq.get_scheme(name)
    torch.manual_seed(2)
    e, h, i, t, k = 4, 64, 32, 7, 2
    gate_up, down = torch.randn(e, 2 * i, h) / 8, torch.randn(e, h, i) / 6
    experts = dsq.ExpertWeights(REF.quantize_weight(gate_up, scheme, _stats(scheme)),
                                REF.quantize_weight(down, scheme, _stats(scheme)))
    x = torch.randn(t, h, dtype=torch.bfloat16)
    ids = torch.tensor([[0, 1], [1, 0], [3, 3], [0, 2], [2, 1], [0, 1], [1, 0]])[:t, :k]
    wts = torch.rand(t, k)
    for lo, hi in [(0, e), (1, 3)]:
        y = REF.moe(x, ids, wts, experts, scheme, expert_range=(lo, hi))
        torch.testing.assert_close(y, _naive_moe(x, ids, wts, experts, scheme, lo, hi), rtol=1e-2, atol=1e-3)
    # expert ranges partition the work: the sum over ranks equals the full layer
    parts = sum(REF.moe(x, ids, wts, experts, scheme, expert_range=r).float() for r in [(0, 2), (2, 4)])
    torch.testing.assert_close(parts, REF.moe(x, ids, wts, experts, scheme).float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", SCHEMES)
def test_edge_values_never_give_zero_or_nan_scales(name):
    scheme = dsq.get_scheme(name)
    w = torch.zeros(4, 256)
    w[1, 3] = 1e30  # one huge outlier
    w[2] = 1e-40  # subnormal float32 values
    w[3, :5] = torch.tensor([-448.0, 448.0, 1e-45, -1e-45, 0.5])
    qp = REF.calibrate(w, scheme, _stats(scheme))
    assert torch.isfinite(qp.weight_scale.float()).all() and (qp.weight_scale.float() > 0).all()
    codes, deq = REF.unpack(REF.pack(w, qp, scheme), scheme)
    assert torch.isfinite(deq).all()
    assert deq[0].abs().max() == 0


def test_bad_inputs_have_clear_errors():
    s = dsq.get_scheme("w8a8_dynamic")
    bad = torch.randn(4, 8)
    bad[2, 5] = float("nan")
    with pytest.raises(dsq.QuantInputError, match=r"weight has 1 NaN.*index \(2, 5\)"):
        REF.calibrate(bad, s)
    with pytest.raises(dsq.QuantInputError, match="dtype torch.int32"):
        REF.calibrate(torch.ones(4, 8, dtype=torch.int32), s)
    with pytest.raises(dsq.QuantInputError, match=r"shape \(8,\)"):
        REF.calibrate(torch.ones(8), s)
    packed = REF.quantize_weight(torch.randn(4, 8), s)
    with pytest.raises(dsq.QuantInputError, match="weight expects K=8"):
        REF.matmul(torch.randn(2, 9), packed, s)
    with pytest.raises(dsq.QuantInputError, match="static activations"):
        REF.calibrate(torch.randn(4, 8), dsq.get_scheme("w8a8"))
    with pytest.raises(dsq.UnsupportedError, match="weight-only"):
        REF.quantize_activation(torch.randn(2, 8), dsq.get_scheme("w4a16"))
    experts = dsq.ExpertWeights(REF.quantize_weight(torch.randn(2, 8, 16), s), REF.quantize_weight(torch.randn(2, 16, 4), s))
    with pytest.raises(dsq.QuantInputError, match=r"expert ids in \[0, 2\)"):
        REF.moe(torch.randn(3, 16), torch.tensor([[0], [1], [2]]), torch.ones(3, 1), experts, s)
    with pytest.raises(dsq.QuantInputError, match="expected integer"):
        REF.moe(torch.randn(3, 16), torch.ones(3, 1), torch.ones(3, 1), experts, s)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(dsq.UnknownNameError, match="known schemes: W8A16, W4A16"):
        dsq.get_scheme("w3a5")
    with pytest.raises(dsq.UnknownNameError, match="cpu-reference"):
        dsq.get_backend("tpu")
    assert dsq.get_backend("NumPy") is dsq.get_backend("cpu-reference")
    assert dsq.get_scheme("W4A8-dynamic") == dsq.get_scheme("w4a8_dynamic")
    with pytest.raises(dsq.SchemeError, match="group_size"):
        dsq.get_scheme("w4a16", group_size=0)


def test_scheme_round_trips_through_dict():
    for name in SCHEMES:
        s = dsq.get_scheme(name, scale_dtype="bfloat16")
        assert dsq.QuantScheme.from_dict(s.to_dict()) == s
    assert np.isclose(dsq.get_scheme("w4a16").weight_divisor(), 7.5)
    assert dsq.get_scheme("w4a16", scale_rule="qmax").weight_divisor() == 7.0
