"""Where one fused MoE layer's GPU time goes: every kernel of one call, timed by torch.profiler (CUPTI).

Usage (GPU):
    PYTHONPATH=.:backends:conformance:benchmarks/cuda_moe python3 benchmarks/cuda_moe/profile_moe.py \
        --schemes bf16,W4A8_DYNAMIC --tokens 1,8,64 --out prof.json

For each (scheme, T, routing) the layer (bench_moe's shapes and routings) runs eagerly ``--iters`` times, the
L2 cache flushed before each call (a 256 MB bitwise_not, left out of the table). The table lists each kernel's mean
time per call and its share of the summed kernel time, next to the CUDA-graph replay time of the same call
(bench_moe.bench). The gap between the graph time and the summed kernel time is launch and dependency latency
between kernels, which a graph does not remove.
"""

from __future__ import annotations

import argparse
import collections
import functools

import synth
import torch
from bench_moe import bench, routing  # benchmarks/cuda_moe on sys.path
from torch.profiler import ProfilerActivity, profile

from benchmarks.timing import save_json
from dsq.schemes import get_scheme
from dsq_cuda.moe import moe_float, run_moe


def kernel_times(fn, iters: int) -> tuple[dict[str, float], dict[str, int]]:
    """Mean GPU microseconds per call of each kernel fn launches, and how many times a call launches it."""
    flush = torch.empty(256 * 1024**2, dtype=torch.uint8, device="cuda")
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            torch.bitwise_not(flush, out=flush)  # the L2 flush: a kernel no layer launches
            fn()
        torch.cuda.synchronize()
    total: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.defaultdict(int)
    for ev in prof.events():
        if ev.device_type != torch.autograd.DeviceType.CUDA:
            continue
        total[ev.name] += ev.time_range.elapsed_us()
        count[ev.name] += 1
    for n in [n for n in total if "bitwise_not" in n.lower()]:
        del total[n], count[n]
    del flush
    return {n: v / iters for n, v in total.items()}, {n: c // iters for n, c in count.items()}


def layer(name: str, e: int, h: int, i: int, device):
    """A factory of calls ``(x, ids, tw) -> fn`` of the fused layer: bf16 weights (moe_float) or a scheme's."""
    if name == "bf16":
        wg = torch.randn(e, 2 * i, h, device=device, dtype=torch.bfloat16) * 0.02
        wd = torch.randn(e, h, i, device=device, dtype=torch.bfloat16) * 0.02
        return lambda x, ids, tw: functools.partial(moe_float, x, ids, tw, wg, wd)
    scheme = get_scheme(name)
    ew = synth.experts(scheme, e, h, i, device, seed=1)
    return lambda x, ids, tw: functools.partial(run_moe, x, ids, tw, ew.gate_up, ew.down, scheme, e)


def short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schemes", default="bf16,W4A8_DYNAMIC,W4A16")
    ap.add_argument("--tokens", default="1,8,64")
    ap.add_argument("--routings", default="uniform,skewed")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device("cuda")
    h, i, e, k = 7168, 2048, 256, 8
    tokens = [int(v) for v in args.tokens.split(",")]
    x_all = (torch.randn(max(tokens), h, device=device) * 0.5).to(torch.bfloat16)
    rows = []
    for name in args.schemes.split(","):
        make = layer(name, e, h, i, device)
        for t in tokens:
            for kind in args.routings.split(","):
                ids, tw = routing(t, e, k, kind, device, seed=t)
                fn = make(x_all[:t], ids, tw)
                graph_us = bench(fn, device, True) * 1e3
                times, counts = kernel_times(fn, args.iters)
                summed = sum(times.values())
                print(f"\n{name} T={t} {kind}: graph {graph_us:.1f} us, kernels {summed:.1f} us "
                      f"({len(times)} kernels, {sum(counts.values())} launches)")
                for n, us in sorted(times.items(), key=lambda kv: -kv[1]):
                    print(f"  {us:9.1f} us {100 * us / summed:5.1f}%  x{counts[n]}  {short(n)}")
                rows.append(dict(scheme=name, tokens=t, routing=kind, graph_us=graph_us, kernels_us=summed,
                                 kernels=[dict(name=n, us=us, launches=counts[n]) for n, us in times.items()]))
        torch.cuda.empty_cache()
    if args.out:
        info = dict(device=torch.cuda.get_device_name(), torch=torch.__version__)
        save_json(args.out, dict(info, rows=rows))


if __name__ == "__main__":
    main()
