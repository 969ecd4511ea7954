# ruff: noqa: B023  (closures are timed inside the loop iteration that defines them)
"""Decode-GEMM lab: candidate kernels for packed int4/int8 weights at M = 1..16, checked and timed in one run.

Run on the GPU machine (one call):
    PYTHONPATH=backends:conformance:. python3 benchmarks/cuda/gemv_lab.py --out $OUT [--kernels tile,rows,dot,load]

Kernels (``--kernels``), each checked against a float32 product before it is timed:
    tile   the backend's M = 1 kernel (dsq_cuda.gemv_kernel) on its row-tile layout (dsq_cuda.slab.to_row_tiles),
           swept over BLOCK_N, SW, split-K, warps (and the MANT decode variant where the sweep lists it)
    rows   CUDA-core GEMV for M <= 4 with a 3-D ``[M, BLOCK_N, SL]`` accumulator on row slabs (the row tiles
           stored N-major, ``[N, tiles*SL]``); the first design tried (85-97 us for W4A16 at M = 1
           on the two large shapes)
    dot    tensor-core variant on row slabs for M >= 4, weights as operand B or, swapped, as operand A
    load   reads the words once and does nothing else: the memory floor of the access pattern
Code -> float in rows: ``(u | 0x4B000000)`` as float32 is ``2**23 + u`` (subtract ``2**23 + 2**(b-1)``), or
MANT: u in the top mantissa bits of 1.0, ``f = 1 + u / 2**b``, with ``sum x*q = 2**b * (sum x*f - 1.5 sum x)``
per scale group. Timing: CUDA graph of R calls over R distinct weight copies (more bytes than L2), replayed;
median of the replays / R. bf16 ``x @ W.t()`` timed the same way in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys

import torch
import triton
import triton.language as tl

from dsq_cuda.gemv_kernel import gemv_kernel
from dsq_cuda.slab import row_tile_chunk, to_row_tiles


@triton.jit
def load_only_kernel(w_ptr, out_ptr, N, KW, BN: tl.constexpr, SL: tl.constexpr, SPLIT: tl.constexpr):
    """Reads the weight words once (xor-reduced): the memory roofline of this access pattern."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * BN + tl.arange(0, BN)
    offs_s = tl.arange(0, SL)
    tiles = KW // SL
    per = tl.cdiv(tiles, SPLIT)
    acc = tl.zeros([BN, SL], dtype=tl.int32)
    base = w_ptr + rows[:, None].to(tl.int64) * KW + offs_s[None, :]
    for t in range(pid_k * per, tl.minimum(pid_k * per + per, tiles)):
        acc = acc ^ tl.load(base + t * SL)
    tl.atomic_xor(out_ptr + rows, tl.sum(acc, axis=1))


