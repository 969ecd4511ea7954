"""The decode layer's chain of kernels: fewer links and programmatic dependent launch, never other bits.

A SwiGLU quantized by the kernel that reads it (moe_gemv.FUSE_SWIGLU) gives the bits of the separate kernel.
Programmatic dependent launch (dsq_cuda.pdl) changes when kernels start, never what they compute.

On a GPU (DSQ_MOE_TEST_DEVICE=cuda) the decode and one-token paths run with PDL and the L2 prefetch on and off,
eagerly and replayed from a CUDA graph, and must give the same bits. On CPU the interpreter has no PDL, so there
the kernels are compiled for sm_90 with it on (test_cuda_moe_sm90.py) and the buffers the PDL chain no longer
zeroes are checked to be fully written.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from moe_cases import DEVICE, make_experts  # noqa: E402

from dsq_cuda import act_quant, pdl  # noqa: E402
from dsq_cuda.moe import run_moe  # noqa: E402


def _poisoned_empty(monkeypatch):
    """Make torch.empty hand out garbage (NaN floats, 0x55 bytes) while the test runs."""
    real = torch.empty

    def empty(*args, **kwargs):
        t = real(*args, **kwargs)
        if t.is_floating_point():
            return t.fill_(float("nan"))
        if t.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
            return t.fill_(0x55)
        return t

    monkeypatch.setattr(torch, "empty", empty)


@pytest.mark.parametrize("k", [128, 200, 384])
@pytest.mark.parametrize("fp8", [False, True])
def test_int8_slices_write_every_byte(k, fp8, monkeypatch):
    # q comes from torch.empty now (the kernel writes the fourth slice and the padding past K itself), so no
    # torch fill breaks the chain of PDL launches; garbage in the allocation must not reach the output
    g = torch.Generator().manual_seed(k)
    x = (torch.randn(3, k, generator=g) * 2).to(torch.bfloat16).to(DEVICE)
    if fp8:
        codes, scales = act_quant.quantize_per_token_fp8(x)
        want_q, want_s = act_quant.int8_slices(codes, scales)
    else:
        want_q, want_s = act_quant.int8_slices(x)
    _poisoned_empty(monkeypatch)
    if fp8:
        q, s = act_quant.int8_slices(codes, scales)
    else:
        q, s = act_quant.int8_slices(x)
    assert torch.equal(q, want_q) and torch.equal(s, want_s)
    tiles = q.view(3, -1, 4, 128)
    assert not tiles[:, :, 3].any(), "the fourth slice of every tile must be zero"
    if k % 128:  # inputs past K hold zeros in every slice (the slices' per-tile order is a permutation)
        last = tiles[:, -1, :3].ne(0).sum(-1)
        assert int(last.max()) <= k % 128


@pytest.mark.parametrize("scheme_name", ["W4A16", "W4A8_DYNAMIC", "W8A16", "W8A8"])
def test_one_token_path_needs_no_zeroed_allocation(scheme_name, monkeypatch):
    # the one-token path (slices, GEMV, SwiGLU, GEMV, combine) with every torch.empty poisoned gives the same bits
    e, h, i = 4, 256, 128
    scheme, _, dev = make_experts(scheme_name, e, h, i, seed=3)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, h, generator=g).to(torch.bfloat16).to(DEVICE)
    ids = torch.tensor([[2, 0]]).to(DEVICE)
    w = torch.tensor([[0.7, 0.3]]).to(DEVICE)
    want = run_moe(x, ids, w, dev.gate_up, dev.down, scheme, e)
    _poisoned_empty(monkeypatch)
    got = run_moe(x, ids, w, dev.gate_up, dev.down, scheme, e)
    assert torch.isfinite(got.float()).all()
    assert torch.equal(got, want)


@pytest.mark.parametrize("scheme_name", ["W8A8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_swiglu_fused_into_the_next_kernel_gives_the_same_bits(scheme_name, dtype, monkeypatch):
    # W8A8 at one token: the static requantization quantizes the SwiGLU of h itself
    from dsq_cuda import moe_decode_kernels, moe_gemv

    e, h, i = 4, 256, 192
    scheme, _, dev = make_experts(scheme_name, e, h, i, seed=7)
    g = torch.Generator().manual_seed(9)
    x = (torch.randn(1, h, generator=g) * 2).to(dtype).to(DEVICE)
    ids = torch.tensor([[3, 1, 0]]).to(DEVICE)
    w = torch.tensor([[0.5, 0.3, 0.2]]).to(DEVICE)
    monkeypatch.setattr(moe_gemv, "FUSE_SWIGLU", False)
    want = run_moe(x, ids, w, dev.gate_up, dev.down, scheme, e, path="gemv")
    monkeypatch.setattr(moe_gemv, "FUSE_SWIGLU", True)

    class NoLaunch:  # the fused path must not launch the SwiGLU kernel
        def __getitem__(self, grid):
            raise AssertionError("swiglu_kernel launched")

    monkeypatch.setattr(moe_decode_kernels, "swiglu_kernel", NoLaunch())
    got = run_moe(x, ids, w, dev.gate_up, dev.down, scheme, e, path="gemv")
    assert got.abs().max() > 0
    assert torch.equal(got, want)


def _routing(t: int, e: int, k: int, skew: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(t, e, generator=g)
    if skew:
        scores[:, :k] += 1.0  # every token on the same k experts
    w, ids = scores.topk(k, dim=-1)
    return ids, w / w.sum(-1, keepdim=True)


@pytest.mark.skipif(DEVICE == "cpu", reason="PDL needs a GPU (sm_90+); the interpreter has no grids to overlap")
@pytest.mark.parametrize("scheme_name", ["W4A16", "W4A8_DYNAMIC", "W4AFP8", "W8A16", "W8A8", "W8A8_DYNAMIC", None])
@pytest.mark.parametrize("t,skew", [(1, False), (8, False), (8, True), (64, True)])
def test_pdl_gives_the_same_bits_eager_and_in_a_graph(scheme_name, t, skew, monkeypatch):
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("PDL needs sm_90+")
    from dsq_cuda.moe import moe_float

    e, h, i, k = 32, 1024, 512, 8
    g = torch.Generator().manual_seed(t)
    x = (torch.randn(t, h, generator=g) * 0.5).to(torch.bfloat16).to(DEVICE)
    ids, w = _routing(t, e, k, skew, seed=t + 1)
    ids, w = ids.to(DEVICE), w.float().to(DEVICE)
    if scheme_name is None:  # the bf16 fused layer (the benchmarks' baseline) takes the same launches
        wg = (torch.randn(e, 2 * i, h, generator=g) * 0.05).to(torch.bfloat16).to(DEVICE)
        wd = (torch.randn(e, h, i, generator=g) * 0.05).to(torch.bfloat16).to(DEVICE)

        def call():
            return moe_float(x, ids, w, wg, wd)
    else:
        scheme, _, dev = make_experts(scheme_name, e, h, i, seed=2)

        def call():
            return run_moe(x, ids, w, dev.gate_up, dev.down, scheme, e)

    monkeypatch.setattr(pdl, "ENABLED", False)
    want = call()
    every_kind = {kind: 16384 for kind in ("gemv", "gemv_dp4a", "mma", "mma_int8", "slab")}
    for prefetch in ({}, every_kind):
        monkeypatch.setattr(pdl, "ENABLED", True)
        monkeypatch.setattr(pdl, "PREFETCH", prefetch)
        for _ in range(3):
            assert torch.equal(call(), want), f"eager, prefetch={prefetch}"
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = call()
        for _ in range(3):
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(y, want), f"graph, prefetch={prefetch}"
