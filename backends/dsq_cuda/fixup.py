"""The workspace of the decode kernels' in-kernel split-K finish (dsq_cuda.mma_decode_kernel FIXUP, and the GEMV's
slots, dsq_cuda.gemv_kernel): partial sums and per-row-block counts, cached per device, stream and shape, so a
call zeroes nothing (each call leaves the counts zeroed for the next)."""

from __future__ import annotations

import torch

#: (device, stream, block_m, n, slots, counts) -> (float32 sums [slots, block_m, n], int32 counts)
WORKSPACES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def fixup_slots(split_k: int, programs: int, tiles: int, blocks: int) -> int:
    """Partial sums one row block can have: its split-K programs, or under stream-K (``programs`` > 0 sharing
    ``blocks x tiles`` units) the programs one row block's ``tiles`` consecutive units can touch: each holds at
    least ``units // programs``, so at most ``ceil(tiles / that) + 1`` of them."""
    if not programs:
        return split_k
    least = max(1, blocks * tiles // programs)
    return min(programs, -(-tiles // least) + 1)


def fixup_workspace(device: torch.device, block_m: int, n: int, slots: int = 1,
                    counts: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 partial sums [slots, block_m, n] and zeroed int32 counts [``counts``, default n / 32] of the decode
    kernels' in-kernel split-K finish (this GEMM's, and the GEMV's with slots: dsq_cuda.gemv_kernel), one pair per
    (device, stream, block_m, n, slots, counts). Every call leaves the counts
    zeroed again, and calls on one stream run in order; the sums need no zeroing with slots (each slot the
    finish reads was written in the same call) and are left zeroed by each call with atomics (one slot). Made at first
    use, also inside CUDA graph capture (torch.cuda.graph captures on a stream of its own, so a warm-up call
    elsewhere does not make it): there it comes from the graph's memory pool, which keeps it while it is
    referenced here, and the graph also records its zero fill, which only rewrites zeros. (A few MB in all for
    a model's distinct widths.)"""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    counts = -(-n // 32) if counts is None else counts
    key = (str(device), stream, block_m, n, slots, counts)
    if key not in WORKSPACES:
        WORKSPACES[key] = (torch.zeros((slots, block_m, n), dtype=torch.float32, device=device),
                           torch.zeros(counts, dtype=torch.int32, device=device))
    return WORKSPACES[key]
