"""Prefill paths of the cuda backend for W4A8_DYNAMIC, W4AFP8 and FP8_BLOCK (dsq_cuda.mm): int4 codes expanded to
one byte per weight (dsq_cuda.expand_kernel), and cuBLAS's block-scaled FP8 GEMM (dsq_cuda.block_fp8).

In CPU CI cuBLAS is absent: the operands and scales dsq hands it are checked by replacing the library call with
:func:`dsq_cuda.block_fp8.emulate` (the formula the GPU-only tests hold cuBLAS to), so a wrong transpose or scale
layout fails here too.
"""

import pytest
import torch
from test_cuda_matmul import TOL, _problem, _rel, raw_matmul

import dsq
from dsq_cuda import block_fp8
from dsq_cuda.expand_kernel import FP8_CODES, INT8_TWO_LEVEL, expand_int4
from dsq_cuda.slab import to_slabs
from dsq_cuda.unpack import unpack, unpack_words

GPU = torch.cuda.is_available()


def _dev():
    return torch.device(dsq.get_backend("cuda").device)


@pytest.mark.parametrize("n,k,sl", [(72, 600, 32), (64, 256, 16), (130, 384, 32)])
def test_expand_int8_two_level_is_exact(ref_backend, n, k, sl):
    """q4 * s2 as int8, equal to the reference's unpacked codes times their level-2 scales."""
    scheme = dsq.get_scheme("W4A8_DYNAMIC")
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n + k)) * 0.05
    pw = ref_backend.quantize_weight(w, scheme)
    codes = unpack_words(pw["weight_packed"], 4, k).to(torch.int32)
    s2 = pw["weight_group_scale"].to(torch.int8)
    want = (codes * s2.to(torch.int32).repeat_interleave(128, dim=1)[:, :k]).to(torch.int8)
    slabs = to_slabs(pw["weight_packed"].to(_dev()), k, 4, sl)
    got = expand_int4(slabs, n, k, sl, INT8_TWO_LEVEL, s2.to(_dev()), 128)
    assert got.dtype == torch.int8 and tuple(got.shape) == (n, k)
    assert torch.equal(got.cpu(), want)
    assert int(want.abs().max()) > 7  # the level-2 scales mattered


@pytest.mark.parametrize("n,k,sl", [(72, 600, 32), (40, 256, 16)])
def test_expand_fp8_codes_are_exact(ref_backend, n, k, sl):
    """The int4 codes as float8_e4m3fn: every value in [-8, 7] exactly."""
    scheme = dsq.get_scheme("W4AFP8")
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(7)) * 0.05
    pw = ref_backend.quantize_weight(w, scheme)
    codes, _ = unpack(pw, scheme)
    got = expand_int4(to_slabs(pw["weight_packed"].to(_dev()), k, 4, sl), n, k, sl, FP8_CODES)
    assert got.dtype == torch.float8_e4m3fn
    assert torch.equal(got.cpu().float(), codes.float())
    assert set(codes.unique().tolist()) >= {-7, 0, 7}


def test_expand_needs_the_level_two_scales():
    with pytest.raises(ValueError, match="s2"):
        expand_int4(torch.zeros(32, 8, dtype=torch.int32), 8, 128, 32, INT8_TWO_LEVEL)


@pytest.mark.parametrize("name", ["W4A8_DYNAMIC", "W4AFP8"])
@pytest.mark.parametrize("m", [17, 70])
def test_expanded_path_serves_large_m(cuda_backend, ref_backend, monkeypatch, name, m):
    """Above the decode kernel's M the int4 codes are expanded for the call (W4A8 as an int8 GEMM with s1, W4AFP8
    as FP8 with its group scales) and the result matches the reference; below EXPAND_MIN_M they are not."""
    import dsq_cuda.mm as mm

    calls = []
    monkeypatch.setattr(mm, "expand_int4", lambda *a, **kw: calls.append(a[4]) or expand_int4(*a, **kw))
    scheme, w, x, bias, _ = _problem(name, 72, 640, m, torch.bfloat16, seed=21)
    pw = ref_backend.quantize_weight(w, scheme)
    y = raw_matmul(x, pw, scheme, bias)
    assert calls == [INT8_TWO_LEVEL if scheme.two_level else FP8_CODES]
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]
    monkeypatch.setattr(mm, "EXPAND_MIN_M", m + 1)
    calls.clear()
    y2 = raw_matmul(x, pw, scheme, bias)
    assert calls == []
    assert _rel(y2, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]


