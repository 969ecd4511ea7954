"""``quantize_checkpoint``: model-free streaming quantization of a safetensors checkpoint, shard by shard.

Steps (each rank of a ``torchrun`` launch runs the same code; see :mod:`dsq.streaming.dist`):

1. Plan from headers only (:mod:`dsq.streaming.plan`): every tensor's fate, scheme fit, format support.
   Every error that can be found without reading data is raised here, before anything is written.
2. Rank 0 opens the staging directory ``<DST>.dsq-partial`` (or resumes it: same settings required) and
   lists the finished shards; the unfinished ones are split between ranks by size.
3. Each rank converts its shards one at a time (:func:`dsq.streaming.convert.convert_shard`). Memory per
   rank: the output of one shard (<= about one source shard), at most ``reopen_bytes`` of mapped source
   pages, and one weight's float32 row chunks: about twice the largest shard plus a constant, whatever the
   number of shards.
4. Rank 0 writes the index, ``config.json`` (with ``quantization_config``) or the Ascend description,
   ``dsq_quantization.json`` (dsq's exact schemes, for ``dsq.load``), ``dsq_manifest.json`` (checksums) and
   copies the source's other files (tokenizer, generation config, code); then renames the staging directory
   to ``DST``.
"""

from __future__ import annotations

import json
import shutil
import time

import torch

from dsq.errors import CheckpointError, DsqError
from dsq.schemes import QuantScheme

from . import dist as distmod
from .convert import Committer, EnginePool, add_stats, convert_shard
from .engine import make_engine
from .formats import get_format
from .manifest import MANIFEST, Staging, read_json, write_json_atomic
from .plan import StreamPlan, make_plan, model_dtype, natural_key
from .report import Progress, format_summary, peak_rss_bytes
from .source import DEFAULT_REOPEN_BYTES, SourceCheckpoint

__all__ = ["quantize_checkpoint", "SIDECAR"]

SIDECAR = "dsq_quantization.json"
_NOT_CARRIED = (".safetensors", ".index.json", ".bin", ".pt", ".pth", ".ckpt")
_WRITTEN = {"config.json", SIDECAR, MANIFEST, "quant_model_description.json"}


def _settings(src: SourceCheckpoint, plan: StreamPlan, fmt_name: str, scale_dtype: str | None) -> dict:
    from dsq import __version__

    return {"dsq_version": __version__, "source": [s.name for s in src.shards],
            "recipe": plan.recipe.to_dict(), "format": fmt_name, "scale_dtype": scale_dtype,
            "model_dtype": plan.model_dtype}


def _resolve_scale_dtype(scale_dtype: str | None, model_dtype: str) -> str | None:
    """As ``dsq.quantize(scale_dtype=...)``: "auto" is the model dtype when it is bf16/fp16, else the recipe's."""
    if scale_dtype in (None, "recipe"):
        return None
    if scale_dtype == "auto":
        return model_dtype if model_dtype in ("bfloat16", "float16") else None
    if scale_dtype not in ("float32", "bfloat16", "float16"):
        raise CheckpointError(f"scale_dtype must be auto, recipe, float32, bfloat16 or float16; got {scale_dtype!r}")
    return scale_dtype


def _fp8_block(cfg: dict) -> tuple[int, int]:
    q = cfg.get("quantization_config") or {}
    block = q.get("weight_block_size") or [128, 128]
    return int(block[0]), int(block[1])


