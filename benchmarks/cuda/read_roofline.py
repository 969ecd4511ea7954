"""How fast can the GPU read a weight of a given size once, from DRAM, with L2 flushed? (a roofline by size)

Usage (GPU): PYTHONPATH=.:backends python3 benchmarks/cuda/read_roofline.py --out read.json

A decode GEMM at M = 1 reads its weight once. Its ceiling is not the device-to-device copy rate of a large copy
(gpu_baselines.md's yardstick) but the time to read that many bytes, starting cold: the DRAM pipe has to fill,
and the last programs drain alone. For each size (MB: e.g. the int4 weight of a DeepSeek-V3 matrix, or of the
experts one MoE token touches) this times ``benchmarks.timing.read_kernel`` (a persistent Triton kernel that
xors every int32 word into one value per program) at several grid sizes and block widths, and reports the
best, captured in a CUDA graph, median, with the L2 flushed both ways of benchmarks/timing.py (``dirty``:
do_bench's, which every table uses; ``clean``). It also times ``b.copy_(a)`` of the same size. Fractions are
over the copy rate of a 2 GiB copy timed as bench_moe.py and run_gpu.py time it (eager, do_bench).
"""

from __future__ import annotations

import argparse
import datetime
import functools

import torch
import triton

from benchmarks.timing import graph_median_ms, read_kernel, save_json


def graph_us(fn, flush: str) -> float:
    """Median microseconds of fn() replayed from a CUDA graph, L2 flushed before each replay."""
    return graph_median_ms(fn, flush, rep=100) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", default="8,16,33,66,132,176,264,400,1250")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    big = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    big2 = torch.empty_like(big)
    copy_ms = triton.testing.do_bench(functools.partial(big2.copy_, big), warmup=10, rep=50, return_mode="median")
    copy_gbps = 2 * big.numel() / (copy_ms * 1e-3) / 1e9
    del big, big2
    print(f"{torch.cuda.get_device_name()}: copy of 2 GiB {copy_gbps:.0f} GB/s (read + write, eager)", flush=True)
    rows = []
    print(f"{'MB':>6s} {'copy (graph)':>14s} {'read, dirty flush':>18s} {'read, clean flush':>18s}   "
          "(us, bytes moved / time as % of the copy rate)  best read config (dirty / clean)")
    for mb in [float(v) for v in args.sizes_mb.split(",")]:
        n = int(mb * 1e6) // 4
        a = torch.randint(-(2**31), 2**31 - 1, (n,), dtype=torch.int32, device="cuda")
        b = torch.empty_like(a)
        row = dict(mb=mb, copy_us=graph_us(functools.partial(b.copy_, a), "dirty"))
        for flush in ("dirty", "clean"):
            best = None
            for per_sm in (2, 4, 8, 16):
                for block, warps in ((1024, 4), (2048, 8), (4096, 8)):
                    grid = min(sms * per_sm, -(-n // block))
                    out = torch.empty(grid, dtype=torch.int32, device="cuda")
                    us = graph_us(functools.partial(read_kernel[(grid,)], a, out, n, BLOCK=block, num_warps=warps),
                                  flush)
                    if best is None or us < best[0]:
                        best = (us, f"{per_sm}/SM x {block} words, {warps} warps")
            row[f"read_{flush}_us"], row[f"read_{flush}_cfg"] = best

        def frac(us: float, moved: float) -> str:
            return f"{us:7.1f} ({100 * moved / (us * 1e-6) / 1e9 / copy_gbps:3.0f}%)"

        nbytes = 4 * n
        print(f"{mb:6.0f} {frac(row['copy_us'], 2 * nbytes):>14s} {frac(row['read_dirty_us'], nbytes):>18s} "
              f"{frac(row['read_clean_us'], nbytes):>18s}   {row['read_dirty_cfg']} / {row['read_clean_cfg']}",
              flush=True)
        for k, moved in (("copy", 2 * nbytes), ("read_dirty", nbytes), ("read_clean", nbytes)):
            row[k + "_frac"] = moved / (row[k + "_us"] * 1e-6) / 1e9 / copy_gbps
        rows.append(row)
        del a, b
    if args.out:
        info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                    copy_gbps=copy_gbps)
        save_json(args.out, dict(info, rows=rows))


if __name__ == "__main__":
    main()
