"""The pair alignment of moe_align.py in one Triton program, for decode-sized layers (a few hundred pairs).

The torch version is about 20 small kernels (a radix sort, scans, scatters, a searchsorted): on the H200 they
took about 50 us of GPU time per layer call plus the gaps between them, next to 124 us of expert GEMMs at
T = 8 (W4A8_DYNAMIC, skewed routing; benchmarks/cuda_moe/profile_moe.py). One program does the same work with
comparisons, because at decode the pairs P and local experts E are few (P <= 512 at T = 64, top-8):

* ``c_e = sum_p [key_p = e]`` over an ``[E, CH]`` comparison per chunk of CH pairs; ``b_e = ceil(c_e / BM)``;
  ``start_e`` / ``end_e`` the exclusive / inclusive prefix sums of ``b_e`` (tl.cumsum).
* ``block_expert[b] = lo + #{e : end_e <= b}`` while that count is below E (searchsorted right), else -1.
* ``sorted_ids`` is filled with P, then pair p is written at ``start_{key_p} * BM + rank_p``, where
  ``rank_p = #{q < p : key_q = key_p}`` (a stable order: by pair id within an expert), read off a running
  cumulative sum of the one-hot ``[CH, E]`` matrix of each chunk of pairs.

Its output is the torch version's, element for element (tests/cuda_moe/test_cuda_moe_align.py). The work is
O(P * E) comparisons in one program, so moe_align.py keeps the torch version above ``KERNEL_MAX_PAIRS``.
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
def align_kernel(ids_ptr, num_pairs, lo, n_local, sorted_ptr, block_expert_ptr, n_slots, max_blocks,
                 BM: tl.constexpr, PB: tl.constexpr, EB: tl.constexpr, SB: tl.constexpr, MB: tl.constexpr,
                 CH: tl.constexpr, FILL: tl.constexpr):
    """One program. ids [P] (any int dtype), sorted_ids int32 [n_slots = max_blocks * BM], block_expert int32
    [max_blocks]. PB, MB: P and max_blocks rounded up to a multiple of CH; SB: n_slots rounded up to a multiple
    of FILL; EB: n_local rounded up to a power of two."""
    e_idx = tl.arange(0, EB)
    ch = tl.arange(0, CH)
    counts = tl.zeros([EB], dtype=tl.int32)
    for c in range(0, PB, CH):
        k = _local_keys(ids_ptr, c + ch, num_pairs, lo, n_local)
        counts += tl.sum((k[:, None] == e_idx[None, :]).to(tl.int32), axis=0)
    blocks = (counts + BM - 1) // BM
    ends = tl.cumsum(blocks, 0)
    starts = ends - blocks
    for c in range(0, MB, CH):
        b = c + ch
        owner = tl.sum((ends[None, :] <= b[:, None]).to(tl.int32), axis=1)  # experts past EB - 1 end at the total
        tl.store(block_expert_ptr + b, tl.where(owner < n_local, owner + lo, -1), mask=b < max_blocks)
    fill = tl.arange(0, FILL)
    for c in range(0, SB, FILL):
        tl.store(sorted_ptr + c + fill, tl.zeros([FILL], dtype=tl.int32) + num_pairs, mask=c + fill < n_slots)
    tl.debug_barrier()  # other threads of this program overwrite some of that padding below
    seen = tl.zeros([EB], dtype=tl.int32)  # pairs of each expert in earlier chunks
    for c in range(0, PB, CH):
        p = c + ch
        k = _local_keys(ids_ptr, p, num_pairs, lo, n_local)
        onehot = (k[:, None] == e_idx[None, :]).to(tl.int32)  # [CH, EB]; a row of zeros for a non-local pair
        upto = tl.cumsum(onehot, 0) + seen[None, :]  # pairs of each expert up to and including row p
        rank = tl.sum(onehot * upto, axis=1) - 1
        start = tl.sum(onehot * starts[None, :], axis=1)
        tl.store(sorted_ptr + start * BM + rank, p.to(tl.int32), mask=k >= 0)
        seen += tl.sum(onehot, axis=0)


def launch(ids, num_pairs: int, lo: int, n_local: int, block_m: int, max_blocks: int, sorted_ids, block_expert) -> None:
    """Fill sorted_ids / block_expert (see align_kernel) from the flat ids [num_pairs]."""
    ch, fill = 128, 1024
    eb = max(16, 1 << max(0, n_local - 1).bit_length())
    up = lambda v, m: max(m, -(-v // m) * m)  # noqa: E731
    align_kernel[(1,)](ids, num_pairs, lo, n_local, sorted_ids, block_expert, sorted_ids.numel(), max_blocks,
                       BM=block_m, PB=up(num_pairs, ch), EB=eb, SB=up(sorted_ids.numel(), fill),
                       MB=up(max_blocks, ch), CH=ch, FILL=fill, num_warps=8)
