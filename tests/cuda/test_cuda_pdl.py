"""The dense decode GEMM under programmatic dependent launch (dsq_cuda.mm.PDL, dsq_cuda.pdl): the same bits.

PDL changes when the GEMM starts (while the activation quantization before it drains) and, with the
``dense_int8`` prefetch, lets its int8 path ask for its first weight tiles before it waits; never the values.
The interpreter has no PDL, so on CPU these tests only compile the kernels for sm_90 as launched
(tests/cuda_moe/sm90_launches.py ``mm:`` cases); on a GPU they run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dsq
from dsq_cuda import mm, pdl

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="PDL runs on a GPU (sm_90+)")
@pytest.mark.parametrize("name", ["W4A8_DYNAMIC", "W4AFP8", "W4A16"])
@pytest.mark.parametrize("m", [1, 2, 16])
def test_dense_decode_with_pdl_gives_the_same_bits(cuda_backend, name, m, monkeypatch):
    """PDL on at every M here (the default takes it only at M <= mm.PDL_MAX_M, where it is faster). The kernel
    sums split-K partials in slot order here (mm.FIXUP_SLOTS, as under torch.use_deterministic_algorithms), so the
    bits cannot depend on when programs start or arrive: 1536 x 2048 at M = 16 has split 4, where the default
    float32 atomics in arrival order gave 2 distinct outputs in 30 calls with or without PDL
    (benchmarks/cuda/repeat_probe.py, cuda.md v16)."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("PDL needs sm_90+")
    g = torch.Generator().manual_seed(m)
    scheme = dsq.get_scheme(name)
    w = torch.randn(1536, 2048, generator=g) * 0.05
    pw = cuda_backend.quantize_weight(w.cuda(), scheme)
    x = torch.randn(m, 2048, generator=g).to(torch.bfloat16).cuda()
    monkeypatch.setattr(mm, "FIXUP_SLOTS", True)
    monkeypatch.setattr(mm, "PDL", False)
    want = mm.matmul(x, pw, scheme)
    monkeypatch.setattr(mm, "PDL", True)
    monkeypatch.setattr(mm, "PDL_MAX_M", 16)
    monkeypatch.setattr(mm, "PREFETCH_MAX_K", 1 << 20)
    monkeypatch.setattr(pdl, "PREFETCH", {**pdl.PREFETCH, "dense_int8": 16384})
    for _ in range(3):
        assert torch.equal(mm.matmul(x, pw, scheme), want)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = mm.matmul(x, pw, scheme)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, want)


def test_dense_decode_with_pdl_compiles_for_sm90():
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("a CPU CI check; on a GPU the test above launches the kernels")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    prefetched = {ln.split(" ")[1].rstrip(":") for ln in lines if ":prefetch " in ln and ln.endswith(": compiled")}
    assert prefetched == {"mma_decode_kernel", "gemv_kernel", "moe_slab_kernel"}, proc.stdout


def _compile_as_launched() -> None:
    """(Run without TRITON_INTERPRET.) Record the dense W4A8_DYNAMIC / W4AFP8 launches with mm.PDL on and compile
    them for sm_90; the int8 GEMM also with the GPU's 64-row blocks and a 16 KB prefetch (CPU configs pick smaller
    blocks, which the prefetch's 4 KB pieces do not serve), and so every MoE GEMM kernel that can prefetch."""
    sys.path.insert(0, str(ROOT / "tests" / "cuda_moe"))
    from sm90_launches import compile_launch, record

    mm.PDL, mm.PDL_MAX_M, mm.PREFETCH_MAX_K = True, 4, 1 << 20
    for name, m in [("W4A8_DYNAMIC", 1), ("W4AFP8", 4)]:
        scheme = dsq.get_scheme(name)
        pw = dsq.get_backend("cpu-reference").quantize_weight(torch.randn(384, 1024) * 0.05, scheme)
        x = torch.randn(m, 1024).to(torch.bfloat16)
        for kernel, bound, options in record(lambda x=x, pw=pw, scheme=scheme: mm.matmul(x, pw, scheme)):
            compile_launch(kernel, bound, options)
            print(f"{name}:{m} {kernel.fn.__name__}: compiled")
            if bound.get("I8"):
                bound.update(BLOCK_N=64, PREFETCH=4)
                compile_launch(kernel, bound, options)
                print(f"{name}:{m}:prefetch {kernel.fn.__name__}: compiled")
    # the fused MoE's GEMMs with the GPU's block sizes and a prefetch: the int8 decode (MOE mode: the block's
    # expert decides the tiles), the one-token GEMV, and the slab kernel on row tiles (W8A16) and on bf16 rows
    from moe_cases import make_experts

    from dsq_cuda.moe import moe_float, run_moe

    blocks = {"mma_decode_kernel": 64, "gemv_kernel": 128, "moe_slab_kernel": 64}
    cases = []
    for name, t in [("W4A8_DYNAMIC", 8), ("W4A8_DYNAMIC", 1), ("W8A16", 8)]:
        scheme, _, dev = make_experts(name, 4, 512, 256, seed=1)
        x, ids = torch.randn(t, 512).to(torch.bfloat16), torch.stack([torch.randperm(4)[:2] for _ in range(t)])
        cases.append((f"moe:{name}:{t}", lambda x=x, ids=ids, t=t, dev=dev, scheme=scheme:
                      run_moe(x, ids, torch.rand(t, 2), dev.gate_up, dev.down, scheme, 4)))
    wg, wd = (torch.randn(4, 512, 512) * 0.05).to(torch.bfloat16), (torch.randn(4, 512, 256) * 0.05).to(torch.bfloat16)
    x, ids = torch.randn(8, 512).to(torch.bfloat16), torch.stack([torch.randperm(4)[:2] for _ in range(8)])
    cases.append(("moe:bf16:8", lambda: moe_float(x, ids, torch.rand(8, 2), wg, wd)))
    for label, fn in cases:
        for kernel, bound, options in record(fn):
            name = kernel.fn.__name__
            if name not in blocks:
                continue
            if name == "moe_slab_kernel" and not (bound.get("ROW_TILES") or bound["SL"] == 128):
                continue  # (its float-row prefetch takes 128-weight bf16 segments)
            bound.update(BLOCK_N=blocks[name], PREFETCH=2)
            compile_launch(kernel, bound, options)
            print(f"{label}:prefetch {name}: compiled")


if __name__ == "__main__":
    _compile_as_launched()