@triton.jit
def gemv_rows_kernel(x_ptr, w_ptr, ws_ptr, out_ptr, M, N, K, KW, NG, stride_xm, stride_om,
                     G: tl.constexpr, BITS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                     SL: tl.constexpr, SPLIT: tl.constexpr, MANT: tl.constexpr):
    """y[M, N] = x @ (q * s)^T on CUDA cores; one program: BN rows of W, all M (<= BM) tokens."""
    EPW: tl.constexpr = 32 // BITS
    LBK: tl.constexpr = EPW * SL
    SPG: tl.constexpr = G // SL
    OFF: tl.constexpr = 1 << (BITS - 1)
    MASK: tl.constexpr = (1 << BITS) - 1
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * BN + tl.arange(0, BN)
    offs_s = tl.arange(0, SL)
    offs_m = tl.arange(0, BM)
    mmask = offs_m < M
    rmask = rows < N
    tiles = tl.cdiv(K, LBK)
    per = tl.cdiv(tiles, SPLIT)
    wbase = w_ptr + rows[:, None].to(tl.int64) * KW + offs_s[None, :]
    xbase = x_ptr + offs_m[:, None] * stride_xm + offs_s[None, :]
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    part = tl.zeros([BM, BN, SL], dtype=tl.float32)
    xacc = tl.zeros([BM, SL], dtype=tl.float32)
    for t in range(pid_k * per, tl.minimum(pid_k * per + per, tiles)):
        words = tl.load(wbase + t * SL, mask=rmask[:, None], other=0)
        for j in tl.static_range(EPW):
            kj = t * LBK + j * SL
            xj = tl.load(xbase + kj, mask=mmask[:, None] & (kj + offs_s[None, :] < K), other=0.0).to(tl.float32)
            if MANT:
                SH = 23 - BITS - BITS * j
                if SH >= 0:
                    f = ((words << SH) & (MASK << (23 - BITS))) | 0x3F800000
                else:
                    f = ((words >> (-SH)) & (MASK << (23 - BITS))) | 0x3F800000
                q = f.to(tl.float32, bitcast=True)
                xacc += xj
            else:
                q = (((words >> (j * BITS)) & MASK) | 0x4B000000).to(tl.float32, bitcast=True) - (8388608.0 + OFF)
            part += xj[:, None, :] * q[None, :, :]
            if (j + 1) % SPG == 0:
                s = tl.load(ws_ptr + rows * NG + kj // G, mask=rmask, other=0.0)
                if MANT:
                    red = tl.sum(part - 1.5 * xacc[:, None, :], axis=2) * (1 << BITS)
                    xacc = tl.zeros([BM, SL], dtype=tl.float32)
                else:
                    red = tl.sum(part, axis=2)
                acc += red * s[None, :]
                part = tl.zeros([BM, BN, SL], dtype=tl.float32)
    optr = out_ptr + offs_m[:, None] * stride_om + rows[None, :]
    omask = mmask[:, None] & rmask[None, :]
    if SPLIT > 1:
        tl.atomic_add(optr, acc, mask=omask)
    else:
        tl.store(optr, acc.to(out_ptr.dtype.element_ty), mask=omask)


@triton.jit
def dot_rows_kernel(x_ptr, w_ptr, ws_ptr, out_ptr, M, N, K, KW, NG, stride_xm, stride_om,
                    G: tl.constexpr, BITS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                    SL: tl.constexpr, SPLIT: tl.constexpr, SWAP: tl.constexpr):
    """Tensor-core variant on row slabs: per field, q (bf16, exact) times the x slab; SWAP puts W as operand A."""
    EPW: tl.constexpr = 32 // BITS
    LBK: tl.constexpr = EPW * SL
    SPG: tl.constexpr = G // SL
    OFF: tl.constexpr = 1 << (BITS - 1)
    MASK: tl.constexpr = (1 << BITS) - 1
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_n * BN + tl.arange(0, BN)
    offs_s = tl.arange(0, SL)
    offs_m = tl.arange(0, BM)
    mmask = offs_m < M
    rmask = rows < N
    tiles = tl.cdiv(K, LBK)
    per = tl.cdiv(tiles, SPLIT)
    wbase = w_ptr + rows[:, None].to(tl.int64) * KW + offs_s[None, :]
    xbase = x_ptr + offs_m[:, None] * stride_xm + offs_s[None, :]
    acc = tl.zeros([BN, BM], dtype=tl.float32)
    part = tl.zeros([BN, BM], dtype=tl.float32)
    for t in range(pid_k * per, tl.minimum(pid_k * per + per, tiles)):
        words = tl.load(wbase + t * SL, mask=rmask[:, None], other=0)
        for j in tl.static_range(EPW):
            kj = t * LBK + j * SL
            xj = tl.load(xbase + kj, mask=mmask[:, None] & (kj + offs_s[None, :] < K), other=0.0)
            q = ((((words >> (j * BITS)) & MASK) | 0x4B000000).to(tl.float32, bitcast=True)
                 - (8388608.0 + OFF)).to(tl.bfloat16)
            if SWAP:
                part = tl.dot(q, tl.trans(xj), part)
            else:
                part += tl.trans(tl.dot(xj, tl.trans(q)))
            if (j + 1) % SPG == 0:
                s = tl.load(ws_ptr + rows * NG + kj // G, mask=rmask, other=0.0)
                acc += part * s[:, None]
                part = tl.zeros([BN, BM], dtype=tl.float32)
    optr = out_ptr + offs_m[None, :] * stride_om + rows[:, None]
    omask = mmask[None, :] & rmask[:, None]
    if SPLIT > 1:
        tl.atomic_add(optr, acc, mask=omask)
    else:
        tl.store(optr, acc.to(out_ptr.dtype.element_ty), mask=omask)


def canonical_words(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes int8 [N, K] (K a multiple of 32/bits) -> canonical int32 words [N, K*bits/32]."""
    epw = 32 // bits
    u = (codes.to(torch.int64) + (1 << (bits - 1))).view(codes.shape[0], -1, epw)
    w = (u << (torch.arange(epw, device=codes.device, dtype=torch.int64) * bits)).sum(dim=-1)
    return torch.where(w >= 2**31, w - 2**32, w).to(torch.int32)


def row_slabs(words: torch.Tensor, k: int, bits: int, sl: int) -> torch.Tensor:
    """The rows/dot kernels' layout: row tiles (dsq_cuda.slab.to_row_tiles) stored N-major, [N, tiles*SL]."""
    t = to_row_tiles(words, k, bits, 128, sl)
    return t.transpose(0, 1).reshape(t.shape[1], -1).contiguous()


def graph_time(fns, reps: int = 50) -> float:
    """Median microseconds per call of a CUDA graph that runs every fn once (distinct weight copies)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / len(fns))
    return statistics.median(times)


def copy_bandwidth() -> float:
    a = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    us = graph_time([lambda: b.copy_(a)], reps=20)
    return 2 * a.numel() / (us * 1e-6) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--shapes", default="7168x18432,18432x7168,7168x2048,2048x7168")
    ap.add_argument("--ms", default="1,2,4,8,16")
    ap.add_argument("--bits", default="4,8")
    ap.add_argument("--kernels", default="tile,rows,dot")
    a = ap.parse_args()
    dev = "cuda"
    torch.manual_seed(0)
    bw = copy_bandwidth()
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__} "
          f"copy {bw:.0f} GB/s", flush=True)
    G, SL = 128, 32
    rows = []
    for shape, bits in itertools.product(a.shapes.split(","), [int(b) for b in a.bits.split(",")]):
        k, n = (int(v) for v in shape.split("x"))
        copies = max(2, min(8, int(3 * 60e6 // (n * k * bits // 8)) + 1))
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
        codes = [torch.randint(lo, hi, (n, k), dtype=torch.int8, device=dev) for _ in range(copies)]
        scales = [torch.rand(n, k // G, device=dev) * 0.01 + 0.001 for _ in range(copies)]
        canon = [canonical_words(c, bits) for c in codes]
        words = [row_slabs(c, k, bits, SL) for c in canon]
        kw = words[0].shape[1]
        tiles_by_sw = {sw: [to_row_tiles(c, k, bits, G, sw) for c in canon]
                       for sw in (16, 32)} if "tile" in a.kernels else {}
        del canon
        wbf = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(max(2, min(8, int(3 * 60e6 // (n * k * 2)) + 1)))]
        wbytes = n * k * bits / 8 + n * (k // G) * 4
        # load-only roofline
        lo_res = {}
        for bn, split in itertools.product((32, 64, 128), (1, 2, 4)) if "load" in a.kernels else []:
            o = torch.zeros(n, dtype=torch.int32, device=dev)
            fns = [lambda w=w, bn=bn, split=split, o=o: load_only_kernel[(triton.cdiv(n, bn), split)](
                w, o, n, kw, BN=bn, SL=SL, SPLIT=split, num_warps=4) for w in words]
            lo_res[(bn, split)] = graph_time(fns)
        best_lo = min(lo_res.values(), default=float("nan"))
        print(f"K={k} N={n} bits={bits}: load-only best {best_lo:.1f} us = {wbytes / best_lo / 1e3:.0f} GB/s "
              f"{dict((f'{b}/{s}', round(v, 1)) for (b, s), v in lo_res.items())}", flush=True)
        for m in [int(v) for v in a.ms.split(",")]:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            ref = x.float() @ (codes[0].float() * scales[0].repeat_interleave(G, dim=1)).t()
            t_bf16 = graph_time([lambda w=w: x @ w.t() for w in wbf])
            cands = []
            bms = [triton.next_power_of_2(m)]
            if m == 1 and "tile" in a.kernels:
                for bn, sw, split, warps, mant in itertools.product((64, 128, 256), (16, 32), (8, 16, 32), (4, 8),
                                                                     (0,)):
                    cands.append(("tile" + ("/mant" if mant else "/magic"), gemv_kernel,
                                  dict(BN=bn, SW=sw, SPLIT=split, MANT=mant), warps))
            for bn, split, warps, mant in itertools.product((32, 64, 128), (1, 2, 4), (4, 8), (0, 1)):
                if m > 4 or (bn * bms[0] > 256 and m > 1) or "rows" not in a.kernels:
                    continue
                cands.append(("cuda-core" + ("/mant" if mant else "/magic"), gemv_rows_kernel, dict(
                    BM=max(1, bms[0]), BN=bn, SPLIT=split, MANT=mant), warps))
            for bn, split, warps, swap in itertools.product((64, 128), (1, 2, 4), (4,), (0, 1)):
                if m < 4 or "dot" not in a.kernels:
                    continue
                cands.append(("dot" + ("/swap" if swap else ""), dot_rows_kernel, dict(
                    BM=max(16, bms[0]), BN=bn, SPLIT=split, SWAP=swap), warps))
            best = {}
            for name, kern, cfg, warps in cands:
                split = cfg["SPLIT"]
                grid = (triton.cdiv(n, cfg["BN"]), split)

                def call(w, s, cfg=cfg, kern=kern, warps=warps, grid=grid, split=split):
                    out = torch.zeros((m, n), dtype=torch.float32, device=dev) if split > 1 else \
                        torch.empty((m, n), dtype=torch.bfloat16, device=dev)
                    if kern is gemv_kernel:  # the backend's kernel on dsq_cuda.slab's row tiles
                        gemv_kernel[(1, grid[0], grid[1])](
                            x, w, s, s, s, out, s, s, s, n, k, k // G, x.stride(0), out.stride(0), 0, 0, 0, 0, 1, G=G,
                            BITS=bits, ASYM=False,
                            GROUP_SCALE=True, HAS_BIAS=False, SPLIT_K=cfg["SPLIT"], BLOCK_N=cfg["BN"], SW=cfg["SW"],
                            CH=row_tile_chunk(bits, G, cfg["SW"]), MANT=cfg["MANT"], num_warps=warps)
                    else:
                        kern[grid](x, w, s, out, m, n, k, kw, k // G, x.stride(0), out.stride(0), G=G, BITS=bits,
                                   SL=SL, num_warps=warps, **cfg)
                    return out.to(torch.bfloat16) if split > 1 else out
                wl = words if kern is not gemv_kernel else tiles_by_sw[cfg["SW"]]
                try:
                    y = call(wl[0], scales[0]).float()
                    err = ((y - ref).norm() / ref.norm()).item()
                    if not err < 8e-3:
                        print(f"  FAIL {name} {cfg} w{warps}: rel err {err:.3g}", flush=True)
                        continue
                    us = graph_time([lambda w=w, s=s: call(w, s) for w, s in zip(wl, scales)])
                except Exception as exc:  # a config Triton cannot build: skip it, say so
                    print(f"  skip {name} {cfg} w{warps}: {type(exc).__name__}: {str(exc)[:120]!r}", flush=True)
                    continue
                rows.append(dict(k=k, n=n, m=m, bits=bits, kernel=name, cfg=cfg, warps=warps, us=us, bf16_us=t_bf16,
                                 err=err))
                if name not in best or us < best[name][0]:
                    best[name] = (us, cfg, warps)
            line = " | ".join(f"{nm} {v[0]:.1f}us {t_bf16 / v[0]:.2f}x ({v[1]}, w{v[2]})" for nm, v in best.items())
            print(f"  M={m} bf16 {t_bf16:.1f}us | {line}", flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gemv_lab.json"), "w") as fh:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                       copy_gbs=bw, rows=rows), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
