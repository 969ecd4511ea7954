"""One DeepSeek-V3 MoE layer on the cuda backend: check, then time every scheme against bf16 (one run).

Usage (GPU):  PYTHONPATH=.:backends:conformance python benchmarks/cuda_moe/bench_moe.py --out moe.json
Smoke test on CPU (Triton interpreter, tiny shapes, times meaningless):
              TRITON_INTERPRET=1 python benchmarks/cuda_moe/bench_moe.py --small

What it does:
1. Ceilings: device-to-device copy bandwidth (bytes read + written / time).
2. Checks at the real hidden/intermediate sizes (16 experts, 37 tokens, top-8): every scheme's fused layer
   against the same layer computed in float32 from the dequantized weights (dsq_cuda.unpack). The gap is
   the activation quantization's own error (none for weight-only schemes) plus bf16 roundings.
3. Timing: hidden 7168, intermediate 2048, 256 experts, top-8; T in 1, 8, 64, 512, 4096; uniform routing
   (top-8 of uniform random scores) and skewed routing (scores favour 16 hot experts). Methods: the fused
   kernels on bf16 weights, a plain PyTorch per-expert loop (bf16, eager, as transformers runs it), and the
   fused kernels per scheme (run_moe: the layer without the input validation of Backend.moe, whose
   range checks read values back to the host and so cannot be captured). Fused layers are captured in a CUDA graph and replayed (median of
   triton.testing.do_bench, L2 flushed between replays by its 256 MB write; ``--flush clean`` flushes by a read instead,
   benchmarks/timing.py); the loop syncs with the host, so it runs eagerly.
   Effective bandwidth = bytes of the touched experts (codes and scales) / time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import platform
import time

import synth  # benchmarks/cuda_moe/synth.py (the script's folder is on sys.path)
import torch
import triton

from benchmarks.timing import FLUSHES, graph_median_ms, save_json
from dsq.schemes import get_scheme
from dsq_cuda.moe import moe, moe_float, run_moe

SCHEMES = ["W4A16", "W4A8_DYNAMIC", "W4AFP8", "W8A8", "W8A16", "W8A8_DYNAMIC", "FP8_BLOCK"]
#: how the L2 cache is flushed before each timed call (benchmarks/timing.py; --flush)
FLUSH = "dirty"
CHECK_TOL = {"W4A16": 1e-2, "W8A16": 1e-2, "W8A8": 8e-2, "W8A8_DYNAMIC": 5e-2, "W4A8_DYNAMIC": 5e-2,
             "W4AFP8": 8e-2, "FP8_BLOCK": 8e-2}


def bench(fn, device, graph: bool) -> float:
    """Median milliseconds of fn()."""
    if device.type != "cuda":
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    fn()
    torch.cuda.synchronize()
    if not graph:
        return triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")
    return graph_median_ms(fn, FLUSH)


def routing(t: int, e: int, k: int, kind: str, device, seed: int):
    gen = torch.Generator(device=device).manual_seed(seed)
    scores = torch.rand(t, e, device=device, generator=gen)
    if kind == "skewed":
        scores[:, :16] += 1.0  # every token's top-8 lies among 16 hot experts
    w, ids = scores.topk(k, dim=-1)
    return ids, (w / w.sum(-1, keepdim=True)).float()


def torch_loop(x, ids, tw, wg, wd):
    """transformers-style per-expert loop in bf16 (host-synchronising)."""
    i = wd.shape[2]
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in torch.unique(ids).tolist():
        tok, slot = torch.nonzero(ids == e, as_tuple=True)
        h = x[tok] @ wg[e].t()
        a = torch.nn.functional.silu(h[:, :i]) * h[:, i:]
        y.index_add_(0, tok, (a @ wd[e].t()).float() * tw[tok, slot, None])
    return y.to(x.dtype)


def copy_bandwidth(device) -> float:
    if device.type != "cuda":
        return float("nan")
    a = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(functools.partial(b.copy_, a), warmup=10, rep=50, return_mode="median")
    del a, b
    return 2 * 2 * 1024**3 / (ms * 1e-3) / 1e9


def check(h, i, device) -> list[dict]:
    from dsq_cuda.unpack import unpack

    rows = []
    e, t, k = 16, 37, 8
    x = (torch.randn(t, h, device=device) * 0.5).to(torch.bfloat16)
    ids, tw = routing(t, e, k, "uniform", device, seed=11)
    for name in SCHEMES:
        scheme = get_scheme(name)
        ew = synth.experts(scheme, e, h, i, device, seed=3)
        gu, dn = unpack(ew.gate_up, scheme)[1], unpack(ew.down, scheme)[1]
        if scheme.static_activations:
            synth.calibrate_static(ew, x, gu)
        y = moe(None, x, ids, tw, ew, scheme)
        ref = moe_float(x.float(), ids, tw, gu.float().contiguous(), dn.float().contiguous())
        err = float((y.float() - ref).norm() / ref.norm())
        ok = err < CHECK_TOL[name] and bool(torch.isfinite(y).all())
        rows.append(dict(scheme=name, rel_err=err, tol=CHECK_TOL[name], ok=ok))
        print(f"check {name:13s} rel err vs dequantized float32 {err:.2e} (tol {CHECK_TOL[name]:.0e}) "
              f"{'ok' if ok else 'FAIL'}", flush=True)
        del ew, gu, dn
    # The fused bf16 design against the plain loop.
    wg = torch.randn(e, 2 * i, h, device=device, dtype=torch.bfloat16) * 0.02
    wd = torch.randn(e, h, i, device=device, dtype=torch.bfloat16) * 0.02
    err = float((moe_float(x, ids, tw, wg, wd).float() - torch_loop(x, ids, tw, wg, wd).float()).norm()
                / torch_loop(x, ids, tw, wg, wd).float().norm())
    rows.append(dict(scheme="bf16", rel_err=err, tol=1e-2, ok=err < 1e-2))
    print(f"check bf16 fused vs torch loop rel err {err:.2e}", flush=True)
    return rows


@contextlib.contextmanager
def switches(values: dict):
    """Set module-level switches for one timing, then restore them: ``NAME`` of dsq_cuda.moe, or ``mod.NAME``
    of dsq_cuda.mod (e.g. ``moe_gemv.QUANTIZED_ACTS``)."""
    import importlib

    def target(key: str):
        mod, _, name = key.rpartition(".")
        return importlib.import_module("dsq_cuda." + (mod or "moe")), name

    saved = {k: getattr(*target(k)) for k in values}
    try:
        for k, v in values.items():
            setattr(*target(k), v)
        yield
    finally:
        for k, v in saved.items():
            setattr(*target(k), v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--small", action="store_true", help="tiny shapes (interpreter smoke test)")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--tokens", default="1,8,64,512,4096")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--variants", default="", help="JSON list of decode_cfg dicts timed at T <= 64 (sweep); a "
                    "key 'path' sets run_moe's path ('decode' at T = 1 skips the GEMV)")
    ap.add_argument("--no-loop", action="store_true", help="skip the torch per-expert loop")
    ap.add_argument("--mant", action="store_true",
                    help="time the mantissa decode variant of the T = 1 GEMV path (dsq_cuda.gemv_kernel.MANT_DECODE)")
    ap.add_argument("--on-load", action="store_true", help="above T = 64 also time each scheme with its activations "
                    "quantized on load in the GEMM (dsq_cuda.moe.PREFILL_QUANTIZE_ONCE = False)")
    ap.add_argument("--switch-variants", default="",
                    help="JSON list of switch dicts (as --prefill-variants, keys may name a module: "
                    "'moe_gemv.QUANTIZED_ACTS') timed at every T; one with a 'pdl.' key (launch switches, "
                    "dsq_cuda.pdl) times the bf16 fused layer too, and its ratios are against that")
    ap.add_argument("--prefill-variants", default="",
                    help="JSON list of dicts of dsq_cuda.moe switches (e.g. [{\"PREFILL_INT4_SPLIT\": false}, "
                    "{\"PREFILL_BLOCKS\": {\"block_m\": 128}}]), each timed above T = 64 as SCHEME@{...}; "
                    "variants that set PREFILL_BLOCKS also time the bf16 fused layer")
    ap.add_argument("--flush", choices=FLUSHES, default="dirty", help="how the L2 cache is flushed before each timed "
                    "call (benchmarks/timing.py): dirty = do_bench's, as in every table before v17")
    args = ap.parse_args()
    global FLUSH
    FLUSH = args.flush
    prefill_variants = json.loads(args.prefill_variants) if args.prefill_variants else []
    switch_variants = json.loads(args.switch_variants) if args.switch_variants else []
    if args.on_load:
        prefill_variants.append({"PREFILL_QUANTIZE_ONCE": False})
    if args.mant:
        import dsq_cuda.gemv_kernel
        dsq_cuda.gemv_kernel.MANT_DECODE = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    h, i, e, k = (256, 128, 16, 8) if args.small else (7168, 2048, 256, 8)
    tokens = [1, 8, 70] if args.small else [int(v) for v in args.tokens.split(",")]
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                device=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
                torch=torch.__version__, triton=triton.__version__, flush=args.flush, hidden=h, inter=i, experts=e, top_k=k)
    print(json.dumps(info), flush=True)
    info["copy_gbps"] = copy_bandwidth(device)
    print(f"copy bandwidth {info['copy_gbps']:.0f} GB/s (read + write)", flush=True)
    info["checks"] = check(h, i, device)
    if args.check_only:
        return

    results = []
    variants = json.loads(args.variants) if args.variants else []
    x_all = (torch.randn(max(tokens), h, device=device) * 0.5).to(torch.bfloat16)
    routes = {(t, kind): routing(t, e, k, kind, device, seed=t) for t in tokens for kind in ("uniform", "skewed")}
    wg = torch.randn(e, 2 * i, h, device=device, dtype=torch.bfloat16) * 0.02
    wd = torch.randn(e, h, i, device=device, dtype=torch.bfloat16) * 0.02
    bf16_bytes = (wg[0].numel() + wd[0].numel()) * 2

    def record(method, t, kind, ms, per_expert_bytes):
        ids = routes[(t, kind)][0]
        touched = int(torch.unique(ids).numel())
        gbps = touched * per_expert_bytes / (ms * 1e-3) / 1e9
        results.append(dict(method=method, tokens=t, routing=kind, touched=touched, ms=ms, weight_gbps=gbps,
                            frac_copy=gbps / info["copy_gbps"] if info["copy_gbps"] == info["copy_gbps"] else None))
        print(f"{method:13s} T={t:5d} {kind:7s} experts={touched:3d} {ms * 1e3:10.1f} us "
              f"{gbps:8.0f} GB/s", flush=True)

    for (t, kind), (ids, tw) in routes.items():
        x = x_all[:t]
        record("bf16-fused", t, kind, bench(functools.partial(moe_float, x, ids, tw, wg, wd), device, True), bf16_bytes)
        both = [v for v in switch_variants if any(key.startswith("pdl.") for key in v)]  # launch switches
        for v in both + ([v for v in prefill_variants if "PREFILL_BLOCKS" in v] if t > 64 else []):
            with switches(v):
                fn = functools.partial(moe_float, x, ids, tw, wg, wd)
                record("bf16-fused@" + json.dumps(v, separators=(",", ":")), t, kind, bench(fn, device, True),
                       bf16_bytes)
        if t <= 64:
            fn = functools.partial(run_moe, x, ids, tw, wg, wd, None, e, path="tiled")
            record("bf16-tiled", t, kind, bench(fn, device, True), bf16_bytes)
        if not args.no_loop:
            record("torch-loop", t, kind, bench(functools.partial(torch_loop, x, ids, tw, wg, wd), device, False),
                   bf16_bytes)
    del wg, wd
    torch.cuda.empty_cache() if device.type == "cuda" else None
    for name in args.schemes.split(","):
        scheme = get_scheme(name)
        ew = synth.experts(scheme, e, h, i, device, seed=1)
        nbytes = synth.expert_bytes(ew)
        for (t, kind), (ids, tw) in routes.items():
            x = x_all[:t]
            record(name, t, kind, bench(functools.partial(run_moe, x, ids, tw, ew.gate_up, ew.down, scheme, e), device, True), nbytes)
            for v in (prefill_variants if t > 64 else []) + switch_variants:
                with switches(v):
                    fn = functools.partial(run_moe, x, ids, tw, ew.gate_up, ew.down, scheme, e)
                    record(name + "@" + json.dumps(v, separators=(",", ":")), t, kind, bench(fn, device, True),
                           nbytes)
            for v in variants if t <= 64 else []:  # a variant's "path" key picks run_moe's path (default auto)
                cfg = {k: val for k, val in v.items() if k != "path"}
                fn = functools.partial(run_moe, x, ids, tw, ew.gate_up, ew.down, scheme, e, decode_cfg=cfg,
                                       path=v.get("path", "auto"))
                record(name + json.dumps(v, separators=(",", ":")), t, kind, bench(fn, device, True), nbytes)
        del ew
        torch.cuda.empty_cache() if device.type == "cuda" else None

    # a variant that also timed the bf16 fused layer (launch switches, prefill blocks) is compared with it
    base = {(r["tokens"], r["routing"], r["method"].partition("@")[2]): r["ms"] for r in results
            if r["method"].partition("@")[0] == "bf16-fused"}
    print("\nmethod         T      routing  us        x bf16-fused  weight GB/s  % copy")
    for r in results:
        suffix = r["method"].partition("@")[2]
        ref = base.get((r["tokens"], r["routing"], suffix), base[(r["tokens"], r["routing"], "")])
        r["speedup_vs_bf16"] = ref / r["ms"]
        frac = f"{100 * r['frac_copy']:.0f}" if r["frac_copy"] is not None else "-"
        print(f"{r['method']:13s} {r['tokens']:5d} {r['routing']:8s} {r['ms'] * 1e3:9.1f} "
              f"{r['speedup_vs_bf16']:8.2f}x {r['weight_gbps']:10.0f} {frac:>6s}")
    if args.out:
        save_json(args.out, dict(info, results=results))


if __name__ == "__main__":
    main()
