"""Probe: can cuBLAS's block-scaled FP8 GEMM (``torch._scaled_mm`` with 1x128 / 128x128 scales, CUDA >= 12.9,
sm_90) serve dsq's FP8_BLOCK and W4AFP8 prefill, and how fast is it against bf16 in the same run?

    PYTHONPATH=backends:conformance:. python3 benchmarks/cuda/prefill_probe.py --out $OUT

For each (K, N, M): bf16 ``x @ W^T``; FP8_BLOCK as ``scaled_mm(x8 [1x128 scales], W8^T [128x128 scales])``;
W4AFP8 as ``scaled_mm(x8 [per-token scale repeated per group: 1x128], Wq^T [1x128 scales])`` (int4 codes are exact
in e4m3). Each is checked against a float32 product of the same dequantized operands first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from run_gpu import bench  # noqa: E402

from dsq_cuda.block_fp8 import outer_major  # noqa: E402
from dsq_cuda.expand_kernel import FP8_CODES, INT8_TWO_LEVEL, expand_int4  # noqa: E402

SHAPES = [(7168, 18432), (18432, 7168), (7168, 2048), (2048, 7168), (16384, 7168), (7168, 1536), (1536, 24576),
          (512, 32768)]
F8 = torch.float8_e4m3fn


def operands(m: int, n: int, k: int, dev):
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
    # FP8_BLOCK: x per (token, 128 inputs), W per 128x128 block
    xg = x.float().reshape(m, k // 128, 128)
    xs = xg.abs().amax(-1).clamp_min(1e-12) / 448.0  # [M, K/128]
    x8 = (xg / xs[..., None]).to(F8).reshape(m, k)
    wb = w.float().reshape(n // 128, 128, k // 128, 128)
    wsb = wb.abs().amax((1, 3)).clamp_min(1e-12) / 448.0  # [N/128, K/128]
    w8 = (wb / wsb[:, None, :, None]).to(F8).reshape(n, k)
    # W4AFP8: x per token (fp8), W int4 codes per (row, 128 inputs)
    xt = x.float().abs().amax(-1, keepdim=True).clamp_min(1e-12) / 448.0  # [M, 1]
    x8t = (x.float() / xt).to(F8)
    wgs = w.float().reshape(n, k // 128, 128).abs().amax(-1).clamp_min(1e-12) / 7.0  # [N, K/128]
    q = torch.round(w.float().reshape(n, k // 128, 128) / wgs[..., None]).clamp(-8, 7).reshape(n, k)
    return x, w, (x8, xs, w8, wsb), (x8t, xt, q.to(F8), wgs)


def fp8_block_fn(x8, xs, w8, wsb):
    a_s, b_s = outer_major(xs), wsb.t()  # [M, K/128] column-major; [K/128, N/128]
    return lambda: torch._scaled_mm(x8, w8.t(), scale_a=a_s, scale_b=b_s, out_dtype=torch.bfloat16)


def w4afp8_fn(x8t, xt, q8, wgs):
    k = x8t.shape[1]
    a_s = outer_major(xt.expand(-1, k // 128).contiguous())  # the per-token scale, once per group
    b_s = outer_major(wgs).t()  # [K/128, N] of a column-major [N, K/128]
    return lambda: torch._scaled_mm(x8t, q8.t(), scale_a=a_s, scale_b=b_s, out_dtype=torch.bfloat16)


def reference_block(x8, xs, w8, wsb):
    m, k = x8.shape
    n = w8.shape[0]
    xd = (x8.float().reshape(m, k // 128, 128) * xs[..., None]).reshape(m, k)
    wd = (w8.float().reshape(n // 128, 128, k // 128, 128) * wsb[:, None, :, None]).reshape(n, k)
    return xd @ wd.t()


def reference_w4(x8t, xt, q8, wgs):
    n, k = q8.shape
    return (x8t.float() * xt) @ (q8.float().reshape(n, k // 128, 128) * wgs[..., None]).reshape(n, k).t()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--ms", default="256,1024,4096")
    ap.add_argument("--expand-only", action="store_true", help="only time dsq_cuda.expand_kernel per shape")
    a = ap.parse_args()
    dev = "cuda"
    os.makedirs(a.out, exist_ok=True)
    rows = []
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} cuda {torch.version.cuda}", flush=True)
    for (k, n) in SHAPES:
        # the expansion of int4 slab words to one byte per weight (W4A8 / W4AFP8 prefill): bytes read + written
        slabs = torch.randint(-2**31, 2**31 - 1, (k // 8, n), dtype=torch.int32, device=dev)
        s2 = torch.randint(1, 17, (n, k // 128), dtype=torch.int8, device=dev)
        for mode, name in ((INT8_TWO_LEVEL, "int8"), (FP8_CODES, "fp8")):
            us = bench(lambda mode=mode, w=slabs, n=n, k=k, s2=s2: expand_int4(w, n, k, 32, mode, s2, 128), graph=False)
            row = dict(k=k, n=n, expand=name, us=us, gbs=1.5 * n * k / (us * 1e-6) / 1e9)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if a.expand_only:
            continue
        for m in [int(v) for v in a.ms.split(",")]:
            x, w, blk, w4 = operands(m, n, k, dev)
            row = dict(k=k, n=n, m=m, bf16_us=bench(lambda x=x, w=w: x @ w.t()))
            for name, make, ref in (("fp8_block", fp8_block_fn, reference_block), ("w4afp8", w4afp8_fn, reference_w4)):
                ops = blk if name == "fp8_block" else w4
                try:
                    fn = make(*ops)
                    y = fn().float()
                    r = ref(*ops)
                    row[f"{name}_err"] = ((y - r).norm() / r.norm()).item()
                    row[f"{name}_us"] = bench(fn)
                    row[f"{name}_x"] = row["bf16_us"] / row[f"{name}_us"]
                except Exception as exc:  # noqa: BLE001 - report what this torch / cuBLAS cannot do
                    row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(os.path.join(a.out, "prefill_probe.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda,
                       rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
