"""dsq_cuda.prefill_kernel (fused weight-only prefill GEMM) against the numpy reference, and its layout.

In CPU CI the kernel runs in the Triton interpreter (its plain-Triton decode, conftest.py); on a GPU the same tests
run the inline-PTX decode. A wrong nibble order, zero point, group scale or edge mask moves the result by far more
than the tolerance (the output dtype's rounding, test_cuda_matmul.TOL).
"""

import pytest
import torch
from test_cuda_matmul import TOL, _problem, _rel

import dsq
from dsq_cuda.configs import Config
from dsq_cuda.mm_layout import prepare
from dsq_cuda.prefill_kernel import PAD_K, PAD_N, prefill, prefill_matmul, to_prefill_words
from dsq_cuda.unpack import unpack_words


def _dev() -> torch.device:
    return torch.device(dsq.get_backend("cuda").device)


def _max_rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.cpu().double(), ref.cpu().double()
    return float((y - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("bits,n,k", [(4, 6, 256), (4, 300, 136), (8, 10, 300)])
def test_layout_holds_the_codes(bits, n, k):
    """Word (n, c) holds input ``EPW*c + p`` of row n in bit field ``p // 2 + (p % 2) * EPW / 2`` (pairs of inputs
    16 bits apart), padded to whole PAD_N rows and PAD_K inputs with code 0."""
    epw = 32 // bits
    g = torch.Generator().manual_seed(bits + n)
    words = torch.randint(-2**31, 2**31 - 1, (n, -(-k // epw)), generator=g, dtype=torch.int64).to(torch.int32)
    pf = to_prefill_words(words, k, bits)
    kp, np_ = -(-k // PAD_K) * PAD_K, -(-n // PAD_N) * PAD_N
    assert pf.shape == (np_, kp // epw) and pf.dtype == torch.int32
    fields = unpack_words(pf, bits, kp).reshape(np_, kp // epw, epw)  # [row, word, field]
    order = [p // 2 + (p % 2) * (epw // 2) for p in range(epw)]  # field of position p
    codes = fields[:, :, order].reshape(np_, kp)
    assert torch.equal(codes[:n, :k], unpack_words(words, bits, k))
    assert not codes[n:].any() and not codes[:, -(-k // epw) * epw:].any()


CASES = [(1, 48, 256), (17, 72, 256), (130, 96, 256)]


@pytest.mark.parametrize("name", ["W4A16", "W4A16_ASYM", "W8A16"])
@pytest.mark.parametrize("m,n,k", CASES)
@pytest.mark.parametrize("dtype,with_bias", [(torch.bfloat16, True), (torch.float16, False)])
def test_prefill_matches_reference(ref_backend, name, m, n, k, dtype, with_bias):
    scheme, w, x, bias, _ = _problem(name, n, k, m, dtype, seed=m + n)
    bias = bias if with_bias else None
    pw = ref_backend.quantize_weight(w, scheme)
    ref = ref_backend.matmul(x, pw, scheme, bias)
    y = prefill(x.to(_dev()), pw, scheme, None if bias is None else bias.to(_dev()))
    assert y.dtype == dtype and tuple(y.shape) == (m, n)
    assert _rel(y, ref) < TOL[dtype], f"{name}: rel err {_rel(y, ref):.3g}"
    assert _max_rel(y, ref) < 2 * TOL[dtype], f"{name}: max rel err {_max_rel(y, ref):.3g}"


@pytest.mark.parametrize("name,k,cfg", [  # tuples: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages[, swap])
    ("W4A16", 256, Config(32, 16, 16, 1, 4, 1)),  # 8 K tiles a group
    ("W4A16", 256, (32, 64, 64, 4, 1, 1)),  # weights as the first MMA operand
    ("W4A16_ASYM", 384, (16, 64, 128, 4, 1, 1)),  # a whole group a K tile, one N block past N
    ("W8A16", 300, Config(16, 32, 64, 1, 4, 1)),  # per channel, K not a multiple of BLOCK_K: x masked past K
    ("W8A16", 300, (16, 32, 64, 4, 1, 1)),
    ("W8A16", 256, (64, 16, 32, 4, 1)),
])
def test_configs_and_ragged_k(ref_backend, name, k, cfg):
    scheme, w, x, bias, _ = _problem(name, 40, k, 21, torch.bfloat16, seed=k)
    pw = ref_backend.quantize_weight(w, scheme)
    ref = ref_backend.matmul(x, pw, scheme, bias)
    y = prefill(x.to(_dev()), pw, scheme, bias.to(_dev()), config=cfg)
    assert _rel(y, ref) < TOL[torch.bfloat16] and _max_rel(y, ref) < 2 * TOL[torch.bfloat16]


def test_layout_is_cached_and_inputs_checked(ref_backend):
    scheme, w, x, _, _ = _problem("W4A16", 32, 256, 3, torch.bfloat16, seed=5)
    pw = ref_backend.quantize_weight(w, scheme)
    lay = prepare(pw, scheme, _dev())
    x = x.to(_dev())
    prefill_matmul(x, lay, scheme)
    pf = lay["pf"]
    assert prefill_matmul(x[:0], lay, scheme).shape == (0, 32)
    assert lay["pf"] is pf
    with pytest.raises(dsq.QuantInputError, match="bf16 or fp16"):
        prefill_matmul(x.float(), lay, scheme)
    with pytest.raises(dsq.QuantInputError, match="block_k"):
        prefill_matmul(x, lay, scheme, config=(16, 32, 256, 4, 1))
    with pytest.raises(dsq.QuantInputError, match="K=128"):
        prefill_matmul(x[:, :128], lay, scheme)
    with pytest.raises(dsq.QuantInputError, match="bias"):
        prefill_matmul(x, lay, scheme, torch.zeros(31, device=_dev()))
    s96 = dsq.get_scheme("W4A16", group_size=96)
    pw96 = ref_backend.quantize_weight(torch.randn(32, 288), s96)
    with pytest.raises(dsq.QuantInputError, match="block_k"):
        prefill(torch.randn(2, 288).to(_dev(), torch.bfloat16), pw96, s96, config=(16, 32, 64, 4, 1))
    s8 = dsq.get_scheme("W8A8")
    pw8 = ref_backend.quantize_weight(torch.randn(32, 256), s8, dsq.ActStats.empty().update(torch.randn(4, 256)))
    with pytest.raises(dsq.UnsupportedError):
        prefill(x, pw8, s8)
    s8a = dsq.get_scheme("W8A16", weight_symmetric=False)  # int8 codes with zero points: not served
    with pytest.raises(dsq.UnsupportedError, match="symmetric=False"):
        prefill(x, ref_backend.quantize_weight(torch.randn(32, 256), s8a), s8a)
