"""The MoE pair alignment: one Triton program (moe_align_kernel) against the torch ops, by token count.

Usage (GPU): PYTHONPATH=.:backends:conformance:benchmarks/cuda_moe python3 benchmarks/cuda_moe/bench_align.py

Each call is captured in a CUDA graph and replayed (median, L2 flushed by do_bench), at 256 experts, top-8,
block_m 16, uniform and skewed routing (bench_moe.routing). Prints microseconds per call.
"""

from __future__ import annotations

import torch
from bench_moe import bench, routing, switches

from dsq_cuda.moe_align import align_pairs


def main() -> None:
    device = torch.device("cuda")
    e, k = 256, 8
    print(f"{'T':>5s} {'routing':8s} {'kernel us':>10s} {'torch us':>10s}")
    for t in (1, 8, 64, 128, 256, 512):
        for kind in ("uniform", "skewed"):
            ids = routing(t, e, k, kind, device, seed=t)[0]
            times = []
            for limit in (1 << 30, 0):
                with switches({"moe_align.KERNEL_MAX_PAIRS": limit}):
                    times.append(bench(lambda: align_pairs(ids, e, 16), device, True) * 1e3)  # noqa: B023
            print(f"{t:5d} {kind:8s} {times[0]:10.1f} {times[1]:10.1f}", flush=True)


if __name__ == "__main__":
    main()
