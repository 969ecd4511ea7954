# ruff: noqa: B023  (closures are timed inside the loop iteration that defines them)
"""Lab for dsq_cuda.prefill_kernel (fused weight-only GEMM at prefill M): checks the kernel against a float32
product of the dequantized weight, then times it over a config grid beside bf16 ``x @ W.t()`` and the current dsq
path (``dsq_cuda.mm.matmul``: dequantize + cuBLAS from M = 256, the tiled kernel below) in the same run.

    PYTHONPATH=backends:conformance:. python3 benchmarks/cuda/prefill_lab.py --out $OUT
    ... --shapes 7168x18432 --ms 256,4096 --schemes W4A16 --bk 64 --warps 8     (restrict the grid)
    ... --full                                     (BLOCK_M 64/128 x BLOCK_N 64/128/256 x BLOCK_K 64/128 x
                                                    warps 4/8 x stages 2/3/4: 72 configs)
    ... --cpu-smoke                                (no GPU: the check alone, in the Triton interpreter, tiny shapes)

Timing: benchmarks/cuda/run_gpu.py's ``bench`` (CUDA graph replay, L2 flushed before each call, median). Every
config is checked before it is timed (a wrong one is reported, not timed). ``--ir`` prints, per compiled variant
of the kernel in Triton's cache, how many shared-memory allocations, layout conversions and wgmma / waits its
TTGIR holds (is the decoded tile staged through shared memory?).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import re
import sys
import time

if "--cpu-smoke" in sys.argv:  # before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))

import dsq  # noqa: E402
from dsq_cuda.mm import matmul as dsq_mm  # noqa: E402
from dsq_cuda.mm_layout import group_of, prepare  # noqa: E402
from dsq_cuda.prefill_kernel import pick_prefill, prefill_matmul  # noqa: E402
from dsq_cuda.unpack import unpack  # noqa: E402

SHAPES = "7168x18432,18432x7168,7168x2048,2048x7168,16384x7168,7168x1536,1536x24576,512x32768"  # KxN
#: (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, swap): the default grid (the heuristic's pick is added per
#: cell). swap 1: the weights are the MMA's first operand (prefill_kernel SWAP)
GRID = [(128, 128, 128, 8, 3, 0), (128, 128, 128, 8, 3, 1), (128, 128, 128, 8, 4, 0), (128, 128, 128, 8, 2, 0),
        (64, 128, 128, 4, 3, 0), (64, 128, 64, 4, 4, 1), (128, 128, 64, 8, 3, 0), (128, 128, 64, 4, 3, 0),
        (128, 64, 64, 4, 4, 0), (256, 128, 64, 8, 3, 1), (256, 128, 64, 8, 4, 1), (256, 128, 128, 8, 2, 1)]
FULL = list(itertools.product((64, 128), (64, 128, 256), (64, 128), (4, 8), (2, 3, 4), (0, 1)))
#: dsq_cuda.mma_decode_kernel (the decode GEMM: weights decoded into the MMA's register operand, pair tiles) run
#: at prefill M with one program row per BLOCK_M tokens, for comparison (--decode-kernel): (BLOCK_M, BLOCK_N,
#: num_warps, num_stages)
DECODE_GRID = [(64, 128, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3)]
#: a config whose relative error of the max exceeds this is reported wrong (bf16 output: about 2**-8 at most)
MAX_ERR = 1e-2


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


def configs(a) -> list[tuple[int, ...]]:
    """The grid (default or --full), restricted by --bm/--bn/--bk/--warps/--stages/--swap."""
    keep = [(_ints(getattr(a, f)) or None) for f in ("bm", "bn", "bk", "warps", "stages", "swap")]
    return [c for c in (FULL if a.full else GRID) if all(k is None or v in k for v, k in zip(c, keep))]


def make_weight(n: int, k: int, scheme, dev: torch.device, seed: int = 0):
    """A quantized random weight (dsq's cuda calibration and packing) and its dequantized float32 values."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    w = (torch.randn(n, k, generator=g) * 0.02).to(dev, torch.bfloat16)
    backend = dsq.get_backend("cuda")
    packed = backend.quantize_weight(w, scheme)
    return packed, unpack(packed, scheme)[1].to(dev)


def rel_max_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y - ref| / max |ref| (float32 reference)."""
    return float((y.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def check_cell(x, packed, scheme, wdq, cfgs, bias=None) -> dict:
    """Relative error of the max of each config (None: the heuristic's pick) against ``x @ wdq^T (+ bias)`` in
    float32."""
    lay = prepare(packed, scheme, x.device)
    ref = x.float() @ wdq.t()
    if bias is not None:
        ref = ref + bias.float()
    errs = {}
    for cfg in cfgs:
        try:
            errs[cfg] = rel_max_err(prefill_matmul(x, lay, scheme, bias, cfg), ref)
        except Exception as exc:  # noqa: BLE001 - a config that does not compile (shared memory) is reported
            errs[cfg] = f"{type(exc).__name__}: {str(exc)[:160]}"
    return errs


def time_decode_kernel(x, lay, scheme, wdq, bench, rep: int) -> dict:
    """dsq_cuda.mma_decode_kernel over DECODE_GRID at this M (grid: row blocks x 1 x token blocks, no split),
    checked first: {"BMxBNxWxS": {"err", "us"}} (an error entry if its signature has changed)."""
    import triton

    from dsq_cuda.mm import mma_dot_fields
    from dsq_cuda.mm_layout import pair_tiles
    from dsq_cuda.mma_decode_kernel import mma_decode_kernel

    m, k = x.shape
    n, bits, group, sl = lay["n"], scheme.weight_bits, group_of(scheme), lay["sl"]
    w, ws, epw = pair_tiles(lay, bits), lay["ws"], 32 // bits
    ref = x.float() @ wdq.t()
    res = {}
    for bm, bn, warps, stages in DECODE_GRID:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)

        def run():
            mma_decode_kernel[(triton.cdiv(n, bn), 1, triton.cdiv(m, bm))](
                x, ws, w, ws, ws, lay.get("wz", ws), ws, out, m, n, k, w.shape[1], ws.shape[-1], x.stride(0),
                out.stride(0), ws, ws, 0, 0, 0, G=group or epw * sl, BITS=bits, ACT=0, ASYM="wz" in lay,
                GROUP_SCALE=bool(group), CHANNEL_SCALE=not group, HAS_BIAS=False, SPLIT_K=1, BLOCK_M=bm,
                BLOCK_N=bn, SL=sl, F16=False, ASM=True, EVEN_K=k % (epw * sl) == 0, X_AHEAD=False,
                DOT_FIELDS=mma_dot_fields(bits, group, sl, False), num_warps=warps, num_stages=stages)
        key = f"{bm}x{bn}x{warps}x{stages}"
        try:
            run()
            err = rel_max_err(out, ref)
            res[key] = {"err": err, "us": bench(run, rep=rep) if err < MAX_ERR else None}
        except Exception as exc:  # noqa: BLE001 - the kernel is another module's: report, do not stop
            res[key] = {"err": f"{type(exc).__name__}: {str(exc)[:160]}"}
    return res


def cpu_smoke() -> int:
    """The check at tiny shapes in the Triton interpreter (no GPU), every weight-only scheme, bf16 and fp16."""
    dev = torch.device("cpu")
    cfgs = [None, (16, 32, 32, 4, 1, 0), (32, 16, 16, 4, 1, 1)]
    bad = 0
    for name, dt, (k, n, m) in itertools.product(("W4A16", "W4A16_ASYM", "W8A16"), (torch.bfloat16, torch.float16),
                                                 ((256, 96, 33), (384, 40, 5))):
        scheme = dsq.get_scheme(name)
        packed, wdq = make_weight(n, k, scheme, dev, seed=k + n)
        x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(dt)
        bias = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dt)
        errs = check_cell(x, packed, scheme, wdq, cfgs, bias)
        ok = all(isinstance(e, float) and e < MAX_ERR for e in errs.values())
        bad += not ok
        print(f"{name:10s} {str(dt)[6:]:8s} K={k} N={n} M={m}: " +
              " ".join(f"{c}:{e if isinstance(e, str) else f'{e:.2e}'}" for c, e in errs.items()), flush=True)
    print("cpu smoke:", "PASS" if not bad else f"FAIL ({bad} cells)")
    return int(bad > 0)


def ir_summary() -> list[dict]:
    """Per cached compile of prefill_kernel: counts of TTGIR ops that show where the decoded tile goes."""
    root = os.environ.get("TRITON_CACHE_DIR", os.path.expanduser("~/.triton/cache"))
    rows = []
    for path in sorted(glob.glob(os.path.join(root, "**", "prefill_kernel.ttgir"), recursive=True)):
        text = open(path).read()
        row = {"file": os.path.relpath(path, root)}
        for op in ("ttg.local_alloc", "ttg.local_store", "ttg.local_load", "ttg.convert_layout",
                   "ttng.warp_group_dot ", "ttng.warp_group_dot_wait", "ttg.async_copy_global_to_local",
                   "tt.reshape", "tt.trans"):
            row[op.strip()] = text.count(op)
        # wgmma whose first operand is a register tensor (not a shared-memory descriptor), and the waits' depths
        row["wgmma_register_a"] = len(re.findall(r"ttng\.warp_group_dot [^:]*: tensor<", text))
        row["wait_pendings"] = re.findall(r"pendings = (\d+)", text)
        m = re.search(r'"ttg.num-warps" = (\d+)', text)
        row["warps"] = int(m.group(1)) if m else None
        m = re.search(r"ttg.shared = (\d+)", text)
        row["shared_bytes"] = int(m.group(1)) if m else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".", help="folder for prefill_lab.json")
    ap.add_argument("--shapes", default=SHAPES, help="KxN weights, comma-separated")
    ap.add_argument("--ms", default="128,256,1024,4096", help="token counts M")
    ap.add_argument("--schemes", default="W4A16,W8A16")
    ap.add_argument("--full", action="store_true", help="the full 72-config grid instead of the default 12")
    for f in ("bm", "bn", "bk", "warps", "stages", "swap"):
        ap.add_argument(f"--{f}", default="", help=f"keep only configs with these {f} values (comma-separated)")
    ap.add_argument("--rep", type=int, default=40, help="do_bench time budget per timing (ms)")
    ap.add_argument("--no-baselines", action="store_true", help="time the new kernel only")
    ap.add_argument("--decode-kernel", action="store_true",
                    help="also time dsq_cuda.mma_decode_kernel at these M (DECODE_GRID), for comparison")
    ap.add_argument("--ir", action="store_true", help="print the TTGIR op counts of the compiled variants at the end")
    ap.add_argument("--cpu-smoke", action="store_true", help="no GPU: check tiny shapes in the Triton interpreter")
    a = ap.parse_args()
    if a.cpu_smoke:
        return cpu_smoke()
    from run_gpu import bench  # (imports the GPU timing helpers; not needed by the smoke test)

    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 reference is a true float32 product
    dev = torch.device("cuda")
    os.makedirs(a.out, exist_ok=True)
    grid = configs(a)
    t0 = time.time()
    print(f"device {torch.cuda.get_device_name()} torch {torch.__version__} triton "
          f"{__import__('triton').__version__}; {len(grid)} configs", flush=True)
    rows = []
    for name in a.schemes.split(","):
        scheme = dsq.get_scheme(name)
        for shape in a.shapes.split(","):
            k, n = (int(v) for v in shape.split("x"))
            packed, wdq = make_weight(n, k, scheme, dev)
            wbf = wdq.to(torch.bfloat16)
            lay = prepare(packed, scheme, dev)
            for m in _ints(a.ms):
                x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
                heur_t = tuple(int(v) for v in pick_prefill(m, n, k, group_of(scheme), dev))
                cells = list(dict.fromkeys([heur_t, *grid]))
                errs = check_cell(x, packed, scheme, wdq, cells)
                row = dict(scheme=name, k=k, n=n, m=m, heuristic=list(heur_t), configs={})
                if not a.no_baselines:
                    row["bf16_us"] = bench(lambda: x @ wbf.t(), rep=a.rep)
                    row["dsq_us"] = bench(lambda: dsq_mm(x, packed, scheme), rep=a.rep)
                for cfg in cells:
                    err = errs[cfg]
                    entry = {"err": err}
                    if isinstance(err, float) and err < MAX_ERR:
                        entry["us"] = bench(lambda: prefill_matmul(x, lay, scheme, None, cfg), rep=a.rep)
                    row["configs"]["x".join(map(str, cfg))] = entry
                if a.decode_kernel:
                    row["decode_kernel"] = time_decode_kernel(x, lay, scheme, wdq, bench, a.rep)
                timed = {c: e["us"] for c, e in row["configs"].items() if "us" in e}
                wrong = [c for c, e in row["configs"].items() if "us" not in e]
                if timed:
                    best = min(timed, key=timed.get)
                    row.update(best=best, best_us=timed[best], best_err=row["configs"][best]["err"],
                               heur_us=timed.get("x".join(map(str, heur_t))))
                    if "bf16_us" in row:
                        row.update(x_bf16=row["bf16_us"] / timed[best], x_dsq=row["dsq_us"] / timed[best])
                print(f"{name:7s} K={k:5d} N={n:5d} M={m:4d} best {row.get('best')} {row.get('best_us', 0):8.1f} us"
                      f" err {row.get('best_err', float('nan')):.1e} heur {row.get('heur_us') or 0:8.1f} us"
                      f" bf16 {row.get('bf16_us', 0):8.1f} dsq {row.get('dsq_us', 0):8.1f}"
                      f" x_bf16 {row.get('x_bf16', 0):.2f} x_dsq {row.get('x_dsq', 0):.2f}"
                      + (f" decode-kernel {row['decode_kernel']}" if a.decode_kernel else "")
                      + (f" NOT TIMED (wrong or failed to compile) {wrong}: {[row['configs'][c]['err'] for c in wrong]}"
                         if wrong else ""),
                      flush=True)
                rows.append(row)
    print("\n| scheme | K | N | M | best BMxBNxBKxWxS | us | heuristic us | bf16 us | x bf16 | dsq us | x dsq | err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scheme']} | {r['k']} | {r['n']} | {r['m']} | {r.get('best')} | {r.get('best_us', 0):.1f} | "
              f"{r.get('heur_us') or 0:.1f} | {r.get('bf16_us', 0):.1f} | {r.get('x_bf16', 0):.2f} | "
              f"{r.get('dsq_us', 0):.1f} | {r.get('x_dsq', 0):.2f} | {r.get('best_err', float('nan')):.1e} |")
    ir = ir_summary() if a.ir else []
    out = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
               triton=__import__("triton").__version__, seconds=time.time() - t0, rows=rows, ir=ir)
    with open(os.path.join(a.out, "prefill_lab.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
