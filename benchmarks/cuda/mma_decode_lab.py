# ruff: noqa: B023  (closures are timed inside the loop iteration that defines them)
"""Lab for dsq_cuda.mma_decode_kernel (tensor-core decode GEMM, weights as the register operand): checks every
variant against a float32 product, then sweeps its configs at decode M, with bf16 ``x @ W.t()`` in the same run.

    PYTHONPATH=backends:conformance:. python3 benchmarks/cuda/mma_decode_lab.py --out $OUT

Timing as benchmarks/cuda/gemv_lab.py: a CUDA graph of R calls over R distinct weight copies (more bytes than
L2), replayed; median per call. To time a change config by config against the previous kernel in one run:

    git show HEAD~1:backends/dsq_cuda/mma_decode_kernel.py > benchmarks/cuda/_baseline_kernel.py
    ... mma_decode_lab.py --no-check --baseline benchmarks/cuda/_baseline_kernel.py --bn-warps 64:4 --stages 2

``--modes split,fixup,stream`` compares the ways programs share K (see the kernel's docstring); ``--maxnreg``
caps registers (more resident programs, or spills).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(__file__))
from gemv_lab import canonical_words, graph_time  # noqa: E402

from dsq_cuda.mma_decode_kernel import mma_decode_kernel  # noqa: E402
from dsq_cuda.slab import to_pair_tiles  # noqa: E402


def launch(x, w, ws, wc, wz, out, m, n, k, ng, group, bits, bn, split, warps, stages, bm=None, asm=True, act=0,
           xs=None, sl=32, kernel=mma_decode_kernel, programs=0, sums=None, counts=None, maxnreg=None,
           x_ahead=None, dot_fields=1):
    """split-K grid (n / bn, split); ``programs`` > 0: stream-K over that many programs; ``sums`` / ``counts``
    (zeroed workspace, left zeroed): the in-kernel fixup (FIXUP), so ``out`` is written in its own dtype."""
    lbk = (32 // bits) * sl
    bm = bm or max(16, triton.next_power_of_2(m))
    extra = dict(STREAM=programs > 0, FIXUP=sums is not None, sum_ptr=sums, count_ptr=counts) if \
        "FIXUP" in kernel.arg_names else {}  # (a baseline kernel from before the fixup has neither)
    if x_ahead is not None:
        extra["X_AHEAD"] = x_ahead
    if dot_fields > 1:
        extra["DOT_FIELDS"] = dot_fields
    if maxnreg:
        extra["maxnreg"] = maxnreg
    kernel[(programs,) if programs else (triton.cdiv(n, bn), split)](
        x, ws if xs is None else xs, w, ws, ws if wc is None else wc, ws if wz is None else wz, ws, out,
        m, n, k, w.shape[1], ng, x.stride(0), out.stride(0), ws, ws, 0, 0, 0,
        G=group or lbk, BITS=bits, ACT=act, ASYM=wz is not None, GROUP_SCALE=bool(group),
        CHANNEL_SCALE=wc is not None, HAS_BIAS=False, SPLIT_K=1 if programs else split, BLOCK_M=bm, BLOCK_N=bn,
        SL=sl, F16=x.dtype == torch.float16, ASM=asm, EVEN_K=k % lbk == 0, num_warps=warps, num_stages=stages,
        **extra)


def make(n, k, bits, group, asym, dev, seed=0, sls=(32,)):
    g = torch.Generator(device=dev).manual_seed(seed)
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    codes = torch.randint(lo, hi, (n, k), dtype=torch.int8, device=dev, generator=g)
    epw = 32 // bits
    kp = -(-k // epw) * epw
    cw = canonical_words(torch.cat([codes, codes.new_zeros(n, kp - k)], 1), bits)
    w = {sl: to_pair_tiles(cw, k, bits, sl) for sl in sls}
    ng = -(-k // group) if group else 1
    ws = torch.rand(n, ng, device=dev, generator=g) * 0.01 + 0.001
    zp = torch.randint(-8, 8, (n, ng), dtype=torch.int8, device=dev, generator=g) if asym else None
    gg = group or k
    q = codes.float() - (zp.float().repeat_interleave(gg, 1)[:, :k] if asym else 0)
    wdq = q * ws.repeat_interleave(gg, 1)[:, :k]
    return w, ws, zp, ng, wdq


def check(dev, log) -> list[dict]:
    rows = []
    cases = [(4, 128, False, torch.bfloat16), (4, 128, True, torch.bfloat16), (4, 64, False, torch.float16),
             (8, 0, False, torch.bfloat16), (8, 0, False, torch.float16), (8, 128, False, torch.bfloat16)]
    for (bits, group, asym, dt), m, (k, n) in itertools.product(cases, (1, 5, 16, 33, 64), ((1024, 320), (896, 192))):
        w, ws, zp, ng, wdq = make(n, k, bits, group, asym, dev)
        x = torch.randn(m, k, device=dev, dtype=dt)
        ref = x.float() @ wdq.t()
        errs = {}
        # (asm, split, BLOCK_N, warps, fields per MMA chain): 4 warps and BLOCK_N 64 run wgmma; 1-2 warps
        # run mma.sync
        fpg = (group or k) // 32
        for asm, split, bn, warps, df in ((True, 1, 64, 4, 1), (True, 3, 64, 4, 1), (False, 2, 64, 4, 1),
                                          (True, 1, 64, 2, 1), (True, 3, 32, 1, 1), (True, 2, 128, 2, 1),
                                          (True, 3, 64, 4, min(4, fpg)), (True, 1, 128, 8, min(4, fpg)),
                                          (True, 2, 64, 4, min(32 // bits, fpg))):
            out = torch.zeros(m, n, device=dev)
            launch(x, w[32], ws, None if group else ws.view(-1), zp, out, m, n, k, ng, group, bits,
                   bn, split, warps, 3, asm=asm, x_ahead=df == 1, dot_fields=df)
            errs[f"asm{int(asm)}/s{split}/bn{bn}/w{warps}/d{df}"] = ((out - ref).norm() / ref.norm()).item()
        ok = all(e < 1e-5 for e in errs.values())
        rows.append(dict(bits=bits, group=group, asym=asym, dtype=str(dt), m=m, k=k, n=n, errs=errs, ok=ok))
        if not ok:
            log(f"FAIL bits={bits} g={group} asym={asym} {dt} m={m} k={k} n={n}: {errs}")
    log(f"check: {sum(r['ok'] for r in rows)}/{len(rows)} pass")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--shapes", default="7168x18432,18432x7168,7168x2048,2048x7168")
    ap.add_argument("--ms", default="1,16,64")
    ap.add_argument("--bits", default="4,8")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sls", default="32,64", help="slab lengths (inputs per field) to sweep")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--full", action="store_true", help="the wider config grid (BN 256, split 1)")
    ap.add_argument("--bn-warps", default="",
                    help="BLOCK_N:num_warps pairs to sweep, e.g. 32:1,64:2,64:4 (fewer than 4 warps, or BLOCK_N "
                         "under 64, make Triton use mma.sync instead of wgmma); default: the standard grid")
    ap.add_argument("--splits", default="2,4,8,16")
    ap.add_argument("--stages", default="2,3")
    ap.add_argument("--modes", default="split",
                    help="how programs share K: split (split-K, atomics into a zeroed float32 buffer, then a cast), "
                         "fixup (split-K, the last program finishes the row block), stream (stream-K + fixup)")
    ap.add_argument("--per-sm", default="4,6", help="stream mode: programs per SM to sweep")
    ap.add_argument("--maxnreg", default="0", help="register caps to sweep (0: none)")
    ap.add_argument("--x-ahead", default="1", help="X_AHEAD values to sweep (1: x one field ahead by hand, "
                                                   "0: left to the pipeliner; try with --stages 3)")
    ap.add_argument("--dot-fields", default="1", help="DOT_FIELDS values to sweep (fields per MMA chain; "
                                                       "above 1 needs --x-ahead 0)")
    ap.add_argument("--stress", type=int, default=0, help="run each config this many more times against the "
                                                             "reference, counting wrong results (races)")
    ap.add_argument("--no-spec-m", action="store_true", help="also time the kernel compiled without M = 1 "
                                                                "specialised (kernel name nospecM)")
    ap.add_argument("--baseline", default="",
                    help=".py files (comma-separated) each holding another mma_decode_kernel (e.g. the previous "
                         "commit's) to time beside the current one, config by config; named after the file")
    a = ap.parse_args()
    dev = "cuda"
    os.makedirs(a.out, exist_ok=True)
    kernels = {"current": mma_decode_kernel}
    for path in filter(None, a.baseline.split(",")):
        name = os.path.splitext(os.path.basename(path))[0].lstrip("_")
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        kernels[name] = mod.mma_decode_kernel
    if a.no_spec_m:  # the same kernel without Triton's specialisation of M = 1 (a constant M changes the code)
        kernels["nospecM"] = triton.jit(do_not_specialize=["M"])(mma_decode_kernel.fn)
    logf = open(os.path.join(a.out, "mma_decode_lab.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    # no copy-bandwidth ceiling here: gemv_lab's 2 GiB graph-replayed copy read 2.7 TB/s on the H200 where
    # run_gpu.py's copy (the one the benchmark tables use) reads 4.2 TB/s; compare GB/s against run_gpu.py
    log(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}")
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                  check=[] if a.no_check else check(dev, log), rows=[])
    for shape, bits in itertools.product(a.shapes.split(","), [int(b) for b in a.bits.split(",")]):
        k, n = (int(v) for v in shape.split("x"))
        group = 128 if bits == 4 else 0
        copies = max(2, min(8, int(3 * 60e6 // (n * k * bits // 8)) + 1))
        sls = [int(v) for v in a.sls.split(",")]
        sl_min = min(sls)
        mats = [make(n, k, bits, group, False, dev, seed=i, sls=sls) for i in range(copies)]
        wbytes = n * k * bits / 8 + n * (k // group if group else 1) * 4
        wbf = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(max(2, min(8, int(3 * 60e6 // (n * k * 2)) + 1)))]
        for m in [int(v) for v in a.ms.split(",")]:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            t_bf16 = graph_time([lambda w=w: x @ w.t() for w in wbf])
            ref = x.float() @ mats[0][4].t()
            best = None
            grid = itertools.product((64, 128, 256), (1, 2, 4, 8, 16), (4, 8), (2, 3), sls) if a.full else \
                itertools.product((64, 128), (2, 4, 8, 16), (4, 8), (2, 3), sls)
            if a.quick:
                grid = itertools.product((128,), (4, 8), (4,), (3,), sls)
            if a.bn_warps:
                pairs = [tuple(int(v) for v in p.split(":")) for p in a.bn_warps.split(",")]
                grid = ((bn, split, warps, stages, sl) for (bn, warps), split, stages, sl in itertools.product(
                    pairs, [int(v) for v in a.splits.split(",")], [int(v) for v in a.stages.split(",")], sls))
            sms = torch.cuda.get_device_properties(0).multi_processor_count
            runs = []  # (kernel name, kernel, mode, programs per SM in stream mode, maxnreg, X_AHEAD, DOT_FIELDS)
            for mode in a.modes.split(","):
                for mr, xa, df in itertools.product([int(v) for v in a.maxnreg.split(",")],
                                                    [int(v) for v in a.x_ahead.split(",")],
                                                    [int(v) for v in a.dot_fields.split(",")]):
                    for kname, kern in kernels.items():
                        if mode != "split" and "FIXUP" not in kern.arg_names:
                            continue
                        per_sms = [int(v) for v in a.per_sm.split(",")] if mode == "stream" else [0]
                        if (not xa and "X_AHEAD" not in kern.arg_names) or (df > 1 and (
                                xa or "DOT_FIELDS" not in kern.arg_names or df > min(32 // bits, (group or k) // sl_min))):
                            continue
                        runs += [(kname, kern, mode, v, mr, xa, df) for v in per_sms]
            grid = list(grid)  # iterated once per run below
            sums = torch.zeros(max(16, triton.next_power_of_2(m)), n, device=dev)
            counts = torch.zeros(triton.cdiv(n, 32), dtype=torch.int32, device=dev)
            for (bn, split, warps, stages, sl), (kname, kern, mode, per_sm, mr, xa, df) in itertools.product(grid, runs):
                if mode == "stream" and split != int(a.splits.split(",")[0]):
                    continue  # stream-K has no split: run it once per config
                kname = f"{kname}/{mode}" + (f"{per_sm}" if mode == "stream" else "") + (f"/r{mr}" if mr else "") \
                    + ("" if xa else "/x-pipelined") + (f"/dot{df}" if df > 1 else "")
                if (bn == 256 and warps == 4) or (m > 16 and warps == 4 and bn > 64):  # register spills
                    continue
                if m <= 16 and warps == 8 and not a.full:
                    continue
                def call(mat, bn=bn, split=split, warps=warps, stages=stages, sl=sl, kern=kern, mode=mode,
                         per_sm=per_sm, mr=mr, xa=xa, df=df):
                    w, ws, zp, ng, _ = mat
                    fix = mode != "split"
                    out = torch.zeros((m, n), dtype=torch.float32, device=dev) if split > 1 and not fix else \
                        torch.empty((m, n), dtype=torch.bfloat16, device=dev)
                    launch(x, w[sl], ws, None if group else ws.view(-1), None, out, m, n, k, ng, group, bits, bn,
                           split, warps, stages, sl=sl, kernel=kern, maxnreg=mr or None,
                           programs=per_sm * sms if mode == "stream" else 0, sums=sums if fix else None,
                           counts=counts if fix else None, x_ahead=None if xa else False, dot_fields=df)
                    return out.to(torch.bfloat16) if out.dtype != torch.bfloat16 else out
                try:
                    y = call(mats[0]).float()
                    err = ((y - ref).norm() / ref.norm()).item()
                    if not err < 8e-3:
                        log(f"  FAIL {kname} bn={bn} split={split} w={warps} st={stages}: rel err {err:.3g}")
                        continue
                    bad = 0
                    for _ in range(a.stress):
                        d = (call(mats[0]).float() - ref).abs()
                        if not d.norm() / ref.norm() < 8e-3:  # where: the wrong outputs' tokens and row blocks
                            bad += 1
                            wm, wn = torch.nonzero(d > 0.05 * ref.abs().max(), as_tuple=True)
                            log(f"    wrong: {wm.numel()} outputs, tokens {sorted(set(wm.tolist()))[:8]}, row blocks "
                                f"{sorted(set((wn // bn).tolist()))[:12]}")
                    if bad:
                        log(f"  STRESS {kname} bn={bn} split={split} w={warps} st={stages}: {bad} of {a.stress} wrong")
                    us = graph_time([lambda mat=mat: call(mat) for mat in mats])
                except Exception as exc:  # a config Triton cannot build: skip it, say so
                    log(f"  skip bn={bn} split={split} w={warps} st={stages}: {type(exc).__name__}: {str(exc)[:100]!r}")
                    continue
                row = dict(stress=a.stress, stress_wrong=bad, kernel=kname, mode=mode, per_sm=per_sm, maxnreg=mr, x_ahead=xa, dot_fields=df, k=k, n=n, m=m, bits=bits, bn=bn, split=split, warps=warps, stages=stages, sl=sl, us=us,
                           bf16_us=t_bf16, err=err, weight_gbs=wbytes / (us * 1e-6) / 1e9)
                result["rows"].append(row)
                log(f"  {kname} K={k} N={n} bits={bits} M={m} bn={bn} split={split} w={warps} st={stages} sl={sl}: "
                    f"{us:.1f} us ({t_bf16 / us:.2f}x bf16)")
                if best is None or us < best["us"]:
                    best = row
            if best:
                log(f"K={k} N={n} bits={bits} M={m}: bf16 {t_bf16:.1f} us, best {best['us']:.1f} us = "
                    f"{t_bf16 / best['us']:.2f}x bf16, weights at {best['weight_gbs']:.0f} GB/s "
                    f"({best['kernel']} bn {best['bn']} split {best['split']} w {best['warps']} st {best['stages']} sl {best['sl']})")
        with open(os.path.join(a.out, "mma_decode_lab.json"), "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
