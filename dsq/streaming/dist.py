"""Several processes on one conversion (``torchrun``): who does which shard, and the few messages between them.

``torchrun --nproc-per-node P -m dsq quantize-checkpoint ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init` then joins a ``gloo`` process group (CPU, works whether or not the ranks use GPUs: only small
Python objects travel, never tensors). A rank on a GPU uses ``cuda:(LOCAL_RANK % device_count)``
(:meth:`Dist.device_index`): one rank per GPU, or several ranks sharing a GPU when there are more ranks than
GPUs (each rank is its own process with its own GIL, which is what keeps a fast GPU busy: the host side of the
conversion, page faults, CRC-32 and Python, is the limit of one process). The index is set on every thread
that touches the GPU, since CUDA's current device is per thread.

Shards are split by :func:`assign`: largest first, each to the rank with the fewest bytes so far (ties to the
lowest rank), the same answer on every rank. Rank 0 alone creates the staging directory, decides which shards
are already finished (so every rank agrees even while others write), writes the index and config files and
renames the result into place; the others wait at barriers. A failure on any rank is gathered and raised on
every rank, so no rank waits forever for one that died with an exception.
"""

from __future__ import annotations

import os
from datetime import timedelta

__all__ = ["Dist", "init", "assign"]


class Dist:
    """Rank, world size and collective helpers (no-ops in a single process)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, group: bool = False,
                 owned: bool = False):
        self.rank, self.world, self.local_rank, self._group = rank, world, local_rank, group
        self._owned = owned  # this Dist created the process group, so it destroys it

    def close(self) -> None:
        """Destroy the process group :func:`init` created (one the caller set up is left alone). Leaving it to
        interpreter exit let gloo's threads be torn down mid-flight: the process then aborted ("terminate called
        without an active exception") after a successful conversion, in about 1 of 4 two-rank runs."""
        if self._owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owned = self._group = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_index(self, device_count: int) -> int:
        """The GPU of this rank: ``local_rank % device_count`` (ranks beyond the GPU count share them)."""
        if device_count < 1:
            raise ValueError("no GPU to choose from")
        return self.local_rank % device_count

    def barrier(self) -> None:
        if self._group:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self._group:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self._group:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def init(timeout_minutes: float = 120.0) -> Dist:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1, else a single-process Dist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", timeout=timedelta(minutes=timeout_minutes))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True, owned)


def assign(sizes: dict[str, int], world: int) -> dict[int, list[str]]:
    """Shard names per rank: largest first to the least-loaded rank (deterministic)."""
    load = [0] * world
    out: dict[int, list[str]] = {r: [] for r in range(world)}
    for name, size in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        r = min(range(world), key=lambda i: (load[i], i))
        out[r].append(name)
        load[r] += size
    for r in out:
        out[r].sort()
    return out
