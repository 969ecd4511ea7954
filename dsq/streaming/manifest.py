"""Crash-safe bookkeeping: the staging directory, per-shard records and the final ``dsq_manifest.json``.

While a conversion runs, everything lives in the staging directory ``<DST>.dsq-partial`` next to the
destination; ``DST`` itself appears only at the end, by one rename, so a crash never leaves a half-written
checkpoint at ``DST``. Inside the staging directory:

* output shards, each written under a temporary name (``.<shard>.tmp-<pid>``), fsynced and renamed;
* ``.dsq-stream/settings.json``: what is being made (source shard names, recipe, format, scale dtype). A
  rerun with different settings is refused instead of mixing two conversions;
* ``.dsq-stream/shards/<shard>.json``: one record per finished output shard (written atomically after the
  shard's rename): its size and every tensor's dtype, shape and CRC-32, the modules it quantized, and the
  size and modification time of its source shard. A shard counts as finished only when its record exists,
  the file on disk has the recorded size and its source shard is unchanged, so a rerun skips exactly the
  finished shards and redoes the rest (including any whose source was replaced, e.g. re-downloaded). Each rank writes its own records: no shared
  file is ever written concurrently.

At the end the records are merged into ``dsq_manifest.json`` in the destination, which ``dsq verify``
checks every tensor against.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dsq.errors import CheckpointError

__all__ = ["Staging", "MANIFEST", "write_json_atomic", "read_json"]

MANIFEST = "dsq_manifest.json"
MANIFEST_VERSION = 1
_STATE = ".dsq-stream"


def write_json_atomic(path: Path, data) -> None:
    """Write JSON to a temporary sibling, fsync, rename (a reader sees the old file or the new, never half)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=1, sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if exc.errno == 28 else str(exc)
        raise CheckpointError(f"cannot write {path}: {reason}") from exc


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc})") from None


class Staging:
    """The staging directory of one conversion (see module docstring)."""

    def __init__(self, dst: str | os.PathLike):
        self.dst = Path(dst).absolute()
        self.dir = self.dst.parent / f"{self.dst.name}.dsq-partial"
        self.state = self.dir / _STATE
        self.records_dir = self.state / "shards"

    # -- set up ---------------------------------------------------------------------------------------
    def open(self, settings: dict) -> bool:
        """Create the staging directory, or reopen one made with the same settings (True when resuming)."""
        path = self.state / "settings.json"
        if path.is_file():
            old = read_json(path)
            if old != settings:
                diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise CheckpointError(
                    f"{self.dir} holds an unfinished conversion made with different settings ({', '.join(diff)}); "
                    "rerun with the same source, recipe, format and scale dtype to resume it, or delete it to "
                    "start over")
            return True
        self.records_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, settings)
        return False

    def clean_temporaries(self) -> None:
        """Delete partial files left by a killed run (they were never renamed into place)."""
        if not self.dir.is_dir():
            return
        for p in self.dir.iterdir():
            if p.name.startswith(".") and ".tmp-" in p.name:
                p.unlink(missing_ok=True)

    # -- records --------------------------------------------------------------------------------------
    def record_path(self, output: str) -> Path:
        return self.records_dir / f"{output}.json"

    def finished(self, src=None) -> dict[str, dict]:
        """Records of finished shards whose file is present with the recorded size (and, given the source
        checkpoint, whose source shard still has the recorded size and modification time)."""
        out = {}
        if not self.records_dir.is_dir():
            return out
        for p in sorted(self.records_dir.glob("*.json")):
            rec = read_json(p)
            f = self.dir / rec["output"]
            if not (f.is_file() and f.stat().st_size == rec["size"]):
                continue
            if src is not None:
                shard = src.by_name.get(rec["source"])
                if shard is None or [shard.size, shard.mtime_ns] != [rec["source_size"], rec.get("source_mtime_ns")]:
                    continue  # the source shard changed since: convert it again
            out[rec["output"]] = rec
        return out

    def add_record(self, record: dict) -> None:
        write_json_atomic(self.record_path(record["output"]), record)

    # -- finish ---------------------------------------------------------------------------------------
    def manifest(self, settings: dict, records: dict[str, dict]) -> dict:
        shards = {name: {"source": r["source"], "size": r["size"], "tensors": r["tensors"]}
                  for name, r in sorted(records.items())}
        return {"version": MANIFEST_VERSION, "checksum": "crc32", "complete": True, "settings": settings,
                "shards": shards}

    def commit(self, overwrite: bool) -> Path:
        """Move the finished staging directory to the destination (replacing it when ``overwrite``)."""
        shutil.rmtree(self.state, ignore_errors=True)
        old = None
        if self.dst.exists():
            if not overwrite:
                raise CheckpointError(f"output directory {self.dst} already exists; pass --overwrite to replace it")
            old = self.dst.parent / f".{self.dst.name}.dsq-old-{os.getpid()}"
            os.replace(self.dst, old)
        os.replace(self.dir, self.dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.dst
