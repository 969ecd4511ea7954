"""Sort (token, slot) pairs by expert and pad each expert's run to whole M-blocks (no host sync).

Pairs are numbered ``p = t * top_k + j`` for token t and slot j (``P = T * top_k`` of them). For the local
experts ``lo <= e < hi`` (all experts by default), expert e receives ``c_e`` pairs and ``b_e = ceil(c_e / BM)``
M-blocks; blocks are laid out expert after expert, so block ``b`` of the grouped GEMMs reads rows
``b*BM .. b*BM+BM-1`` of ``sorted_ids`` and multiplies them by the weights of ``block_expert[b]``.

* ``sorted_ids`` int32 ``[max_blocks * BM]``: pair ids in expert order (stable: by pair id within an expert);
  padding slots hold ``P`` (an id no pair has).
* ``block_expert`` int32 ``[max_blocks]``: the expert of each block, ``-1`` past the last used block, so
  programs launched for it exit at once. Experts without pairs get no block and cost nothing.
* ``max_blocks = ceil((P + min(E_local, P) * (BM - 1)) / BM)`` bounds ``sum_e b_e`` without reading the
  counts back to the host, which keeps the whole layer capturable in a CUDA graph.
Pairs routed to experts outside the range get no slot at all (their contribution is left out).

Up to ``KERNEL_MAX_PAIRS`` pairs (every decode call) one Triton program builds the same layout
(moe_align_kernel.py): the torch ops below are about 20 kernel launches, which cost more than the expert GEMMs
at decode on skewed routing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsq_cuda._env import interpreting

#: pairs up to which align_pairs runs moe_align_kernel (one program, a sort of P keys in registers) instead of
#: the torch ops; 0 turns it off. On the H200 (benchmarks/cuda_moe/bench_align.py) it took 6.8 / 10.3 / 40 us
#: at T = 1 / 64 / 256 (top-8) against 73 / 105 / 110 us for the torch ops, and 124 against 115 us at T = 512.
KERNEL_MAX_PAIRS = 2048


@dataclass
class Alignment:
    sorted_ids: torch.Tensor  # int32 [max_blocks * block_m]
    block_expert: torch.Tensor  # int32 [max_blocks]
    max_blocks: int
    block_m: int
    num_pairs: int


def max_blocks_bound(num_pairs: int, num_local: int, block_m: int) -> int:
    """Upper bound of sum_e ceil(c_e / BM) over experts whose counts sum to ``num_pairs``."""
    busy = min(num_local, num_pairs)
    return max(1, -(-(num_pairs + busy * (block_m - 1)) // block_m))


def align_pairs(topk_ids: torch.Tensor, num_experts: int, block_m: int,
                expert_range: tuple[int, int] | None = None) -> Alignment:
    """Build the expert-sorted, block-padded pair layout described in the module docstring."""
    device = topk_ids.device
    lo, hi = expert_range if expert_range is not None else (0, num_experts)
    n_local = hi - lo
    p = topk_ids.numel()
    max_blocks = max_blocks_bound(p, n_local, block_m)
    if 0 < p <= KERNEL_MAX_PAIRS and (device.type == "cuda" or interpreting()):
        from dsq_cuda import moe_align_kernel

        sorted_ids = torch.empty(max_blocks * block_m, dtype=torch.int32, device=device)
        block_expert = torch.empty(max_blocks, dtype=torch.int32, device=device)
        scratch = torch.empty(2 * moe_align_kernel.scratch_size(n_local), dtype=torch.int32, device=device)
        moe_align_kernel.launch(topk_ids.reshape(-1).contiguous(), p, lo, n_local, block_m, max_blocks, sorted_ids,
                                block_expert, scratch)
        return Alignment(sorted_ids, block_expert, max_blocks, block_m, p)
    flat = topk_ids.reshape(-1).to(torch.int64)
    # Local experts become 0..n_local-1; every other pair goes to a sentinel bucket n_local that sorts last.
    local = (flat >= lo) & (flat < hi)
    key = torch.where(local, flat - lo, torch.full_like(flat, n_local))
    counts = torch.zeros(n_local + 1, dtype=torch.int64, device=device)
    counts.scatter_add_(0, key, torch.ones_like(key))
    blocks = (counts[:n_local] + block_m - 1) // block_m
    block_end = torch.cumsum(blocks, 0)  # exclusive end block of each local expert
    block_start = block_end - blocks
    first_pair = torch.cumsum(counts, 0) - counts  # where each bucket starts in sorted order
    order = torch.sort(key, stable=True).indices
    sorted_key = key[order]
    rank = torch.arange(p, device=device) - first_pair[sorted_key]
    start_local = torch.cat([block_start, block_start.new_zeros(1)])
    dump = max_blocks * block_m  # sentinel-bucket pairs are written to one spare slot, then dropped
    dest = torch.where(sorted_key < n_local, start_local[sorted_key] * block_m + rank,
                       torch.full_like(rank, dump))
    sorted_ids = torch.full((dump + 1,), p, dtype=torch.int32, device=device)
    sorted_ids.scatter_(0, dest, order.to(torch.int32))
    sorted_ids = sorted_ids[:dump]
    b = torch.arange(max_blocks, device=device)
    e_of_block = torch.searchsorted(block_end, b, right=True)
    block_expert = torch.where(e_of_block < n_local, e_of_block + lo, torch.full_like(e_of_block, -1))
    return Alignment(sorted_ids, block_expert.to(torch.int32), max_blocks, block_m, p)
