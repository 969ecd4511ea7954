"""Convert one source shard into one output shard.

For each job of the shard (see :mod:`dsq.streaming.plan`), in the source file's order:

* ``quantize``: read the weight (and its float8 block-scale partner, possibly from another shard), quantize
  it in row chunks with the engine, and turn the PackedWeight into the output format's tensors;
* ``dequant``: a float8 weight kept float becomes ``float32(q) * s`` rounded once to the model dtype;
* ``copy``: the tensor as read.

Reads happen on the calling thread in file order; the arithmetic runs on ``workers`` threads (each with its
own engine and work buffers; torch kernels release the GIL), and results are collected in job order. On a
shared or small CPU, several single-threaded workers beat one multi-threaded torch: every torch op with
OpenMP threads ends in a barrier that stalls whenever one of its threads is descheduled.

Output tensors go to a temporary file as soon as each job finishes (in job order), through
:class:`~dsq.streaming.st_format.StreamWriter` with a reserved header, so memory holds only the jobs in
flight, never the shard's output; the file is then completed, fsynced and renamed, and only then is the
shard's record written (by a :class:`Committer` thread while the next shard is converted). Any failure names
the source file and tensor and leaves no partial output behind.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch

from dsq.errors import CheckpointError, DsqError

from .engine import Engine
from .formats import OutputFormat
from .manifest import Staging
from .plan import ShardPlan
from .source import ShardReader, SourceCheckpoint
from .st_format import StreamWriter, crc32_of

__all__ = ["convert_shard", "add_stats", "EnginePool", "Committer"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_stats(total: dict, part: dict) -> dict:
    """Sum per-kind statistics ({kind: {counter: int}})."""
    for kind, counters in part.items():
        dst = total.setdefault(kind, {})
        for k, v in counters.items():
            dst[k] = dst.get(k, 0) + v
    return total


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class EnginePool:
    """One engine per worker thread (engines keep work buffers), made by ``factory()`` on first use."""

    def __init__(self, factory, workers: int = 1):
        self.factory, self.workers = factory, max(1, int(workers))
        self._local = threading.local()
        self.name = factory().name

    def get(self) -> Engine:
        eng = getattr(self._local, "engine", None)
        if eng is None:
            eng = self._local.engine = self.factory()
        return eng


def convert_shard(sp: ShardPlan, src: SourceCheckpoint, fmt: OutputFormat, engines: EnginePool,
                  staging: Staging, model_dtype: str, on_bytes=None, opener=open,
                  reopen_bytes: int | None = None, committer: Committer | None = None) -> dict:
    """Write output shard ``sp.output`` into the staging directory; returns its record. With a ``committer``
    the file is completed, fsynced, renamed and recorded on its thread (``size`` and ``seconds`` are filled in
    then); otherwise before returning."""
    t0 = time.perf_counter()
    shard = src.by_name[sp.source]
    kw = {} if reopen_bytes is None else {"reopen_bytes": reopen_bytes}
    readers = {shard.name: ShardReader(shard, **kw)}

    def read(tensor: str) -> torch.Tensor:
        fname = src.where[tensor]
        if fname not in readers:  # a scale partner stored in another shard
            readers[fname] = ShardReader(src.by_name[fname], **kw)
        return readers[fname].get(tensor)

    tmp = staging.dir / f".{sp.output}.tmp-{os.getpid()}"
    # one JSON header entry is < 160 bytes plus its name; a quantized module writes at most 8 tensors
    reserve = 4096 + sum((8 if j.kind == "quantize" else 1) * (len(j.name) + 200) for j in sp.jobs)
    writer = StreamWriter(tmp, None, {"format": "pt"}, opener, reserve=reserve)
    types: dict[str, str] = {}
    modules: dict[str, dict] = {}
    stats: dict[str, dict[str, int]] = {}
    dtype = _DTYPES[model_dtype]

    def compute(job, w, s):
        """Runs on a worker thread (torch ops release the GIL): the job's output tensors (on the CPU, with
        their CRC-32s). Format builders run on the engine's device, so a GPU does that arithmetic too."""
        eng = engines.get()
        module = None
        if job.kind == "quantize" and job.scheme.two_level:  # unpacked codes straight to the format builder
            codes = eng.two_level_codes(w, s, job.scheme, job.name)
            tensors, ty, stored = fmt.two_level_tensors(job.name, job.scheme, codes)
            key, module = job.scheme.name, {"scheme": stored.to_dict(), "shape": list(w.shape)}
        elif job.kind == "quantize":
            packed = eng.quantize(w, s, job.scheme, job.name)
            tensors, ty, stored = fmt.module_tensors(job.name, job.scheme, packed)
            key, module = job.scheme.name, {"scheme": stored.to_dict(), "shape": list(w.shape)}
        elif job.kind == "dequant":
            tensors, ty, key = {job.tensor: eng.dequant(w, s, dtype, job.name)}, {}, "dequantized float8"
        else:
            tensors, ty, key = {job.tensor: w}, {}, "copied"
        tensors = {n: t.detach().cpu().contiguous() for n, t in tensors.items()}
        return tensors, {n: crc32_of(t) for n, t in tensors.items()}, ty, key, module

    def collect(job, future) -> None:
        try:
            tensors, crcs, ty, key, module = future.result()
        except DsqError as exc:
            raise CheckpointError(f"{shard.path}: tensor {job.tensor!r}: {exc}") from exc
        if module is not None:
            modules[job.name] = module
        if job.kind != "quantize" and fmt.float_type():
            ty = {n: fmt.float_type() for n in tensors}
        for n, t in tensors.items():
            if n in writer.crcs:
                raise CheckpointError(f"{shard.path}: output tensor {n!r} is produced twice (from {job.tensor!r})")
            writer.write(n, t, crcs[n])  # straight to disk: the shard's output never accumulates in memory
        types.update(ty)
        st = stats.setdefault(key, {"modules": 0, "tensors_out": 0, "bytes_in": 0, "bytes_out": 0})
        st["modules"] += 1
        st["tensors_out"] += len(tensors)
        st["bytes_in"] += job.src_bytes
        st["bytes_out"] += sum(_nbytes(t) for t in tensors.values())
        if on_bytes is not None:
            on_bytes(job.src_bytes)

    # reads stay on this thread, in file order; at most 2 * workers jobs are in flight
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=engines.workers) as pool:
        try:
            for job in sp.jobs:
                try:
                    w = read(job.tensor)
                    s = read(job.scale_inv) if job.scale_inv else None
                except DsqError as exc:
                    raise CheckpointError(f"{shard.path}: tensor {job.tensor!r}: {exc}") from exc
                pending.append((job, pool.submit(compute, job, w, s)))
                del w, s
                while len(pending) > 2 * engines.workers:
                    collect(*pending.popleft())
            while pending:
                collect(*pending.popleft())
        except BaseException:
            for _, f in pending:
                f.cancel()
            writer.abort()
            raise
    for r in readers.values():
        r.close()
    specs = {n: {"dtype": d, "shape": list(shape)} for n, d, shape in writer.specs}
    record = {
        "source": sp.source, "source_size": shard.size, "source_mtime_ns": shard.mtime_ns, "output": sp.output,
        "size": None, "tensors": {n: {**specs[n], "crc32": writer.crcs[n]} for n in specs},
        "modules": modules, "types": types, "stats": stats, "seconds": None,
    }

    def commit() -> None:
        """Header, fsync, rename, then the shard's record: only a durable, complete file counts as finished."""
        writer.close()
        final = staging.dir / sp.output
        try:
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"cannot rename {tmp} to {final}: {exc}") from exc
        record["size"] = final.stat().st_size
        record["seconds"] = round(time.perf_counter() - t0, 3)
        staging.add_record(record)

    if committer is None:
        commit()
    else:
        committer.submit(commit)
    return record


class Committer:
    """Finishes written shards (:func:`convert_shard`'s last step: header, fsync, rename, record) on one
    background thread while the next shard is converted, so the compute threads do not sit idle while the disk
    catches up. At most one shard waits: :meth:`submit` first waits for the previous one (bounding dirty pages to
    one shard). A failure is re-raised by the next :meth:`submit` or by :meth:`wait`; :meth:`close` lets a
    running commit finish (a complete shard is worth keeping for the resume) without raising."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsq-commit")
        self._pending = None

    def submit(self, fn) -> None:
        self.wait()
        self._pending = self._pool.submit(fn)

    def wait(self) -> None:
        f, self._pending = self._pending, None
        if f is not None:
            f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
