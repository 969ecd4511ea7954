"""The pair alignment of moe_align.py in one Triton program, for decode-sized layers (a few hundred pairs).

The torch version is about 20 small kernels (a radix sort, scans, scatters, a searchsorted): on the H200 they
took about 50 us of GPU time per layer call plus the gaps between them, next to 124 us of expert GEMMs at
T = 8 (W4A8_DYNAMIC, skewed routing; benchmarks/cuda_moe/profile_moe.py). One program does the same work with
comparisons, because at decode the pairs P and local experts E are few (P <= 512 at T = 64, top-8):

* ``c_e = sum_p [key_p = e]`` over an ``[E, CH]`` comparison per chunk of CH pairs; ``b_e = ceil(c_e / BM)``;
  ``start_e`` / ``end_e`` the exclusive / inclusive prefix sums of ``b_e`` (tl.cumsum).
* ``block_expert[b] = lo + #{e : end_e <= b}`` while that count is below E (searchsorted right), else -1.
* ``sorted_ids`` is filled with P, then pair p is written at ``start_{key_p} * BM + rank_p``, where
  ``rank_p = #{q < p : key_q = key_p}`` (a stable order: by pair id within an expert).

Its output is the torch version's, element for element (tests/cuda_moe/test_cuda_moe_align.py). The work is
O(P * E + P^2 / 2) comparisons, so moe_align.py keeps the torch version above ``KERNEL_MAX_PAIRS``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _local_keys(ids_ptr, p, num_pairs, lo, n_local):
    """Local expert index of pairs p (int32), -1 for pairs outside [lo, lo + n_local) and past the last pair."""
    k = tl.load(ids_ptr + p, mask=p < num_pairs, other=-1).to(tl.int32) - lo
    return tl.where((p < num_pairs) & (k >= 0) & (k < n_local), k, -1)


@triton.jit
def align_kernel(ids_ptr, num_pairs, lo, n_local, sorted_ptr, block_expert_ptr, start_ptr, n_slots, max_blocks,
                 BM: tl.constexpr, PB: tl.constexpr, EB: tl.constexpr, SB: tl.constexpr, MB: tl.constexpr,
                 CH: tl.constexpr):
    """One program. ids [P] (any int dtype), sorted_ids int32 [n_slots = max_blocks * BM], block_expert int32
    [max_blocks], start int32 [EB] (scratch: each expert's first block). PB, SB, MB: P, n_slots and max_blocks
    rounded up to a multiple of CH; EB: n_local rounded up to a power of two."""
    e_idx = tl.arange(0, EB)
    ch = tl.arange(0, CH)
    counts = tl.zeros([EB], dtype=tl.int32)
    for c in range(0, PB, CH):
        k = _local_keys(ids_ptr, c + ch, num_pairs, lo, n_local)
        counts += tl.sum((k[None, :] == e_idx[:, None]).to(tl.int32), axis=1)
    blocks = (counts + BM - 1) // BM
    ends = tl.cumsum(blocks, 0)
    tl.store(start_ptr + e_idx, ends - blocks)
    for c in range(0, MB, CH):
        b = c + ch
        owner = tl.sum((ends[None, :] <= b[:, None]).to(tl.int32), axis=1)  # experts past EB - 1 end at the total
        tl.store(block_expert_ptr + b, tl.where(owner < n_local, owner + lo, -1), mask=b < max_blocks)
    for c in range(0, SB, CH):
        s = c + ch
        tl.store(sorted_ptr + s, tl.zeros([CH], dtype=tl.int32) + num_pairs, mask=s < n_slots)
    # the starts and the padding above are read / overwritten by other threads of this program below
    tl.debug_barrier()
    for c in range(0, PB, CH):
        p = c + ch
        k = _local_keys(ids_ptr, p, num_pairs, lo, n_local)
        rank = tl.zeros([CH], dtype=tl.int32)
        for c2 in range(0, c + CH, CH):
            q = c2 + ch
            kq = _local_keys(ids_ptr, q, num_pairs, lo, n_local)
            same = (kq[None, :] == k[:, None]) & (q[None, :] < p[:, None])
            rank += tl.sum(same.to(tl.int32), axis=1)
        start = tl.load(start_ptr + tl.maximum(k, 0))
        tl.store(sorted_ptr + start * BM + rank, p.to(tl.int32), mask=k >= 0)


def launch(ids, num_pairs: int, lo: int, n_local: int, block_m: int, max_blocks: int, sorted_ids, block_expert,
           scratch) -> None:
    """Fill sorted_ids / block_expert (see align_kernel) from the flat ids [num_pairs]."""
    ch = 64
    up = lambda v: max(ch, -(-v // ch) * ch)  # noqa: E731
    align_kernel[(1,)](ids, num_pairs, lo, n_local, sorted_ids, block_expert, scratch, sorted_ids.numel(),
                       max_blocks, BM=block_m, PB=up(num_pairs), EB=scratch.numel(), SB=up(sorted_ids.numel()),
                       MB=up(max_blocks), CH=ch, num_warps=4)
