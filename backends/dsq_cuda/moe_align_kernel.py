"""The pair alignment of moe_align.py in one Triton program, for decode-sized layers (a few hundred pairs).

The torch version is about 20 small kernels (a radix sort, scans, scatters, a searchsorted): on the H200 they
took about 50 us of GPU time per layer call plus the gaps between them, next to 124 us of expert GEMMs at
T = 8 (W4A8_DYNAMIC, skewed routing; benchmarks/cuda_moe/profile_moe.py). One program does the same work in
registers, because at decode the pairs P and local experts E are few (P <= 512 at T = 64, top-8):

* ``c_e = #{p : key_p = e}`` (tl.histogram); ``b_e = ceil(c_e / BM)``; ``start_e`` / ``end_e`` the exclusive /
  inclusive prefix sums of ``b_e``, ``first_e`` the exclusive prefix sum of ``c_e`` (tl.cumsum).
* ``block_expert[b] = lo + #{e : end_e <= b}`` while that count is below E (searchsorted right), else -1: the
  prefix sum of a histogram of the ends.
* ``sorted_ids`` is filled with P; the keys ``key_p * PB + p`` are sorted (tl.sort, a bitonic sort in
  registers), which orders the pairs by expert and then by pair id, as the torch version's stable sort does;
  the pair at sorted position i goes to slot ``start_e * BM + (i - first_e)`` of its expert e.

Its output is the torch version's, element for element (tests/cuda_moe/test_cuda_moe_align.py). It sorts all
P keys in one program's registers, so moe_align.py keeps the torch version above ``KERNEL_MAX_PAIRS``.
"""

from __future__ import annotations

import triton
import triton.language as tl

from dsq_cuda import pdl
from dsq_cuda.pdl import wait_for_inputs


@triton.jit
def align_kernel(ids_ptr, num_pairs, lo, n_local, sorted_ptr, block_expert_ptr, scratch_ptr, n_slots, max_blocks,
                 BM: tl.constexpr, PB: tl.constexpr, LOG_PB: tl.constexpr, EB: tl.constexpr, MB: tl.constexpr,
                 FILL: tl.constexpr, PDL: tl.constexpr = False):
    """One program. ids [P] (any int dtype), sorted_ids int32 [n_slots = max_blocks * BM], block_expert int32
    [max_blocks], scratch int32 [2 * EB]. PB = 2^LOG_PB >= P; EB, MB: powers of two above n_local and
    max_blocks. PDL: dsq_cuda.pdl."""
    wait_for_inputs(PDL)
    p = tl.arange(0, PB)
    k = tl.load(ids_ptr + p, mask=p < num_pairs, other=-1).to(tl.int32) - lo
    local = (p < num_pairs) & (k >= 0) & (k < n_local)
    k = tl.where(local, k, n_local)  # bucket n_local: pairs of other experts and the padding past P
    counts = tl.histogram(k, EB)
    counts = tl.where(tl.arange(0, EB) < n_local, counts, 0)
    blocks = (counts + BM - 1) // BM
    ends = tl.cumsum(blocks, 0)
    firsts = tl.cumsum(counts, 0) - counts  # where each expert's pairs begin in sorted order
    tl.store(scratch_ptr + tl.arange(0, EB), ends - blocks)
    tl.store(scratch_ptr + EB + tl.arange(0, EB), firsts)
    # block b belongs to the expert #{e : end_e <= b} (searchsorted right), read off a histogram of the ends
    owner = tl.cumsum(tl.histogram(ends, MB), 0)
    b = tl.arange(0, MB)
    tl.store(block_expert_ptr + b, tl.where(owner < n_local, owner + lo, -1), mask=b < max_blocks)
    fill = tl.arange(0, FILL)
    for c in range(0, n_slots, FILL):
        tl.store(sorted_ptr + c + fill, tl.zeros([FILL], dtype=tl.int32) + num_pairs, mask=c + fill < n_slots)
    tl.debug_barrier()  # the starts / firsts above are read, and some of that padding overwritten, by other threads
    order = tl.sort(k * PB + p)  # by expert, then by pair id: a stable sort
    sk = order >> LOG_PB
    pair = order & (PB - 1)
    start = tl.load(scratch_ptr + sk, mask=sk < n_local, other=0)
    first = tl.load(scratch_ptr + EB + sk, mask=sk < n_local, other=0)
    tl.store(sorted_ptr + start * BM + (p - first), pair, mask=sk < n_local)


def launch(ids, num_pairs: int, lo: int, n_local: int, block_m: int, max_blocks: int, sorted_ids, block_expert,
           scratch) -> None:
    """Fill sorted_ids / block_expert (see align_kernel) from the flat ids [num_pairs]; scratch: int32
    [2 * scratch_size(n_local)]."""
    pb = max(16, 1 << max(0, num_pairs - 1).bit_length())
    align_kernel[(1,)](ids, num_pairs, lo, n_local, sorted_ids, block_expert, scratch, sorted_ids.numel(), max_blocks,
                       BM=block_m, PB=pb, LOG_PB=pb.bit_length() - 1, EB=scratch.numel() // 2,
                       MB=max(16, 1 << max_blocks.bit_length()), FILL=1024, num_warps=4,
                       **pdl.launch_args(ids.device))


def scratch_size(n_local: int) -> int:
    """EB: a power of two above n_local (its bucket n_local holds the pairs of other experts)."""
    return max(16, 1 << n_local.bit_length())
