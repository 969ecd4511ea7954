"""How fast can the GPU read a weight of a given size once, from DRAM, with L2 flushed? (a roofline by size)

Usage (GPU): PYTHONPATH=backends python3 benchmarks/cuda/read_roofline.py --out read.json

A decode GEMM at M = 1 reads its weight once. Its ceiling is not the device-to-device copy rate of a large copy
(gpu_baselines.md's yardstick) but the time to read that many bytes, starting cold: the DRAM pipe has to fill,
and the last programs drain alone. This script times, for each size (MB, e.g. the int4 weight of a DeepSeek-V3
matrix or of the experts one MoE token touches):
- ``copy``: ``b.copy_(a)`` (reads and writes the size; GB/s counts both, like the copy yardstick),
- ``torch_sum``: ``a.sum()`` over int32 (a read with a tree reduction),
- ``triton_read``: a persistent Triton kernel that xors every int32 word into one value per program, at
  several grid sizes and block widths (the best is reported with its config),
each captured in a CUDA graph, L2 flushed before each replay (triton.testing.do_bench), median. Fractions are
over the copy rate of a 2 GiB copy measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os

import torch
import triton
import triton.language as tl


@triton.jit
def read_kernel(src, out, n_words, BLOCK: tl.constexpr):
    """Program p xors words [i * BLOCK, (i + 1) * BLOCK) for i = p, p + P, ... into out[p] (P = grid size)."""
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    offs = tl.arange(0, BLOCK)
    for start in range(pid * BLOCK, n_words, tl.num_programs(0) * BLOCK):
        idx = start + offs
        acc ^= tl.load(src + idx, mask=idx < n_words, other=0, cache_modifier=".cg")
    tl.store(out + pid, tl.reduce(acc, 0, _xor))


@triton.jit
def _xor(a, b):
    return a ^ b


def graph_time_us(fn) -> float:
    """Median microseconds of fn() replayed from a CUDA graph, L2 flushed before each replay."""
    fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return triton.testing.do_bench(g.replay, warmup=10, rep=100, return_mode="median") * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", default="8,16,33,66,132,200,400,1250")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    big = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    big2 = torch.empty_like(big)
    copy_gbps = 2 * big.numel() / (graph_time_us(functools.partial(big2.copy_, big)) * 1e-6) / 1e9
    del big, big2
    print(f"{torch.cuda.get_device_name()}: copy of 2 GiB {copy_gbps:.0f} GB/s (read + write)", flush=True)
    rows = []
    print(f"{'MB':>6s} {'copy':>16s} {'torch_sum':>16s} {'triton_read (best)':>28s}   (us, % of copy rate)")
    for mb in [float(v) for v in args.sizes_mb.split(",")]:
        n = int(mb * 1e6) // 4
        a = torch.randint(-(2**31), 2**31 - 1, (n,), dtype=torch.int32, device="cuda")
        b = torch.empty_like(a)
        row = dict(mb=mb)
        row["copy_us"] = graph_time_us(functools.partial(b.copy_, a))
        row["sum_us"] = graph_time_us(functools.partial(torch.sum, a))
        best = None
        for per_sm in (1, 2, 4, 8):
            for block, warps in ((1024, 4), (2048, 8), (4096, 8)):
                grid = min(sms * per_sm, -(-n // block))
                out = torch.empty(grid, dtype=torch.int32, device="cuda")
                fn = functools.partial(read_kernel[(grid,)], a, out, n, BLOCK=block, num_warps=warps)
                us = graph_time_us(fn)
                if best is None or us < best[0]:
                    best = (us, f"{per_sm}/SM x {block} words, {warps} warps")
        row["read_us"], row["read_cfg"] = best

        def frac(us: float, moved: float) -> str:
            return f"{us:7.1f} ({100 * moved / (us * 1e-6) / 1e9 / copy_gbps:3.0f}%)"

        nbytes = 4 * n
        print(f"{mb:6.0f} {frac(row['copy_us'], 2 * nbytes):>16s} {frac(row['sum_us'], nbytes):>16s} "
              f"{frac(row['read_us'], nbytes):>16s} {row['read_cfg']}", flush=True)
        row.update({k + "_frac": nbytes * (2 if k == "copy" else 1) / (row[k + "_us"] * 1e-6) / 1e9 / copy_gbps
                    for k in ("copy", "sum", "read")})
        rows.append(row)
        del a, b
    if args.out:
        info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                    copy_gbps=copy_gbps)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(info, rows=rows), f, indent=1)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
