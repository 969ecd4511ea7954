"""Invariants of the expert-sorted, block-padded pair layout (plain torch, no kernels)."""

from __future__ import annotations

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
