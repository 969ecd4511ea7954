"""The ascend backend (emulated mode) against the numpy reference, plus availability and capability checks."""

import importlib.util

import pytest
import torch

import dsq
from dsq import ActStats, ExpertWeights, QuantInputError, UnsupportedError
from dsq_ascend import AscendBackend, emulated_ops, layouts, prepare, runtime

SUPPORTED = ["W8A16", "W4A16", "W4A16_ASYM", "W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC"]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# relative Frobenius error allowed for matmul/moe: a few output roundings (a 1% error fails for fp32/fp16)
REL = {torch.float32: 2e-5, torch.bfloat16: 1.2e-2, torch.float16: 2e-3}


@pytest.fixture
def asc(monkeypatch):
    monkeypatch.setenv("DSQ_EMULATE", "1")
    return AscendBackend()


@pytest.fixture(scope="module")
def ref():
    return dsq.get_backend("cpu")


def _rel(y, want):
    return float((y.double() - want.double()).norm() / want.double().norm())


@pytest.mark.parametrize("name", SUPPORTED)
def test_calibrate_pack_unpack_bit_exact(asc, ref, name):
    scheme = dsq.get_scheme(name, group_size=32) if name in ("W4A16", "W4A16_ASYM", "W4A8_DYNAMIC") else \
        dsq.get_scheme(name)
    g = torch.Generator().manual_seed(3)
    for i, shape in enumerate([(9, 70), (2, 5, 40)]):
        dt = DTYPES[i % 3]
        w = (torch.randn(shape, generator=g) * 0.05).to(dt)
        w[..., 1, :] = 0  # an all-zero row gets the tiny scale
        stats = ActStats(-1.5, 2.25) if len(shape) == 2 else [ActStats(-1.0, 0.5 + e) for e in range(shape[0])]
        qa, qr = asc.calibrate(w, scheme, stats), ref.calibrate(w, scheme, stats)
        assert qa.tensors().keys() == qr.tensors().keys()
        for k, v in qr.tensors().items():
            assert qa.tensors()[k].dtype == v.dtype and torch.equal(qa.tensors()[k], v), (name, shape, k)
        pa, pr = asc.pack(w, qr, scheme), ref.pack(w, qr, scheme)
        assert pa.tensors.keys() == pr.tensors.keys()
        for k in pr.tensors:
            assert pa[k].dtype == pr[k].dtype and torch.equal(pa[k], pr[k]), (name, shape, k)
        (ca, da), (cr, dr) = asc.unpack(pr, scheme), ref.unpack(pr, scheme)
        assert torch.equal(ca, cr) and torch.equal(da, dr)


@pytest.mark.parametrize("name", ["W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC"])
@pytest.mark.parametrize("dt", DTYPES)
def test_quantize_activation_bit_exact(asc, ref, name, dt):
    scheme = dsq.get_scheme(name)
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(6, 50, generator=g) * 2).to(dt)
    x[2] = 0  # all-zero token: scale 2^-126
    x[3] = 1e-39 if dt == torch.float32 else 0  # denormal amax: amax / 127 is below the floor scale
    packed = ref.quantize_weight(torch.randn(4, 50, generator=g), scheme, ActStats(-1.7, 3.1))
    a, r = asc.quantize_activation(x, scheme, packed), ref.quantize_activation(x, scheme, packed)
    assert torch.equal(a.values, r.values) and torch.equal(a.scale, r.scale)
    assert (a.zero_point is None) == (r.zero_point is None)
    if r.zero_point is not None:
        assert torch.equal(a.zero_point, r.zero_point)


@pytest.mark.parametrize("rounding", ["half_even", "half_away"])
def test_static_ties_follow_act_rounding(asc, ref, rounding):
    """x / s + zp lands exactly on .5: HALF_AWAY runs npu_quantize, HALF_EVEN the torch path; both exact."""
    scheme = dsq.get_scheme("W8A8", act_rounding=rounding)
    packed = ref.quantize_weight(torch.randn(3, 8), scheme, ActStats(-2.0, 2.0))
    s, zp = float(packed["input_scale"]), float(packed["input_zero_point"])
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, -3.5])
    x = ((v - zp) * s).reshape(1, 8)
    assert torch.equal(x / s + zp, v.reshape(1, 8))  # the construction really makes ties
    a, r = asc.quantize_activation(x, scheme, packed), ref.quantize_activation(x, scheme, packed)
    assert torch.equal(a.values, r.values)
    expect = [1, 2, 3, -1, -2, -3, 4, -4] if rounding == "half_away" else [0, 2, 2, 0, -2, -2, 4, -4]
    assert a.values[0].tolist() == expect


@pytest.mark.parametrize("name", SUPPORTED)
@pytest.mark.parametrize("dt", DTYPES)
def test_matmul_close_to_reference(asc, ref, name, dt):
    scheme = dsq.get_scheme(name)
    g = torch.Generator().manual_seed(5)
    m, n, k = 5, 13, 150  # N not a multiple of 8 (int4 padding), K with a short last group
    x = torch.randn(m, k, generator=g).to(dt)
    packed = ref.quantize_weight(torch.randn(n, k, generator=g) * k**-0.5, scheme, ActStats.empty().update(x))
    bias = (torch.randn(n, generator=g) * 0.1).to(dt)
    y, want = asc.matmul(x, packed, scheme, bias), ref.matmul(x, packed, scheme, bias)
    assert y.dtype == dt and y.shape == (m, n)
    assert _rel(y, want) < REL[dt], (name, dt, _rel(y, want))


