"""Invariants of the expert-sorted, block-padded pair layout, and the alignment kernel against the torch ops."""

from __future__ import annotations

import os

import pytest
import torch

from dsq_cuda.moe_align import align_pairs


@pytest.mark.parametrize("t,e,k,bm,rng", [(1, 256, 8, 16, None), (37, 6, 1, 16, None), (64, 32, 8, 16, (8, 20)),
                                          (300, 16, 4, 64, None), (5, 10, 3, 16, (9, 10))])
def test_alignment_invariants(t, e, k, bm, rng):
    g = torch.Generator().manual_seed(t * e)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    if t == 37:
        ids[:] = 4  # skewed
    al = align_pairs(ids, e, bm, rng)
    lo, hi = rng or (0, e)
    p = t * k
    flat = ids.reshape(-1)
    sid = al.sorted_ids.view(al.max_blocks, bm)
    seen = []
    for b in range(al.max_blocks):
        ex = int(al.block_expert[b])
        row = [int(v) for v in sid[b] if v < p]
        if ex < 0:
            assert row == [] and all(int(al.block_expert[c]) < 0 for c in range(b, al.max_blocks))
            continue
        assert lo <= ex < hi and row, "a used block holds at least one pair of its expert"
        assert all(int(flat[v]) == ex for v in row)
        assert row == sorted(row)
        seen += row
    local = sorted(int(i) for i in torch.nonzero((flat >= lo) & (flat < hi)).flatten())
    assert sorted(seen) == local  # every local pair exactly once, no other pair
    blocks_used = int((al.block_expert >= 0).sum())
    counts = torch.bincount(flat[(flat >= lo) & (flat < hi)] - lo, minlength=hi - lo)
    assert blocks_used == int(((counts + bm - 1) // bm).sum())  # empty experts get no block


def _device():
    return torch.device("cuda" if os.environ.get("DSQ_MOE_TEST_DEVICE", "cpu") == "cuda" else "cpu")


@pytest.mark.parametrize("t,e,k,bm,rng,kind", [
    (1, 256, 8, 16, None, "uniform"), (8, 256, 8, 16, None, "skewed"), (64, 256, 8, 16, None, "uniform"),
    (64, 256, 8, 16, None, "skewed"), (37, 6, 1, 16, None, "one"), (64, 32, 8, 32, (8, 20), "uniform"),
    (5, 10, 3, 64, (9, 10), "uniform"), (13, 1, 1, 16, None, "one"), (100, 160, 6, 16, (40, 80), "skewed"),
    (3, 256, 8, 16, (250, 256), "uniform"), (256, 256, 8, 16, None, "skewed"),
])
def test_align_kernel_matches_the_torch_ops(monkeypatch, t, e, k, bm, rng, kind):
    """The one-program Triton alignment (decode sizes) gives the torch version's layout element for element:
    skewed routing, one expert for every pair, expert ranges (some with no local pair), block_m 16 / 32 / 64."""
    from dsq_cuda import moe_align

    g = torch.Generator().manual_seed(7 * t + e)
    scores = torch.rand(t, e, generator=g)
    if kind == "skewed":
        scores[:, : max(k, e // 16)] += 1.0
    ids = scores.topk(k, dim=-1).indices
    if kind == "one":
        ids[:] = e - 1
    ids = ids.to(_device())
    monkeypatch.setattr(moe_align, "KERNEL_MAX_PAIRS", 0)
    want = moe_align.align_pairs(ids, e, bm, rng)
    monkeypatch.setattr(moe_align, "KERNEL_MAX_PAIRS", 2048)
    got = moe_align.align_pairs(ids.to(torch.int32), e, bm, rng)
    assert (got.max_blocks, got.block_m, got.num_pairs) == (want.max_blocks, want.block_m, want.num_pairs)
    assert got.sorted_ids.dtype == want.sorted_ids.dtype == torch.int32
    assert torch.equal(got.block_expert.cpu(), want.block_expert.cpu())
    assert torch.equal(got.sorted_ids.cpu(), want.sorted_ids.cpu())
