"""Benchmark ``dsq quantize-checkpoint``: source GB/s and peak RSS on a synthetic DeepSeek-V3-shaped FP8
checkpoint, per recipe, plus the projection to the full 671B model.

Each recipe runs in a fresh process (``python -m dsq quantize-checkpoint ... --json``, or under ``torchrun``
with ``--nproc N``) so peak RSS (``ru_maxrss``, which includes mapped source pages) belongs to that run alone.
Throughput is source bytes / conversion seconds (planning and the final index/config writing excluded; they
take well under a second). The generated data and outputs are deleted afterwards unless ``--keep``.

    python benchmarks/streaming/bench_streaming.py --workdir /work/bench-stream --experts 32
    python benchmarks/streaming/bench_streaming.py --backend cuda --workdir /tmp/b   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {
    # deepseek-w4a8's data-free part: MLA is W8A8 *static* (needs calibration) and stays bf16 here
    "deepseek-w4a8 (data-free part)": ("deepseek-w4a8", ["--skip-calibrated"]),
    "w4a16": ("w4a16", []),
    "deepseek-w4afp8": ("deepseek-w4afp8", []),
}


def _run(args, src: Path, dst: Path, recipe: str, extra: list[str]) -> dict:
    base = [sys.executable, "-m", "dsq.streaming", "quantize-checkpoint", str(src), str(dst), "--recipe", recipe,
            "--backend", args.backend, "--format", args.format, "--json", "--no-progress", *extra]
    if args.workers:
        base += ["--workers", str(args.workers)]
    if args.nproc > 1:
        base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
                *base[1:]]
    t0 = time.perf_counter()
    r = subprocess.run(base, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{r.stderr[-4000:]}")
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    summary["process_wall_seconds"] = wall
    return summary


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/dsq-bench-stream")
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--shard-gb", type=float, default=1.0)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--format", default="compressed-tensors")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES))
    ap.add_argument("--out", default="benchmarks/streaming/results.json")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()

    import torch

    from dsq.streaming.synthetic import PRESETS, tensor_specs, write_synthetic

    work = Path(args.workdir)
    src = work / "src"
    t0 = time.perf_counter()
    if not (src / "config.json").is_file():
        facts = write_synthetic(src, "bench", exact=False, experts=args.experts, layers=args.layers,
                                shard_bytes=int(args.shard_gb * 1e9))
        print(f"generated {facts['bytes'] / 1e9:.2f} GB in {facts['shards']} shards in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    full = PRESETS["deepseek-v3"]
    full_bytes = 0
    for _, dt, shape in tensor_specs(full):
        n = 1
        for d in shape:
            n *= d
        full_bytes += n * torch.empty(0, dtype=dt).element_size()
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
               "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "torch": torch.__version__, "python": platform.python_version(), "backend": args.backend,
               "nproc": args.nproc, "workers": args.workers or "default", "format": args.format,
               "deepseek_v3_fp8_bytes": full_bytes, "runs": []}
    if args.backend == "cuda" and torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
    for label in args.recipes:
        recipe, extra = RECIPES[label]
        dst = work / f"out-{recipe}"
        shutil.rmtree(dst, ignore_errors=True)
        load_before = _load()
        s = _run(args, src, dst, recipe, extra)
        rate = s["bytes_done"] / s["seconds"] / 1e9
        bound = 2 * s["largest_shard"] + 1e9
        row = {"recipe": label, "source_gb": s["source_bytes"] / 1e9, "seconds": s["seconds"],
               "gb_per_s": rate, "peak_rss_gb": s["peak_rss"] / 1e9, "bound_gb": bound / 1e9,
               "checkpoint_over_bound": s["source_bytes"] / bound,
               "output_gb": sum(c["bytes_out"] for c in s["stats"].values()) / 1e9,
               "load_avg_before": load_before, "load_avg_after": _load(),
               "projected_671b_hours_per_process": full_bytes / (rate * 1e9) / 3600 * args.nproc,
               "projected_671b_minutes_this_setup": full_bytes / (rate * 1e9) / 60,
               "stats": s["stats"], "peak_rss_per_rank_gb": [x / 1e9 for x in s["peak_rss_per_rank"]]}
        results["runs"].append(row)
        print(f"{label}: {row['source_gb']:.2f} GB in {row['seconds']:.1f} s = {rate:.3f} GB/s; peak RSS "
              f"{row['peak_rss_gb']:.2f} GB (bound {row['bound_gb']:.2f} GB; checkpoint {row['checkpoint_over_bound']:.1f}x "
              f"the bound); 671B projection {row['projected_671b_minutes_this_setup']:.0f} min", flush=True)
        if not args.no_verify:
            verify = subprocess.run([sys.executable, "-m", "dsq.streaming", "verify", str(dst)], capture_output=True,
                                    text=True)
            row["verify"] = verify.stdout.strip() or verify.stderr.strip()[-500:]
            print("  verify:", row["verify"], flush=True)
        shutil.rmtree(dst, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.is_file() else []
    old = old if isinstance(old, list) else [old]
    out.write_text(json.dumps(old + [results], indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