@pytest.mark.parametrize("name", ["W8A8_DYNAMIC", "W4A8_DYNAMIC", "W8A16", "W4A16_ASYM"])
@pytest.mark.parametrize("dt,erange", [(torch.bfloat16, None), (torch.float32, (1, 4)), (torch.float16, (0, 3))])
def test_moe_close_to_reference(asc, ref, name, dt, erange):
    scheme = dsq.get_scheme(name, group_size=32) if name == "W4A16_ASYM" else dsq.get_scheme(name)
    g = torch.Generator().manual_seed(6)
    e, t, topk, hidden, inter = 5, 7, 2, 48, 40  # K = 40 is not a multiple of 32: padded for the gmm
    ids = torch.stack([torch.randperm(e, generator=g)[:topk] for _ in range(t)])
    ids[0] = torch.tensor([4, 3])  # with erange (1, 4) or (0, 3) some entries are dropped
    wts = torch.softmax(torch.randn(t, topk, generator=g), -1)
    x = torch.randn(t, hidden, generator=g).to(dt)
    ex = ExpertWeights(ref.quantize_weight(torch.randn(e, 2 * inter, hidden, generator=g) * hidden**-0.5, scheme),
                       ref.quantize_weight(torch.randn(e, hidden, inter, generator=g) * inter**-0.5, scheme))
    y, want = asc.moe(x, ids, wts, ex, scheme, erange), ref.moe(x, ids, wts, ex, scheme, erange)
    assert y.dtype == dt and torch.isfinite(y).all()
    assert _rel(y, want) < 2 * REL[dt], (name, dt, _rel(y, want))


def test_moe_only_out_of_range_experts_gives_zeros(asc, ref):
    scheme = dsq.get_scheme("W8A8_DYNAMIC")
    g = torch.Generator().manual_seed(7)
    ex = ExpertWeights(ref.quantize_weight(torch.randn(4, 16, 32, generator=g), scheme),
                       ref.quantize_weight(torch.randn(4, 32, 8, generator=g), scheme))
    ids = torch.tensor([[0, 1], [1, 0]])
    y = asc.moe(torch.randn(2, 32, generator=g).bfloat16(), ids, torch.ones(2, 2), ex, scheme, (2, 4))
    assert torch.equal(y, torch.zeros(2, 32, dtype=torch.bfloat16))


def test_device_layouts_of_w8a8_and_w4a8(asc, ref):
    g = torch.Generator().manual_seed(8)
    s8 = dsq.get_scheme("W8A8")
    p = ref.quantize_weight(torch.randn(6, 40, generator=g), s8, ActStats(-1.0, 3.0))
    dl = prepare.prepare(p, s8, emulated_ops, "cpu")
    assert isinstance(dl["weight"], emulated_ops.NZTensor) and dl["weight"].fractal.shape == (1, 3, 16, 32)
    assert torch.equal(dl["weight"].to_nd(), p["weight"].T)
    zp = int(p["input_zero_point"])
    assert torch.equal(dl["quant_bias"], (-zp * p["weight"].long().sum(1)).int())
    s4 = dsq.get_scheme("W4A8_DYNAMIC", group_size=16)
    p4 = ref.quantize_weight(torch.randn(6, 40, generator=g), s4)
    w8 = prepare.prepare(p4, s4, emulated_ops, "cpu")["weight"].to_nd()
    codes, _ = ref.unpack(p4, s4)
    s2 = p4["weight_group_scale"].long().repeat_interleave(16, 1)[:, :40]
    assert torch.equal(w8.T.long(), codes.long() * s2) and int(w8.abs().max()) <= 119


@pytest.mark.parametrize("name", ["W4AFP8", "FP8_BLOCK"])
def test_fp8_schemes_unsupported_with_reason(asc, name):
    scheme = dsq.get_scheme(name)
    for op in dsq.OPS:
        cap = asc.supports(scheme, op)
        assert not cap and "fp8" in cap.reason
    with pytest.raises(UnsupportedError, match="fp8"):
        asc.calibrate(torch.randn(4, 128), scheme)
    with pytest.raises(UnsupportedError, match="weight-only"):
        asc.quantize_activation(torch.randn(2, 8), dsq.get_scheme("W4A16"))
    with pytest.raises(UnsupportedError, match="static"):
        asc.moe(torch.randn(1, 8), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), None, dsq.get_scheme("W8A8"))


def test_bad_input_errors_name_the_tensor(asc, ref):
    scheme = dsq.get_scheme("W8A8_DYNAMIC")
    p = ref.quantize_weight(torch.randn(4, 16), scheme)
    with pytest.raises(QuantInputError, match="x has 8 features"):
        asc.matmul(torch.randn(2, 8), p, scheme)
    with pytest.raises(QuantInputError, match="bias"):
        asc.matmul(torch.randn(2, 16), p, scheme, torch.zeros(3))


def test_registry_mode_and_emulated_availability(asc):
    b = dsq.get_backend("npu", require_available=False)
    assert b.name == "ascend" and "npu" in b.aliases
    assert asc.mode == "emulated" and asc.device == "cpu" and asc.is_available() == (True, "")


@pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None, reason="torch_npu is installed here")
def test_unavailable_without_torch_npu_reports_install_hint(monkeypatch):
    monkeypatch.delenv("DSQ_EMULATE", raising=False)
    b = AscendBackend()
    ok, why = b.is_available()
    assert not ok and b.mode == "hardware"
    assert "torch_npu is not installed" in why and "CANN" in why and "DSQ_EMULATE=1" in why
    with pytest.raises(dsq.BackendUnavailableError, match="CANN"):
        runtime.get_ops()


def test_layout_module_is_shared_by_the_emulation():
    q = torch.randint(-8, 8, (16, 8), dtype=torch.int32)
    assert torch.equal(emulated_ops.npu_convert_weight_to_int4pack(q), layouts.pack_int4_to_int32(q))
