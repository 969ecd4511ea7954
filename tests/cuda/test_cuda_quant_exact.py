"""calibrate, pack, unpack and quantize_activation of the cuda backend equal the numpy reference bit for bit."""

import pytest
import torch

import dsq

SCHEMES = dsq.list_schemes()


def _weight(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # heavy-tailed rows so scales differ a lot between channels and groups; a zero row and a zero group
    w = torch.randn(shape, generator=g) * torch.exp(torch.randn(shape[:-1] + (1,), generator=g))
    w[..., 1, :] = 0.0
    w[..., 2, :40] = 0.0
    return w.to(dtype)


def _same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    a, b = a.cpu(), b.cpu()
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    if a.dtype == torch.float8_e4m3fn:
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    if a.is_floating_point():
        a, b = a.contiguous().view(torch.int32 if a.element_size() == 4 else torch.int16), \
            b.contiguous().view(torch.int32 if b.element_size() == 4 else torch.int16)
    diff = (a != b)
    assert not diff.any(), f"{what}: {int(diff.sum())} of {a.numel()} elements differ (first {diff.nonzero()[0].tolist()})"


def _stats(lead):
    stats = dsq.ActStats.empty().update(torch.linspace(-3.3, 5.1, 64).reshape(4, 16))
    return [stats] * lead[0] if lead else stats


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("shape,dtype", [((37, 300), torch.bfloat16), ((2, 130, 264), torch.float32)])
def test_calibrate_pack_unpack_bit_exact(cuda_backend, ref_backend, name, shape, dtype):
    scheme = dsq.get_scheme(name)
    w = _weight(shape, dtype)
    stats = _stats(shape[:-2]) if scheme.static_activations else None
    qp = cuda_backend.calibrate(w, scheme, stats)
    qr = ref_backend.calibrate(w, scheme, stats)
    for key, ref in qr.tensors().items():
        _same(getattr(qp, key), ref, f"{name} calibrate {key}")
    assert set(qp.tensors()) == set(qr.tensors())
    pk = cuda_backend.pack(w, qp, scheme)
    pr = ref_backend.pack(w, qr, scheme)
    assert set(pk.tensors) == set(pr.tensors), (sorted(pk.tensors), sorted(pr.tensors))
    for key in pr.tensors:
        _same(pk[key], pr[key], f"{name} pack {key}")
    codes, deq = cuda_backend.unpack(pk, scheme)
    codes_r, deq_r = ref_backend.unpack(pr, scheme)
    _same(codes, codes_r, f"{name} unpack codes")
    _same(deq, deq_r, f"{name} unpack dequantized")


@pytest.mark.parametrize("scale_dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["W4A16", "W4A16_ASYM", "W8A16", "FP8_BLOCK", "W4A8_DYNAMIC"])
def test_scale_dtypes_bit_exact(cuda_backend, ref_backend, name, scale_dtype):
    scheme = dsq.get_scheme(name, scale_dtype=scale_dtype)
    w = _weight((24, 256), torch.bfloat16, seed=3) * 1e-3  # small: fp16 scales hit the fp16 tiny floor
    qp, qr = cuda_backend.calibrate(w, scheme), ref_backend.calibrate(w, scheme)
    _same(qp.weight_scale, qr.weight_scale, f"{name}/{scale_dtype} scale")
    pk, pr = cuda_backend.pack(w, qp, scheme), ref_backend.pack(w, qr, scheme)
    for key in pr.tensors:
        _same(pk[key], pr[key], f"{name}/{scale_dtype} pack {key}")


def test_scale_overflow_is_a_clear_error(cuda_backend):
    scheme = dsq.get_scheme("W8A16", scale_dtype="float16")
    with pytest.raises(dsq.QuantInputError, match="overflows float16"):
        cuda_backend.calibrate(torch.full((4, 32), 3e7), scheme)


def _activation(m, k, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.exp(2 * torch.randn(m, 1, generator=g))
    x[0, :] = 0.0  # all-zero token: scale = tiny
    x[1, 5] = 1e-30  # subnormal-range fp8 codes
    return x.to(dtype)


@pytest.mark.parametrize("name", ["W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "W4AFP8", "FP8_BLOCK"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_activation_bit_exact(cuda_backend, ref_backend, name, dtype):
    scheme = dsq.get_scheme(name)
    x = _activation(9, 300, dtype)
    act_qp = None
    if scheme.static_activations:
        act_qp = ref_backend.calibrate(torch.randn(8, 300), scheme, dsq.ActStats(-2.7, 3.9, 10))
    qa = cuda_backend.quantize_activation(x, scheme, act_qp)
    qr = ref_backend.quantize_activation(x, scheme, act_qp)
    _same(qa.values, qr.values, f"{name} activation codes")
    _same(qa.scale.reshape(qr.scale.shape), qr.scale, f"{name} activation scale")
    assert (qa.zero_point is None) == (qr.zero_point is None)
    if qr.zero_point is not None:
        _same(qa.zero_point.reshape(qr.zero_point.shape), qr.zero_point, f"{name} zero point")


def test_static_half_away_rounding(cuda_backend, ref_backend):
    scheme = dsq.get_scheme("W8A8", act_rounding="half_away")
    act_qp = dsq.QParams(weight_scale=torch.ones(1, 1), input_scale=torch.tensor([0.5]),
                         input_zero_point=torch.tensor([3], dtype=torch.int8))
    x = torch.tensor([[0.25, -0.25, 0.75, -0.75, 1.25, -1.75, 100.0, -100.0]])  # every code is a tie
    qa = cuda_backend.quantize_activation(x, scheme, act_qp)
    qr = ref_backend.quantize_activation(x, scheme, act_qp)
    _same(qa.values, qr.values, "half-away codes")
    even = cuda_backend.quantize_activation(x, dsq.get_scheme("W8A8"), act_qp)
    assert not torch.equal(even.values.cpu(), qa.values.cpu())  # the two rounding modes differ on ties


@pytest.mark.parametrize("name", ["W8A8_DYNAMIC", "W4A8_DYNAMIC", "W4AFP8", "FP8_BLOCK"])
@pytest.mark.parametrize("m", [1, 3])
def test_chunked_activation_quantization_bit_exact(cuda_backend, ref_backend, monkeypatch, name, m):
    """At small M the quantization pass of a long row is split over several programs (each recomputes the
    row's amax); the codes and scales stay bit-identical to the reference."""
    import dsq_cuda.act_quant as aq

    monkeypatch.setattr(aq, "_chunks", lambda programs, group, block_k, device: max(1, -(-group // block_k)))
    scheme = dsq.get_scheme(name)
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(m, 5000, generator=g) * torch.exp(torch.randn(m, 1, generator=g))).to(torch.bfloat16)
    x[0, 4999] = 37.0  # the row's amax sits in the last chunk
    ref = ref_backend.quantize_activation(x, scheme)
    got = cuda_backend.quantize_activation(x, scheme)
    _same(got.values, ref.values, f"{name} codes")
    _same(got.scale, ref.scale, f"{name} scales")


@pytest.mark.parametrize("name", ["W4A8_DYNAMIC", "W4AFP8"])
def test_codes_as_bf16_are_the_reference_codes(cuda_backend, ref_backend, name):
    """The decode GEMM's activation quantization writes the int8 / e4m3 codes as bf16: the same numbers (bf16
    holds every int8 code and e4m3 value exactly) and the same scales as the reference."""
    from dsq_cuda.act_quant import quantize_per_token_as_bf16

    scheme = dsq.get_scheme(name)
    x = _activation(5, 1100, torch.bfloat16)
    ref = ref_backend.quantize_activation(x, scheme)
    q, s = quantize_per_token_as_bf16(x.to(cuda_backend.device), fp8=name == "W4AFP8")
    assert q.dtype == torch.bfloat16
    assert torch.equal(q.cpu().float(), ref.values.float()), f"{name}: codes differ"
    _same(s.reshape(ref.scale.shape), ref.scale, f"{name} scales")


@pytest.mark.parametrize("m,k", [(9, 1280), (5, 384), (2, 7168)])
def test_per_group_tiles_bit_exact(cuda_backend, ref_backend, monkeypatch, m, k):
    """FP8_BLOCK's per-(token, 128) quantization with K a multiple of 128 runs whole [rows, groups, 128] tiles
    (rows not a multiple of the tile's 4, groups not of its 8): codes and scales bit-identical."""
    import dsq_cuda.act_quant as aq

    grids = []

    class Spy:
        def __getitem__(self, grid):
            grids.append(grid)
            return aq._act_group_kernel_real[grid]

    monkeypatch.setattr(aq, "_act_group_kernel_real", aq._act_group_kernel, raising=False)
    monkeypatch.setattr(aq, "_act_group_kernel", Spy())
    scheme = dsq.get_scheme("FP8_BLOCK")
    x = _activation(m, k, torch.bfloat16)
    x[-1, k - 1] = 41.0  # a group's amax in its last column, in the last row
    ref = ref_backend.quantize_activation(x, scheme)
    got = cuda_backend.quantize_activation(x, scheme)
    assert len(grids) == 1
    _same(got.values, ref.values, "FP8_BLOCK codes")
    _same(got.scale.reshape(ref.scale.shape), ref.scale, "FP8_BLOCK scales")
