"""Run one dsq matmul a few times, for a kernel profiler to read (the decode GEMMs' "why" needs counters).

On the GPU machine, from the repository root (Nsight Compute is installed there; leave the clocks alone):

    PYTHONPATH=backends:conformance:. ncu --clock-control none --kernel-name regex:mma_decode \\
        --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats \\
        --section SchedulerStats --section Occupancy --section MemoryWorkloadAnalysis \\
        python3 benchmarks/cuda/profile_decode.py --shape 7168x18432 --m 1 --scheme W4A16

The weight is quantized and its device layouts are built before the timed calls (``Backend.prepare``), so
the profiled launches are the GEMM's own kernels (plus activation quantization for W4A8 / W4AFP8). Without
a GPU it runs in the Triton interpreter (TRITON_INTERPRET=1) at small shapes, which checks the script.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import dsq


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="7168x18432", help="KxN of the weight (default: 7168x18432)")
    ap.add_argument("--m", type=int, default=1, help="rows of x (tokens)")
    ap.add_argument("--scheme", default="W4A16", help=f"one of {', '.join(dsq.list_schemes())}")
    ap.add_argument("--calls", type=int, default=4, help="matmul calls after one warm-up call")
    a = ap.parse_args(argv)
    k, n = (int(v) for v in a.shape.lower().split("x"))
    scheme = dsq.get_scheme(a.scheme)
    backend = dsq.get_backend("cuda")
    dev = torch.device(backend.device)
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(n, k, generator=g) * k**-0.5).to(torch.bfloat16)
    x = torch.randn(a.m, k, generator=g).to(torch.bfloat16).to(dev)
    stats = dsq.ActStats.empty().update(x.float().cpu()) if scheme.static_activations else None
    packed = backend.quantize_weight(w.to(dev), scheme, stats)
    backend.prepare(packed, scheme)
    y = backend.matmul(x, packed, scheme)  # warm-up: compiles the kernels
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.calls):
        y = backend.matmul(x, packed, scheme)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / a.calls * 1e6
    print(f"{a.scheme} K={k} N={n} M={a.m} on {dev}: y {tuple(y.shape)} {y.dtype}, finite {bool(torch.isfinite(y).all())}, "
          f"{wall:.1f} us per call wall-clock (launch overhead included; time kernels with run_gpu.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
