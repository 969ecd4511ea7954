"""Benchmark ``dsq quantize-checkpoint``: source GB/s and peak RSS on a synthetic DeepSeek-V3-shaped FP8
checkpoint, per recipe, plus the projection to the full 671B model.

Each recipe runs in a fresh process (``python -m dsq quantize-checkpoint ... --json``), or in N fresh ranks
under ``torchrun --nproc-per-node N`` for each N of ``--nproc`` (``--nproc 1 2 4`` measures all three in one
command; on a machine with fewer GPUs than ranks, ranks share GPUs: ``cuda:(LOCAL_RANK % device_count)``), so
peak RSS (``ru_maxrss``, which includes mapped source pages) belongs to that run alone; it is reported per rank
(the bound of issue 8 is per process). Throughput is source bytes / conversion seconds (the slowest rank's;
planning and the final index/config writing excluded), and per GPU when the backend is cuda. CPU seconds
(user + system of the run's processes) are recorded too: on a shared machine they move less than wall time.
The generated data and outputs are deleted afterwards unless ``--keep``.

    python benchmarks/streaming/bench_streaming.py --workdir /work/bench-stream --experts 32
    python benchmarks/streaming/bench_streaming.py --backend cuda --nproc 1 2 4 --workdir /tmp/b   # one GPU
    python benchmarks/streaming/bench_streaming.py --preset tiny --nproc 1 2 --recipes w4a16   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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


def _run(args, nproc: int, src: Path, dst: Path, recipe: str, extra: list[str]) -> dict:
    base = [sys.executable, "-m", "dsq.streaming", "quantize-checkpoint", str(src), str(dst), "--recipe", recipe,
            "--backend", args.backend, "--format", args.format, "--json", "--no-progress", *extra]
    if args.workers:
        base += ["--workers", str(args.workers)]
    env = dict(os.environ)
    if nproc > 1:
        base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                *base[1:]]
        env.setdefault("OMP_NUM_THREADS", "1")  # the workers parallelise; torchrun would say so anyway
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(base, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{recipe} (nproc {nproc}) failed:\n{r.stderr[-4000:]}")
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    summary["process_wall_seconds"] = wall
    summary["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary


def _load() -> float:
    return os.getloadavg()[0]


def _measure(args, nproc: int, gpus: int, src: Path, dst: Path, label: str, recipe: str, extra: list[str],
             full_bytes: int) -> dict:
    """One conversion (fresh processes), its numbers, and optionally ``dsq verify`` of the output."""
    shutil.rmtree(dst, ignore_errors=True)
    load_before = _load()
    s = _run(args, nproc, src, dst, recipe, extra)
    rate = s["bytes_done"] / s["seconds"] / 1e9
    bound = 2 * s["largest_shard"] + 1e9
    per_gpu = rate / min(nproc, gpus) if gpus else None
    row = {"recipe": label, "nproc": nproc, "source_gb": s["source_bytes"] / 1e9, "seconds": s["seconds"],
           "gb_per_s": rate, "gb_per_s_per_gpu": per_gpu, "cpu_seconds": s["cpu_seconds"],
           "gb_per_cpu_second": s["bytes_done"] / 1e9 / max(s["cpu_seconds"], 1e-9),
           "peak_rss_gb": s["peak_rss"] / 1e9, "bound_gb": bound / 1e9,
           "checkpoint_over_bound": s["source_bytes"] / bound,
           "output_gb": sum(c["bytes_out"] for c in s["stats"].values()) / 1e9,
           "load_avg_before": load_before, "load_avg_after": _load(),
           "projected_671b_hours_per_process": full_bytes / (rate * 1e9) / 3600 * nproc,
           "projected_671b_minutes_this_setup": full_bytes / (rate * 1e9) / 60,
           "process_wall_seconds": s["process_wall_seconds"], "world": s["world"],
           "stats": s["stats"], "peak_rss_per_rank_gb": [x / 1e9 for x in s["peak_rss_per_rank"]]}
    gpu_txt = f" ({per_gpu:.3f} GB/s per GPU)" if per_gpu is not None else ""
    print(f"{label}, {nproc} rank(s): {row['source_gb']:.2f} GB in {row['seconds']:.1f} s = {rate:.3f} GB/s"
          f"{gpu_txt}; {row['cpu_seconds']:.0f} CPU s; peak RSS {row['peak_rss_gb']:.2f} GB per rank (bound "
          f"{row['bound_gb']:.2f} GB; checkpoint {row['checkpoint_over_bound']:.1f}x the bound); 671B projection "
          f"{row['projected_671b_minutes_this_setup']:.0f} min", flush=True)
    if not args.no_verify:
        verify = subprocess.run([sys.executable, "-m", "dsq.streaming", "verify", str(dst)], capture_output=True,
                                text=True)
        row["verify"] = verify.stdout.strip() or verify.stderr.strip()[-500:]
        print("  verify:", row["verify"], flush=True)
    shutil.rmtree(dst, ignore_errors=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/dsq-bench-stream")
    ap.add_argument("--experts", type=int, help="routed experts per MoE layer (default: the preset's)")
    ap.add_argument("--layers", type=int, help="decoder layers (default: the preset's)")
    ap.add_argument("--shard-gb", type=float, help="source shard size in GB (default: the preset's)")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--format", default="compressed-tensors")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--nproc", type=int, nargs="+", default=[1], help="ranks per run (torchrun); several values "
                    "measure each in turn, e.g. --nproc 1 2 4")
    ap.add_argument("--preset", default="bench", help="synthetic preset (bench: real widths; tiny: for checks)")
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
        over = {"experts": args.experts, "layers": args.layers,
                "shard_bytes": None if args.shard_gb is None else int(args.shard_gb * 1e9)}
        facts = write_synthetic(src, args.preset, exact=False, **{k: v for k, v in over.items() if v is not None})
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
               "preset": args.preset, "experts": args.experts, "layers": args.layers, "shard_gb": args.shard_gb,
               "nproc": args.nproc, "workers": args.workers or "default", "format": args.format,
               "deepseek_v3_fp8_bytes": full_bytes, "runs": []}
    gpus = torch.cuda.device_count() if args.backend == "cuda" and torch.cuda.is_available() else 0
    if gpus:
        results["gpu"] = torch.cuda.get_device_name(0)
        results["gpus"] = gpus
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.is_file() else []
    old = old if isinstance(old, list) else [old]
    for label in args.recipes:
        recipe, extra = RECIPES[label]
        for nproc in args.nproc:
            row = _measure(args, nproc, gpus, src, work / f"out-{recipe}", label, recipe, extra, full_bytes)
            results["runs"].append(row)
            out.write_text(json.dumps(old + [results], indent=1) + "\n")  # after each run: a cut-off keeps these
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
