# ruff: noqa: B023  (closures are timed inside the loop iteration that defines them)
"""Lab for dsq_cuda.mma_decode_gluon (the Gluon decode GEMM with asynchronous, overlapped MMAs): checks every
variant against a float32 product, then times it at decode M against bf16 ``x @ W.t()`` and the Triton
decode kernel (its default config) in the same run, sweeping the Gluon kernel's split-K, warps and depth.

    PYTHONPATH=backends:conformance:. python3 benchmarks/cuda/gluon_decode_lab.py --out $OUT

Timing as benchmarks/cuda/gemv_lab.py: a CUDA graph of R calls over R distinct weight copies (more bytes than
L2), replayed; median per call (the split-K output buffer's zeroing included).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.dirname(__file__))
from gemv_lab import graph_time  # noqa: E402
from mma_decode_lab import launch as launch_triton  # noqa: E402
from mma_decode_lab import make  # noqa: E402

from dsq_cuda.configs import pick_mma  # noqa: E402
from dsq_cuda.mma_decode_gluon import launch as launch_gluon  # noqa: E402


def act_input(m, k, act, dt, dev):
    """x as the kernel reads it and its float32 value (act 1: int8 codes, 3: e4m3 bits; with scales xs)."""
    if act == 0:
        x = torch.randn(m, k, device=dev, dtype=dt)
        return x, None, x.float()
    xs = torch.rand(m, device=dev) * 0.02 + 0.01
    if act == 1:
        q = torch.randint(-127, 128, (m, k), device=dev, dtype=torch.int8)
        return q, xs, q.float() * xs[:, None]
    q = (torch.randn(m, k, device=dev) * 50).clamp(-448, 448).to(torch.float8_e4m3fn)
    return q.view(torch.uint8), xs, q.float() * xs[:, None]


def check(dev, log) -> list[dict]:
    rows = []
    # (bits, group, asym, dtype, act, channel scale too)
    cases = [(4, 128, False, torch.bfloat16, 0, False), (4, 64, False, torch.float16, 0, False),
             (4, 128, True, torch.bfloat16, 0, False), (4, 512, False, torch.bfloat16, 0, False),
             (4, 0, False, torch.bfloat16, 0, True), (8, 0, False, torch.bfloat16, 0, True),
             (8, 128, False, torch.float16, 0, False), (4, 128, False, torch.bfloat16, 1, True),
             (4, 128, False, torch.bfloat16, 3, True)]
    variants = [(1, 4, 2), (3, 4, 3), (2, 8, 1)]  # (split, warps, depth)
    # every case at M = 1 (BLOCK_M 8) and 16 on a ragged N; the first also at M = 5 and on a deeper, narrower
    # weight (compiles dominate this check's time: each variant is its own kernel)
    runs = [(c, m, (1024, 320)) for c in cases for m in (1, 16)] + [(cases[0], 5, (1024, 320))] + \
        [(c, 16, (2048, 200)) for c in cases[:2]]
    for (bits, group, asym, dt, act, chan), m, (k, n) in runs:
        w, ws, zp, ng, wdq = make(n, k, bits, group, asym, dev)
        wc = torch.rand(n, device=dev) + 0.5 if chan and group else (ws.view(-1) if not group else None)
        ref_w = wdq * wc[:, None] if chan and group else wdq
        x, xs, xf = act_input(m, k, act, dt, dev)
        ref = xf @ ref_w.t()
        errs = {}
        for split, warps, depth in variants:
            out = torch.zeros(m, n, device=dev)
            try:
                launch_gluon(x, xs, w[32], ws, wc, zp, None, out, m, n, k, ng, group=group or k, bits=bits,
                             act=act, grouped=bool(group), channel=wc is not None, split=split, warps=warps,
                             depth=depth)
                errs[f"s{split}/w{warps}/d{depth}"] = ((out - ref).norm() / ref.norm()).item()
            except Exception as exc:  # report and go on: one broken variant must not hide the others
                errs[f"s{split}/w{warps}/d{depth}"] = float("nan")
                log(f"ERROR bits={bits} g={group} act={act} s{split}/w{warps}/d{depth}: {type(exc).__name__}: "
                    f"{str(exc)[:300]!r}")
        ok = all(e < 1e-5 for e in errs.values())
        rows.append(dict(bits=bits, group=group, asym=asym, dtype=str(dt), act=act, m=m, k=k, n=n, errs=errs, ok=ok))
        if not ok:
            log(f"FAIL bits={bits} g={group} asym={asym} {dt} act={act} m={m} k={k} n={n}: {errs}")
    log(f"check: {sum(r['ok'] for r in rows)}/{len(rows)} pass")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--shapes", default="7168x18432,18432x7168,7168x2048,2048x7168,16384x7168")
    ap.add_argument("--ms", default="1,16")
    ap.add_argument("--bits", default="4,8")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--budget", type=float, default=400, help="seconds: stop sweeping after this")
    a = ap.parse_args()
    t_start = time.time()
    dev = "cuda"
    os.makedirs(a.out, exist_ok=True)
    logf = open(os.path.join(a.out, "gluon_decode_lab.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    log(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  check=[] if a.no_check else check(dev, log), rows=[])
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for bits, shape in itertools.product([int(b) for b in a.bits.split(",")], a.shapes.split(",")):
        if time.time() - t_start > a.budget:
            log("budget spent: sweep stopped")
            break
        k, n = (int(v) for v in shape.split("x"))
        group = 128 if bits == 4 else 0
        copies = max(2, min(8, int(3 * 60e6 // (n * k * bits // 8)) + 1))
        mats = [make(n, k, bits, group, False, dev, seed=i) for i in range(copies)]
        wbytes = n * k * bits / 8 + n * (k // group if group else 1) * 4
        wbf = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(max(2, min(8, int(3 * 60e6 // (n * k * 2)) + 1)))]
        tiles = k // (32 // bits * 32)
        for m in [int(v) for v in a.ms.split(",")]:
            if time.time() - t_start > a.budget:
                break
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            t_bf16 = graph_time([lambda w=w: x @ w.t() for w in wbf])
            ref = x.float() @ mats[0][4].t()
            cfg = pick_mma(m, n, k, 32, bits, dev)

            def call_triton(mat):
                w, ws, zp, ng, _ = mat
                out = torch.zeros((m, n), dtype=torch.float32, device=dev) if cfg.split_k > 1 else \
                    torch.empty((m, n), dtype=torch.bfloat16, device=dev)
                launch_triton(x, w[32], ws, None if group else ws.view(-1), None, out, m, n, k, ng, group, bits,
                              cfg.block_n, cfg.split_k, cfg.num_warps, cfg.num_stages)
                return out
            t_triton = graph_time([lambda mat=mat: call_triton(mat) for mat in mats])
            best = None
            programs_n = [triton.cdiv(n, 16 * w) for w in (4, 8)]
            splits = sorted({s for s in (1, 2, 4, 8, 16, 32) if s <= tiles})
            for warps, split, depth in itertools.product((4, 8), splits, (1, 2)):
                nt = -(-tiles // split)
                bm = 8 if m <= 8 else 16
                if nt * (32 // bits * 32) * bm * 2 > 200 * 1024:  # staged x past shared memory
                    continue
                progs = programs_n[warps // 8] * split
                if progs < 2 * sms or progs > 16 * sms:  # too few programs to fill the GPU, or needless split-K
                    continue

                def call(mat, warps=warps, split=split, depth=depth):
                    w, ws, zp, ng, _ = mat
                    out = torch.zeros((m, n), dtype=torch.float32, device=dev) if split > 1 else \
                        torch.empty((m, n), dtype=torch.bfloat16, device=dev)
                    launch_gluon(x, None, w[32], ws, None if group else ws.view(-1), None, None, out, m, n, k, ng,
                                 group=group or k, bits=bits, act=0, grouped=bool(group), channel=not group,
                                 split=split, warps=warps, depth=depth)
                    return out
                try:
                    y = call(mats[0]).float()
                    err = ((y - ref).norm() / ref.norm()).item()
                    if not err < 8e-3:
                        log(f"  FAIL w={warps} split={split} d={depth}: rel err {err:.3g}")
                        continue
                    us = graph_time([lambda mat=mat: call(mat) for mat in mats])
                except Exception as exc:  # a config that cannot build or launch: skip it, say so
                    log(f"  skip w={warps} split={split} d={depth}: {type(exc).__name__}: {str(exc)[:160]!r}")
                    continue
                row = dict(k=k, n=n, m=m, bits=bits, warps=warps, split=split, depth=depth, us=us, bf16_us=t_bf16,
                           triton_us=t_triton, err=err, weight_gbs=wbytes / (us * 1e-6) / 1e9)
                result["rows"].append(row)
                if best is None or us < best["us"]:
                    best = row
            if best:
                log(f"K={k} N={n} bits={bits} M={m}: bf16 {t_bf16:.1f} us, triton {t_triton:.1f} us "
                    f"({t_bf16 / t_triton:.2f}x), gluon best {best['us']:.1f} us = {t_bf16 / best['us']:.2f}x bf16, "
                    f"{best['weight_gbs']:.0f} GB/s (w {best['warps']} split {best['split']} d {best['depth']})")
        with open(os.path.join(a.out, "gluon_decode_lab.json"), "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