def _emulated_cublas(monkeypatch):
    """block_fp8 with the library call replaced by its formula, reported available (CPU CI)."""
    calls = []

    def fake(a, a_scale, b, b_scale, out_dtype):
        assert a.dtype == b.dtype == torch.float8_e4m3fn
        assert a_scale.stride(0) == 1  # 1 x 128 scales must be outer-dimension-major
        calls.append(tuple(b_scale.shape))
        assert a.shape[0] % 4 == 0 and a_scale.shape == (a.shape[0], a.shape[1] // 128)
        return block_fp8.emulate(a, a_scale, b, b_scale).to(out_dtype)

    monkeypatch.setattr(block_fp8, "_call", fake)
    monkeypatch.setattr(block_fp8, "available", lambda device: True)
    return calls


@pytest.mark.parametrize("name", ["FP8_BLOCK", "W4AFP8"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_block_scaled_operands_match_the_reference(cuda_backend, ref_backend, monkeypatch, name, with_bias):
    """The operands, scales and bias dsq hands cuBLAS compute the scheme: checked through the emulated call."""
    if GPU:
        pytest.skip("on a GPU the real cuBLAS call is tested (test_cublas_block_fp8_on_gpu)")
    calls = _emulated_cublas(monkeypatch)
    scheme, w, x, bias, _ = _problem(name, 256, 512, 78, torch.bfloat16, seed=5)  # M padded to 80
    pw = ref_backend.quantize_weight(w, scheme)
    b = bias if with_bias else None
    y = raw_matmul(x, pw, scheme, b)
    want = (4, 2) if name == "FP8_BLOCK" else (4, 256)  # b_scale: [K/128, N/128] blocks or [K/128, N] rows
    assert calls == [want]
    assert y.dtype == torch.bfloat16
    assert _rel(y, ref_backend.matmul(x, pw, scheme, b)) < TOL[torch.bfloat16]


def test_block_scaled_path_needs_whole_blocks(cuda_backend, ref_backend, monkeypatch):
    """N not a multiple of 128 or K not of 512: the Triton kernels serve the call, cuBLAS is not asked."""
    calls = _emulated_cublas(monkeypatch)
    scheme = dsq.get_scheme("FP8_BLOCK")
    assert block_fp8.serves(scheme, 256, 1024, "cpu")
    assert not block_fp8.serves(scheme, 200, 1024, "cpu") and not block_fp8.serves(scheme, 256, 384, "cpu")
    assert not block_fp8.serves(dsq.get_scheme("W4A8_DYNAMIC"), 256, 1024, "cpu")
    scheme, w, x, bias, _ = _problem("FP8_BLOCK", 200, 512, 80, torch.bfloat16, seed=6)
    pw = ref_backend.quantize_weight(w, scheme)
    y = raw_matmul(x, pw, scheme, bias)
    assert calls == []
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]


def test_emulate_is_the_block_formula():
    """emulate() against a loop over the 128-groups with the scales applied to each group's float32 sum."""
    g = torch.Generator().manual_seed(3)
    a = (torch.randn(5, 256, generator=g) * 4).to(torch.float8_e4m3fn)
    b = (torch.randn(256, 256, generator=g) * 4).to(torch.float8_e4m3fn)
    sa = torch.rand(5, 2, generator=g) + 0.5
    for sb in (torch.rand(2, 256, generator=g) + 0.5, torch.rand(2, 2, generator=g) + 0.5):
        want = torch.zeros(5, 256)
        for gi in range(2):
            part = a.float()[:, gi * 128:(gi + 1) * 128] @ b.float()[gi * 128:(gi + 1) * 128]
            col = sb[gi] if sb.shape[1] == 256 else sb[gi].repeat_interleave(128)
            want += part * sa[:, gi:gi + 1] * col[None, :]
        got = block_fp8.emulate(a, sa, b, sb)
        assert float((got - want).norm() / want.norm()) < 1e-6


@pytest.mark.skipif(not GPU, reason="cuBLAS's block-scaled FP8 GEMM needs an sm_90 GPU")
@pytest.mark.parametrize("name", ["FP8_BLOCK", "W4AFP8"])
@pytest.mark.parametrize("m", [65, 200])
def test_cublas_block_fp8_on_gpu(cuda_backend, ref_backend, name, m):
    """On an H100 / H200 the path is available and matches the reference (with a bias: the float32 output)."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("block scaling is used on sm_90 only")
    assert block_fp8.available("cuda"), block_fp8.why_unavailable("cuda")
    scheme, w, x, bias, _ = _problem(name, 384, 1024, m, torch.bfloat16, seed=8)
    pw = ref_backend.quantize_weight(w, scheme)
    for b in (None, bias):
        y = raw_matmul(x, pw, scheme, b)
        assert _rel(y, ref_backend.matmul(x, pw, scheme, b)) < TOL[torch.bfloat16]


class _GridRecorder:
    """Stands in for a Triton kernel: records each launch's grid, then launches the real kernel."""

    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return self.kernel[grid]


@pytest.mark.parametrize("name", ["W4A16", "W4A16_ASYM", "W8A16", "W4A8_DYNAMIC", "W4AFP8"])
@pytest.mark.parametrize("split", [1, 2])
def test_decode_kernel_in_token_blocks(cuda_backend, ref_backend, monkeypatch, name, split):
    """Above the decode sizes (mm.MMA_PREFILL_MAX_M) the decode kernel runs in token blocks (grid axis 2): every
    block's rows match the reference, with split-K (float32 atomics) and without, and with a bias added once."""
    import dataclasses

    import dsq_cuda.configs as configs
    import dsq_cuda.mm as mm
    from dsq_cuda._env import interpreting

    monkeypatch.setattr(mm, "MMA_PREFILL_MAX_M", 4096)
    pick, cfgs = mm.pick_mma, []
    monkeypatch.setattr(mm, "pick_mma", lambda *a: cfgs.append(dataclasses.replace(pick(*a), split_k=split)) or cfgs[-1])
    rec = _GridRecorder(mm.mma_decode_kernel)
    monkeypatch.setattr(mm, "mma_decode_kernel", rec)
    scheme, w, x, bias, _ = _problem(name, 40, 2048, 150, torch.bfloat16, seed=31)
    pw = ref_backend.quantize_weight(w, scheme)
    y = raw_matmul(x, pw, scheme, bias)
    assert cfgs[0].block_m == (32 if interpreting() else configs.MMA_PREFILL_TOKEN_BLOCKS[0])  # (a small weight)
    assert len(rec.grids) == 1 and rec.grids[0][2] == -(-150 // cfgs[0].block_m)
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]