def _finish(staging: Staging, src: SourceCheckpoint, plan: StreamPlan, fmt, settings: dict, records: dict,
            engine_name: str) -> None:
    """Rank 0: index, config, sidecar, description, manifest and carried files, in the staging directory."""
    d = staging.dir
    modules = {}
    types = {}
    for rec in records.values():
        for m, info in rec["modules"].items():
            modules[m] = QuantScheme.from_dict(info["scheme"])
        types.update(rec["types"])
    modules = {m: modules[m] for m in sorted(modules, key=natural_key)}
    qconfig, description = fmt.finish(modules, types, plan.float_linears)
    outputs = [sp.output for sp in plan.shards]
    if len(outputs) > 1:
        weight_map = {t: name for name in outputs for t in records[name]["tensors"]}
        total = sum(_tensor_bytes(info) for rec in records.values() for info in rec["tensors"].values())
        write_json_atomic(d / f"{fmt.prefix}.safetensors.index.json",
                          {"metadata": {"total_size": total}, "weight_map": weight_map})
    cfg = src.config()
    cfg.pop("quantization_config", None)
    if qconfig is not None:
        cfg["quantization_config"] = qconfig
    write_json_atomic(d / "config.json", cfg)
    if description is not None:
        write_json_atomic(d / "quant_model_description.json", description)
    expert_schemes = {}
    for block, (_, n) in plan.experts.items():
        gate = next(m for m in modules if m.startswith(f"{block}.0."))
        expert_schemes[block] = {"scheme": modules[gate].to_dict(), "num_experts": n}
    sidecar = {"format": fmt.name, "dtype": plan.model_dtype,
               "linears": {m: modules[m].to_dict() for m in plan.linears},
               "experts": expert_schemes, "recipe": plan.recipe.to_dict(),
               "backend": engine_name, "calibration": None, "streamed": True}
    write_json_atomic(d / SIDECAR, sidecar)
    write_json_atomic(d / MANIFEST, staging.manifest(settings, records))
    for p in sorted(src.directory.iterdir()):
        if p.is_file() and p.name not in _WRITTEN and not p.name.endswith(_NOT_CARRIED):
            try:
                shutil.copy2(p, d / p.name)
            except OSError as exc:
                raise CheckpointError(f"cannot copy {p} to {d / p.name}: {exc}") from exc


def _tensor_bytes(info: dict) -> int:
    from .st_format import _ITEMSIZE

    n = 1
    for s in info["shape"]:
        n *= s
    return n * _ITEMSIZE[info["dtype"]]


def _engine_factory(backend: str, kw: dict, d: distmod.Dist):
    """Makes one engine per worker thread; on a GPU it first selects this rank's device on the calling thread
    (CUDA's current device is per thread, so worker threads would otherwise all use GPU 0)."""
    probe = make_engine(backend, **kw)
    index = None
    if str(probe.device).startswith("cuda") and torch.cuda.is_available():
        index = d.device_index(torch.cuda.device_count())

    def factory():
        if index is not None:
            torch.cuda.set_device(index)
        return make_engine(backend, **kw)

    return factory


def quantize_checkpoint(src_dir, dst_dir, recipe, backend: str = "cpu", format: str = "compressed-tensors",
                        scale_dtype: str | None = "auto", skip_calibrated: bool = False, overwrite: bool = False,
                        progress: bool = True, chunk_elems: int | None = None,
                        reopen_bytes: int = DEFAULT_REOPEN_BYTES, max_shards: int | None = None,
                        workers: int | None = None, opener=open) -> dict:
    """Quantize checkpoint ``src_dir`` into ``dst_dir`` without building the model; returns the summary dict.

    Args:
        recipe: preset name, scheme name, Recipe, dict or recipe file (data-free schemes only).
        backend: ``"cpu"`` (torch fast path, bit-identical to the reference), ``"cpu-reference"`` (numpy
            oracle), ``"cuda"`` (Triton kernels on the rank's GPU) or any installed backend.
        format: ``"compressed-tensors"`` or ``"ascend"``.
        scale_dtype: ``"auto"`` (as ``dsq.quantize``: the model dtype when it is bf16/fp16, which
            compressed-tensors loaders require), ``"recipe"`` (keep each rule's), or a dtype for every rule.
        skip_calibrated: keep modules whose scheme needs calibration float instead of raising.
        max_shards: stop after converting this many shards on this rank (to test resuming).
        workers: compute threads per rank (default: torch's thread count on the CPU, 2 for a GPU backend);
            with more than one, torch itself runs single-threaded meanwhile.
        opener: ``open``-like function for output shards (tests simulate a full disk with it).
    Rerunning the same call after a crash resumes: finished shards are kept, the rest redone.
    """
    d = distmod.init()
    try:
        return _quantize(d, src_dir, dst_dir, recipe, backend, format, scale_dtype, skip_calibrated, overwrite,
                         progress, chunk_elems, reopen_bytes, max_shards, workers, opener)
    finally:
        d.close()


