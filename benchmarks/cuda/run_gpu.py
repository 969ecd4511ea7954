"""One GPU session: correctness against the numpy reference, then timings of every scheme and peer.

Usage (on a GPU machine, from the repository root):
    PYTHONPATH=backends:conformance:. python3 benchmarks/cuda/run_gpu.py --out DIR [--quick] [--sweep]

1. correctness: calibrate/pack/unpack/quantize_activation bit-exact vs cpu-reference, matmul within the
   conformance tolerance (elementwise bound with the bf16 output rounding) for every scheme;
2. ceilings: device-to-device copy bandwidth (bytes read + written) in the same run;
3. timings (triton.testing.do_bench, median, L2 flushed) on DeepSeek-V3 shapes, M in 1..4096, for dsq's
   schemes (activation quantization included) and the peers in peers.py;
4. --sweep: decode (M=1..64) configs of the packed schemes (GEMV and tiled), to fill dsq_cuda.configs.TUNED.
Writes results.json and a markdown table (results.md) to --out; prints the table last.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import json
import os
import re
import sys
import time

import torch

sys.path[:0] = [os.path.join(os.path.dirname(__file__))]
import numpy as np  # noqa: E402
import peers  # noqa: E402
import triton  # noqa: E402
from report import fraction_of_copy  # noqa: E402
from triton.testing import do_bench  # noqa: E402

import dsq  # noqa: E402
from benchmarks.timing import FLUSHES, median_ms  # noqa: E402
from dsq_conformance.tolerances import check_close, matmul_bounds, tolerance  # noqa: E402
from dsq_cuda import block_fp8  # noqa: E402
from dsq_cuda.configs import Config  # noqa: E402
from dsq_cuda.mm import matmul as dsq_mm  # noqa: E402

SHAPES = [(7168, 18432), (18432, 7168), (7168, 2048), (2048, 7168), (16384, 7168), (7168, 1536),
          (1536, 24576), (512, 32768)]  # (K, N)
MS = [1, 4, 16, 64, 256, 1024, 4096]
SCHEMES = ["W4A16", "W8A16", "W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "W4AFP8", "FP8_BLOCK"]


GRAPH_FAILURES: list[str] = []
#: how the L2 cache is flushed before each timed graph replay (benchmarks/timing.py; --flush)
FLUSH = "dirty"


def bench(fn, rep=40, graph=True) -> float:
    """Median microseconds of one call, L2 flushed before each (do_bench).

    With ``graph`` the call is captured in a CUDA graph (after a throwaway capture) and the replay is timed: the GPU time of the
    kernels without Python/launch overhead, which on this machine's CPU exceeds the GPU time of decode
    GEMMs (and is what serving engines remove with graphs too). Every implementation is timed the same way.
    """
    if graph:
        try:
            fn()
            torch.cuda.synchronize()
            # a throwaway capture first: state made once per capture stream (dsq's split-K workspace and its
            # zero fill) lands there, as in a model's graph where many layers share it, not in the timed one
            with torch.cuda.graph(torch.cuda.CUDAGraph()):
                fn()
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            torch.cuda.synchronize()
            return median_ms(g.replay, FLUSH, warmup=10, rep=rep) * 1e3
        except Exception as exc:  # noqa: BLE001 - fall back to eager timing, and say so
            GRAPH_FAILURES.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            torch.cuda.synchronize()
    return float(do_bench(fn, warmup=10, rep=rep, return_mode="median")) * 1e3  # microseconds


def copy_bandwidth() -> float:
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    t = bench(lambda: b.copy_(a), rep=100, graph=False)
    return 2 * a.numel() / (t * 1e-6) / 1e9  # GB/s, read + write


def correctness(log) -> list[dict]:
    cuda, ref = dsq.get_backend("cuda"), dsq.get_backend("cpu-reference")
    rows = []
    g = torch.Generator().manual_seed(0)
    for name in dsq.list_schemes():
        scheme = dsq.get_scheme(name)
        for (n, k), dtype in [((384, 1000), torch.bfloat16), ((2 * 256, 640), torch.float32)]:
            w = (torch.randn(n, k, generator=g) * torch.exp(torch.randn(n, 1, generator=g))).to(dtype)
            w[3] = 0
            stats = dsq.ActStats(-2.5, 3.1, 100) if scheme.static_activations else None
            qc, qr = cuda.calibrate(w.cuda(), scheme, stats), ref.calibrate(w, scheme, stats)
            pc, pr = cuda.pack(w.cuda(), qc, scheme), ref.pack(w, qr, scheme)
            bad = [key for key in pr.tensors if not _bits_equal(pc[key], pr[key])]
            bad += [f"qp.{key}" for key, v in qr.tensors().items() if not _bits_equal(getattr(qc, key), v)]
            cc, dc = cuda.unpack(pc, scheme)
            cr, dr = ref.unpack(pr, scheme)
            bad += [] if _bits_equal(cc, cr) and _bits_equal(dc, dr) else ["unpack"]
            w64 = _exact_weight(ref, pr, scheme)
            for m in (1, 16, 200):
                x = torch.randn(m, k, generator=g).to(dtype if dtype != torch.float32 else torch.bfloat16)
                if not scheme.weight_only:
                    qa, qar = cuda.quantize_activation(x.cuda(), scheme, pr), ref.quantize_activation(x, scheme, pr)
                    if not (_bits_equal(qa.values, qar.values) and _bits_equal(qa.scale.reshape(qar.scale.shape),
                                                                              qar.scale)):
                        bad.append(f"act M={m}")
                bias = torch.randn(n, generator=g).to(x.dtype)
                y = cuda.matmul(x.cuda(), pr, scheme, bias.cuda()).cpu().double().numpy()
                x64 = ref._x_exact(x, scheme, pr)
                b64 = bias.double().numpy()
                y64 = x64 @ w64.T + b64
                mag = np.abs(x64) @ np.abs(w64).T + np.abs(b64)
                quad = np.sqrt((x64 ** 2) @ (w64 ** 2).T)
                tol = tolerance(scheme, x.dtype, k)
                close = check_close(y, y64, *matmul_bounds(y64, mag, quad, tol))
                if not close.ok:
                    bad.append(f"matmul M={m}: {close.message}")
                rows.append({"scheme": name, "n": n, "k": k, "m": m, "rel": close.rel_err,
                             "bound_ratio": close.bound_ratio, "ok": close.ok})
            log(f"correctness {name:13s} [{n}x{k}] {dtype}: {'PASS' if not bad else 'FAIL ' + '; '.join(bad)}")
            rows.append({"scheme": name, "n": n, "k": k, "bitexact": not bad, "bad": bad})
    return rows


def _exact_weight(ref, packed, scheme) -> np.ndarray:
    """float64 dequantized weight of the reference (exact products; private reference helpers)."""
    from dsq_cpu_reference.backend import _qparams_np
    from dsq_cpu_reference.weights import dequantize_weight
    return dequantize_weight(ref._codes(packed, scheme), _qparams_np(packed, scheme, packed.shape), scheme)


def _bits_equal(a, b) -> bool:
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.float8_e4m3fn:
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    return bool(torch.equal(a, b)) if not a.is_floating_point() else bool(
        torch.equal(a.view(torch.int16 if a.element_size() == 2 else torch.int32),
                    b.view(torch.int16 if b.element_size() == 2 else torch.int32)))


def quantize_all(w: torch.Tensor, backend) -> dict:
    out = {}
    for name in dict.fromkeys(SCHEMES + ["W8A8_DYNAMIC"]):  # the int_mm peer uses W8A8_DYNAMIC's codes
        s = dsq.get_scheme(name)
        stats = dsq.ActStats(-4.0, 4.0, 1) if s.static_activations else None
        torch.cuda.synchronize()
        t = time.perf_counter()
        out[name] = backend.quantize_weight(w, s, stats)
        torch.cuda.synchronize()
        out[name].device_layout["_quant_s"] = time.perf_counter() - t
    return out


def parse_variant(spec: str) -> tuple[str, list[str], dict[str, object]]:
    """``LABEL:SCHEME+SCHEME:module.NAME=VALUE,...`` -> (label, schemes, {"module.NAME": value}). A variant
    times the listed schemes again with dsq_cuda module settings changed (module: ``mm``, ``configs``, ``pdl`` or
    ``_env``;
    VALUE a Python literal), as the column ``SCHEME@LABEL``: an untried dispatch choice beside the default
    in one run, e.g. ``act64:W4A8_DYNAMIC+W4AFP8:mm.MMA_ACT_MAX_M=64``."""
    try:
        label, schemes, sets = spec.split(":", 2)
        values = {}
        for item in re.split(r",(?=\s*\w+\.\w+\s*=)", sets):  # commas before the next module.NAME=
            name, value = item.split("=", 1)
            values[name.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError) as exc:
        raise SystemExit(f"--variant {spec!r}: expected LABEL:SCHEME+SCHEME:module.NAME=VALUE,... ({exc})") from exc
    return label, schemes.split("+"), values


@contextlib.contextmanager
def settings(values: dict[str, object]):
    """dsq_cuda module attributes set to ``values`` inside the block, restored after; config caches cleared."""
    import dsq_cuda._env as env
    import dsq_cuda.configs as configs
    import dsq_cuda.mm as mm
    import dsq_cuda.pdl as pdl
    mods = {"mm": mm, "configs": configs, "pdl": pdl, "_env": env}
    old = {}
    try:
        for key, value in values.items():
            mod, name = key.split(".", 1)
            if mod not in mods or not hasattr(mods[mod], name):
                raise SystemExit(f"--variant sets {key}: not an attribute of dsq_cuda.{mod} (modules: {', '.join(mods)})")
            old[key] = getattr(mods[mod], name)
            setattr(mods[mod], name, value)
        configs.pick.cache_clear()
        yield
    finally:
        for key, value in old.items():
            mod, name = key.split(".", 1)
            setattr(mods[mod], name, value)
        configs.pick.cache_clear()


def timings(log, ms, shapes, variants=()) -> list[dict]:
    cuda = dsq.get_backend("cuda")
    rows = []
    for k, n in shapes:
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        packs = quantize_all(w, cuda)
        wbytes = {"bf16": 2 * n * k}
        w8 = packs["W8A8_DYNAMIC"]
        w_fp8_row = (w.float() / (w.float().abs().amax(1, keepdim=True) / 448)).to(torch.float8_e4m3fn)
        qrate = {s: 2 * n * k / p.device_layout["_quant_s"] / 1e9 for s, p in packs.items()}
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            r = {"k": k, "n": n, "m": m}
            r["bf16"] = bench(peers.bf16_fn(x, w))
            tg = peers.tinygemm_fn(x, n, k)
            r["tinygemm"] = bench(tg) if tg else None
            r["int_mm"] = bench(peers.int_mm_fn(x, w8["weight"], w8["weight_scale"].reshape(1, -1)))
            r["scaled_mm"] = bench(peers.scaled_mm_fn(x, w_fp8_row, torch.ones(n, device="cuda")))
            for name in SCHEMES:
                s = dsq.get_scheme(name)
                y = dsq_mm(x, packs[name], s)  # compile + layout outside the timing
                assert torch.isfinite(y).all()
                r[name] = bench(lambda s=s, p=packs[name], x=x: dsq_mm(x, p, s))
                wbytes[name] = packs[name].nbytes
            for label, names, values in variants:
                with settings(values):
                    for name in names:
                        s = dsq.get_scheme(name)
                        try:  # a variant's config may not compile (e.g. more shared memory than the SM has)
                            y = dsq_mm(x, packs[name], s)
                        except Exception as exc:  # noqa: BLE001
                            log(f"  {name}@{label}: {type(exc).__name__}: {str(exc)[:200]}")
                            continue
                        assert torch.isfinite(y).all()
                        r[f"{name}@{label}"] = bench(lambda s=s, p=packs[name], x=x: dsq_mm(x, p, s))
                        log(f"  {name}@{label}: {r['bf16'] / r[f'{name}@{label}']:.2f}x/{r[f'{name}@{label}']:.1f}"
                            f" (default {r['bf16'] / r[name]:.2f}x/{r[name]:.1f})")
            r["weight_bytes"] = wbytes
            r["quant_GBps"] = qrate
            rows.append(r)
            log(f"K={k:5d} N={n:5d} M={m:4d} bf16 {r['bf16']:8.1f}us " +
                " ".join(f"{nm} {r[nm] and r['bf16'] / r[nm]:.2f}x/{r[nm] or 0:.1f}" for nm in ["tinygemm", "int_mm", "scaled_mm"]
                         + SCHEMES))
        del packs, w
        torch.cuda.empty_cache()
    return rows


SWEEP_SCHEMES = ["W4A16", "W8A16", "W4A8_DYNAMIC", "W4AFP8"]


def sweep(log, shapes=((7168, 18432), (18432, 7168), (7168, 2048)), ms=(1, 4, 16, 64)) -> list[dict]:
    """Decode configs of the packed (slab-layout) schemes: GEMV kernel (weight-only, M <= 4) and tiled kernel.

    For every (scheme, shape, M) the winner goes into dsq_cuda.configs.TUNED for the rest of this run (and
    is printed for committing); for weight-only M <= 4 the faster of GEMV and tiled is logged, which sets
    dsq_cuda.mm.GEMV_MAX_M.
    """
    import dsq_cuda.configs as configs
    from dsq_cuda.mm import kind_of
    cuda = dsq.get_backend("cuda")
    rows = []
    for k, n in shapes:
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        for name in SWEEP_SCHEMES:
            s = dsq.get_scheme(name)
            p = cuda.quantize_weight(w, s)
            for m in ms:
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                cands = [("tiled", Config(16 if m <= 16 else 64, bn, 128, sp, 4, st))
                         for bn in (64, 128) for sp in (1, 4, 8) for st in (3,)]
                if s.weight_only and m == 1:  # -16: the row-tile width SW (dsq_cuda.slab.ROW_TILE_WORDS)
                    cands += [("gemv", Config(1, bn, -16, sp, wp, 3)) for bn in (32, 64, 128)
                              for sp in (8, 16, 32) for wp in (2, 4)]
                best: dict = {}
                for path, cfg in cands:
                    try:
                        t = bench(lambda cfg=cfg, x=x, p=p, s=s: dsq_mm(x, p, s, config=cfg), rep=20)
                    except Exception as exc:  # noqa: BLE001 - a config may not compile
                        log(f"  {name} {cfg}: {type(exc).__name__}: {str(exc)[:200]}")
                        continue
                    rows.append({"scheme": name, "k": k, "n": n, "m": m, "path": path, "cfg": cfg.__dict__, "us": t})
                    if path not in best or t < best[path][0]:
                        best[path] = (t, cfg)
                for path, (t, cfg) in best.items():
                    kind = f"gemv{s.weight_bits}" if path == "gemv" else kind_of(s)
                    mb = triton.next_power_of_2(m) if path == "gemv" else configs.m_bucket(m)
                    if path == "gemv" or m >= 16 or "gemv" not in best:
                        configs.TUNED[(kind, mb, n, k)] = cfg
                    log(f"sweep {name} K={k} N={n} M={m} {path}: best {t:.1f}us {cfg}  TUNED[{(kind, mb, n, k)}]")
    configs.pick.cache_clear()
    return rows


def table(rows, bw) -> str:
    cols = ["tinygemm", "int_mm", "scaled_mm"] + SCHEMES
    cols += [c for c in dict.fromkeys(key for r in rows for key in r) if "@" in c]  # --variant columns
    out = ["| K | N | M | bf16 us | " + " | ".join(cols) + " | W4A16 % copy BW |",
           "|" + "---|" * (len(cols) + 5)]
    for r in rows:
        frac = fraction_of_copy(r["weight_bytes"]["W4A16"], r["W4A16"], bw) if r.get("W4A16") else 0
        cells = [f"{r['bf16'] / r[c]:.2f}x ({r[c]:.1f})" if r.get(c) else "-" for c in cols]
        out.append(f"| {r['k']} | {r['n']} | {r['m']} | {r['bf16']:.1f} | " + " | ".join(cells) + f" | {frac:.0%} |")
    return "\n".join(out)


def _ensure_backends() -> None:
    """Without `pip install -e .` (a bare GPU machine) the entry points are missing: register in-process."""
    try:
        dsq.get_backend("cuda"), dsq.get_backend("cpu-reference")
    except dsq.DsqError:
        import dsq_cpu_reference
        import dsq_cuda
        from dsq.plugins import register_plugin
        from dsq.registry import refresh
        register_plugin(dsq_cuda, "cuda")
        register_plugin(dsq_cpu_reference, "cpu-reference")
        refresh()


def main() -> int:
    _ensure_backends()
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true", help="two shapes, three M values")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--skip-correctness", action="store_true")
    ap.add_argument("--ms", default="", help="comma-separated M values for the timing table")
    ap.add_argument("--schemes", default="", help="comma-separated schemes for the timing table")
    ap.add_argument("--shapes", default="", help="comma-separated KxN shapes for the timing table (default: all 8)")
    ap.add_argument("--variant", action="append", default=[], help="LABEL:SCHEME+SCHEME:module.NAME=VALUE,... "
                    "(repeatable): time those schemes again with dsq_cuda settings changed, as SCHEME@LABEL")
    ap.add_argument("--flush", choices=FLUSHES, default="dirty", help="how the L2 cache is flushed before each timed "
                    "call (benchmarks/timing.py): dirty = do_bench's, as in every table before v14")
    args = ap.parse_args()
    global FLUSH
    FLUSH = args.flush
    os.makedirs(args.out, exist_ok=True)
    logf = open(os.path.join(args.out, "log.txt"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    env = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "sms": torch.cuda.get_device_properties(0).multi_processor_count, "flush": args.flush,
           "cublas_block_fp8": block_fp8.why_unavailable("cuda") or "available"}
    log(json.dumps(env))
    res = {"env": env}
    t0 = time.time()
    if not args.skip_correctness:
        res["correctness"] = correctness(log)
        log(f"correctness done in {time.time() - t0:.0f}s")
    def save():
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)

    save()
    res["copy_GBps"] = bw = copy_bandwidth()
    log(f"device-to-device copy: {bw:.0f} GB/s (read + write)")
    if args.sweep:
        res["sweep"] = sweep(log)
        log(f"sweep done at {time.time() - t0:.0f}s")
        save()
    shapes = SHAPES[:2] + SHAPES[2:4] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    if args.schemes:
        SCHEMES[:] = args.schemes.split(",")
    ms = [int(v) for v in args.ms.split(",")] if args.ms else [1, 16, 4096] if args.quick else MS
    res["timings"] = timings(log, ms, shapes, [parse_variant(v) for v in args.variant])
    res["graph_failures"] = GRAPH_FAILURES
    log(f"graph capture fell back to eager {len(GRAPH_FAILURES)} times: {GRAPH_FAILURES[:3]}")
    save()
    md = table(res["timings"], bw)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md + "\n")
    log(md)
    log(f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
