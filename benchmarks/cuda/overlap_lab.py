"""Lab: W4A16 / W8A16 prefill as dequantize + cuBLAS, with the weight cut into N chunks so that the dequantize of
chunk j + 1 (a memory-bound Triton kernel) can run beside the GEMM of chunk j (compute-bound), on a side stream.

    PYTHONPATH=backends:conformance:. python3 benchmarks/cuda/overlap_lab.py --out $OUT/overlap

Per (K, N, M) it times, in one run, each captured in a CUDA graph with the L2 flushed before each replay:
  bf16        x @ W^T on bf16 weights (the yardstick)
  dsq         dsq_cuda.mm.matmul (today: one dequantize, then one GEMM)
  serial C    C chunks, dequantize j then GEMM j on one stream (a chunk's bf16 weight may still be in L2)
  overlap C   C chunks, all dequantizes on a side stream, GEMM j waits for chunk j's event
Whether each chunked output equals dsq's bit for bit is recorded (``*_same``), not asserted: for a narrower N cuBLAS
may pick another kernel, which sums in another order (at M = 256 / 1024 it did on some shapes of the H200 run).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from run_gpu import bench  # noqa: E402

import dsq  # noqa: E402
from dsq_cuda.backend import CudaBackend  # noqa: E402
from dsq_cuda.dequant_kernel import dequantize_t  # noqa: E402
from dsq_cuda.mm import matmul  # noqa: E402
from dsq_cuda.mm_layout import group_of, prepare, slabs  # noqa: E402

SHAPES = [(7168, 18432), (18432, 7168), (16384, 7168), (7168, 2048), (2048, 7168), (1536, 24576)]


def chunk_layouts(lay: dict, bits: int, chunks: int) -> list[tuple[int, int, dict]]:
    """(col0, col1, layout) per chunk of N: the slab words and scales of columns [col0, col1), contiguous."""
    w = slabs(lay, bits)
    n = lay["n"]
    step = -(-n // chunks // 128) * 128
    out = []
    for c0 in range(0, n, step):
        c1 = min(n, c0 + step)
        sub = {"n": c1 - c0, "k": lay["k"], "w": w[:, c0:c1].contiguous(), "ws": lay["ws"][c0:c1].contiguous(),
               "sl": lay["sl"]}
        if "wz" in lay:
            sub["wz"] = lay["wz"][c0:c1].contiguous()
        out.append((c0, c1, sub))
    return out


def serial_fn(x, parts, bits, group):
    m, n = x.shape[0], parts[-1][1]

    def run():
        y = torch.empty(m, n, dtype=x.dtype, device=x.device)
        for c0, c1, sub in parts:
            torch.mm(x, dequantize_t(sub, bits, group, x.dtype), out=y[:, c0:c1])
        return y
    return run


def overlap_fn(x, parts, bits, group, side: torch.cuda.Stream):
    m, n = x.shape[0], parts[-1][1]

    def run():
        main = torch.cuda.current_stream()
        y = torch.empty(m, n, dtype=x.dtype, device=x.device)
        side.wait_stream(main)
        wds, evs = [], []
        with torch.cuda.stream(side):
            for _, _, sub in parts:
                wds.append(dequantize_t(sub, bits, group, x.dtype))
                ev = torch.cuda.Event()
                ev.record(side)
                evs.append(ev)
        for (c0, c1, _), wd, ev in zip(parts, wds, evs):
            main.wait_event(ev)
            torch.mm(x, wd, out=y[:, c0:c1])
            wd.record_stream(main)
        main.wait_stream(side)
        return y
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="overlap")
    ap.add_argument("--ms", default="256,1024,4096")
    ap.add_argument("--chunks", default="2,4,8")
    ap.add_argument("--schemes", default="W4A16,W8A16")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    be = CudaBackend()
    side = torch.cuda.Stream()
    rows = []
    for k, n in SHAPES:
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
        wt = w.t().contiguous()
        for name in args.schemes.split(","):
            scheme = dsq.get_scheme(name)
            packed = be.quantize_weight(w, scheme, None)
            lay = prepare(packed, scheme, dev)
            bits, group = scheme.weight_bits, group_of(scheme)
            layouts = {c: chunk_layouts(lay, bits, c) for c in map(int, args.chunks.split(","))}
            for m in map(int, args.ms.split(",")):
                x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
                ref = matmul(x, packed, scheme)
                row = {"k": k, "n": n, "m": m, "scheme": name, "bf16_us": bench(functools.partial(torch.mm, x, wt)),
                       "dsq_us": bench(functools.partial(matmul, x, packed, scheme))}
                for c, parts in layouts.items():
                    for label, fn in (("serial", serial_fn(x, parts, bits, group)),
                                      ("overlap", overlap_fn(x, parts, bits, group, side))):
                        same = bool(torch.equal(fn(), ref))
                        torch.cuda.synchronize()
                        row[f"{label}{c}_us"] = bench(fn)
                        row[f"{label}{c}_same"] = same
                rows.append(row)
                cells = " ".join(f"{key[:-3]} {row['bf16_us'] / v:.2f}x" for key, v in row.items()
                                 if key.endswith("_us") and key != "bf16_us")
                print(f"{name} {k}x{n} M={m}: bf16 {row['bf16_us']:.1f} us; {cells}; "
                      f"same {[key[:-5] for key, v in row.items() if key.endswith('_same') and not v]} differ",
                      flush=True)
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with open(os.path.join(args.out, "overlap.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