def _quantize(d: distmod.Dist, src_dir, dst_dir, recipe, backend, format, scale_dtype, skip_calibrated, overwrite,
              progress, chunk_elems, reopen_bytes, max_shards, workers, opener) -> dict:
    t0 = time.perf_counter()
    src = SourceCheckpoint(src_dir)
    cfg = src.config()
    fmt = get_format(format, model_dtype(src))
    sdt = _resolve_scale_dtype(scale_dtype, model_dtype(src))
    plan = make_plan(src, recipe, prefix=fmt.prefix, scale_dtype=sdt, skip_calibrated=skip_calibrated)
    for m, s in list(plan.linears.items()) + [(b, s) for b, (s, _) in plan.experts.items()]:
        fmt.check_scheme(m, s)
    settings = _settings(src, plan, fmt.name, sdt)
    staging = Staging(dst_dir)
    if staging.dst.exists() and not overwrite:
        man = staging.dst / MANIFEST
        if man.is_file() and read_json(man).get("settings") == settings:
            return {"already_complete": True, "output": str(staging.dst)}
        raise CheckpointError(f"output directory {staging.dst} already exists; pass --overwrite to replace it")
    if d.is_main:
        staging.open(settings)
        staging.clean_temporaries()
        finished = sorted(staging.finished(src))
    else:
        finished = None
    finished = d.broadcast(finished)
    todo = {sp.output: sp for sp in plan.shards if sp.output not in finished}
    mine = distmod.assign({name: sp.src_bytes for name, sp in todo.items()}, d.world)[d.rank]
    if max_shards is not None:
        mine = mine[:max_shards]
    kw = {"fp8_block": _fp8_block(cfg)}
    if chunk_elems is not None:
        kw["chunk_elems"] = chunk_elems
    workers = workers or (torch.get_num_threads() if backend in ("cpu", "torch") else 2)
    engines = EnginePool(_engine_factory(backend, kw, d), workers)
    threads = torch.get_num_threads()
    if workers > 1 and engines.get().device == "cpu":
        torch.set_num_threads(1)  # parallelism comes from the workers (see dsq.streaming.convert)
    bar = Progress(sum(todo[n].src_bytes for n in mine), progress and d.is_main)
    stats: dict = {}
    error = None
    done_bytes = 0
    t_work = time.perf_counter()
    committer = Committer()  # shard i is fsynced and recorded while shard i + 1 is converted
    try:
        for name in mine:
            rec = convert_shard(todo[name], src, fmt, engines, staging, plan.model_dtype, bar.update, opener,
                                reopen_bytes, committer)
            add_stats(stats, rec["stats"])
            done_bytes += todo[name].src_bytes
        committer.wait()
    except DsqError as exc:
        error = f"rank {d.rank}: {exc}" if d.world > 1 else None
        if d.world == 1:
            raise
    finally:
        committer.close()
        bar.close()
        torch.set_num_threads(threads)
    work_seconds = time.perf_counter() - t_work
    results = d.all_gather({"error": error, "stats": stats, "bytes": done_bytes, "rss": peak_rss_bytes(),
                            "done": len(mine), "seconds": work_seconds})
    errors = [r["error"] for r in results if r["error"]]
    if errors:
        raise CheckpointError("; ".join(errors))
    total_stats: dict = {}
    for r in results:
        add_stats(total_stats, r["stats"])
    summary = {
        "output": str(staging.dst), "stats": total_stats, "world": d.world, "engine": engines.name,
        "shards_total": len(plan.shards), "shards_skipped": len(finished),
        "shards_done": sum(r["done"] for r in results), "bytes_done": sum(r["bytes"] for r in results),
        "seconds": max(r["seconds"] for r in results), "wall_seconds": 0.0,
        "peak_rss": max(r["rss"] for r in results), "peak_rss_per_rank": [r["rss"] for r in results],
        "largest_shard": src.largest_shard_bytes, "source_bytes": src.total_bytes,
        "skipped_calibrated": plan.skipped_calibrated, "unmatched": plan.unmatched, "complete": False,
    }
    if d.is_main:
        records = staging.finished(src)
        missing = [sp.output for sp in plan.shards if sp.output not in records]
        if not missing:
            _finish(staging, src, plan, fmt, settings, records, engines.name)
            staging.commit(overwrite)
            summary["complete"] = True
        summary["missing"] = missing
    summary = d.broadcast(summary)
    d.barrier()
    summary["wall_seconds"] = time.perf_counter() - t0
    return summary


def print_summary(summary: dict) -> None:
    if summary.get("already_complete"):
        print(f"{summary['output']} is already complete (dsq_manifest.json matches these settings); nothing to do")
        return
    print(format_summary(summary))
    if not summary["complete"]:
        print(f"incomplete: {len(summary.get('missing', []))} shards left; rerun the same command to continue")


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, default=str)
