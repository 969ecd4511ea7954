"""The source checkpoint: its shards, every tensor's header entry, and reads that name the file at fault.

Discovery never reads tensor data: the shard list comes from ``*.safetensors.index.json`` (or every
``*.safetensors`` file when there is no index) and each shard's header is parsed with
:func:`dsq.streaming.st_format.read_header`. Consistency is checked up front, before anything is written:
an index that names a missing file, a tensor the index places in a file that does not hold it, a tensor held
by two shards, a truncated or corrupt header.

Tensor data is read with ``safetensors.safe_open`` one tensor at a time. safe_open memory-maps the file and
pages touched by reads stay resident (and counted in RSS) until the mapping is closed, so
:class:`ShardReader` reopens its handle after every ``reopen_bytes`` read: resident source bytes stay near
that window instead of growing to the whole shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from dsq.errors import CheckpointError

from .st_format import TensorInfo, read_header

__all__ = ["SourceCheckpoint", "Shard", "ShardReader", "DEFAULT_REOPEN_BYTES"]

DEFAULT_REOPEN_BYTES = 256 * 1024**2


@dataclass
class Shard:
    """One source file: name, path, size in bytes and its tensors (file order)."""

    name: str
    path: Path
    size: int
    tensors: dict[str, TensorInfo]
    data_start: int
    mtime_ns: int = 0


class SourceCheckpoint:
    """Every shard and tensor of a safetensors checkpoint directory, from headers only."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise CheckpointError(f"source checkpoint {self.directory} is not a directory")
        self.index_name: str | None = None
        files = self._shard_names()
        self.shards: list[Shard] = []
        self.where: dict[str, str] = {}
        for fname in files:
            path = self.directory / fname
            tensors, _, data_start = read_header(path)
            st = path.stat()
            self.shards.append(Shard(fname, path, st.st_size, tensors, data_start, st.st_mtime_ns))
            for t in tensors:
                if t in self.where:
                    raise CheckpointError(f"tensor {t!r} is stored twice: in {self.where[t]} and in {fname}")
                self.where[t] = fname
        self._check_index()
        self.by_name = {s.name: s for s in self.shards}

    def _shard_names(self) -> list[str]:
        indexes = sorted(self.directory.glob("*.safetensors.index.json"))
        if len(indexes) > 1:
            raise CheckpointError(f"{self.directory} has several safetensors indexes "
                                  f"({', '.join(p.name for p in indexes)}); expected one")
        if indexes:
            idx = indexes[0]
            self.index_name = idx.name
            try:
                self.weight_map: dict[str, str] = json.loads(idx.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{idx} is not a valid safetensors index (needs a 'weight_map'): {exc}") from None
            files = sorted(set(self.weight_map.values()))
            for fname in files:
                if not (self.directory / fname).is_file():
                    tensor = next(k for k, v in self.weight_map.items() if v == fname)
                    raise CheckpointError(f"{idx} maps tensor {tensor!r} to {fname}, which does not exist in "
                                          f"{self.directory}")
            return files
        self.weight_map = {}
        files = sorted(p.name for p in self.directory.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{self.directory} contains no *.safetensors files")
        return files

    def _check_index(self) -> None:
        if self.index_name is None:
            return
        for tensor, fname in self.weight_map.items():
            if self.where.get(tensor) != fname:
                raise CheckpointError(f"{self.index_name} maps tensor {tensor!r} to {fname}, but that file does "
                                      "not contain it")
        extra = [t for t in self.where if t not in self.weight_map]
        if extra:
            raise CheckpointError(f"{self.where[extra[0]]} holds tensor {extra[0]!r} that {self.index_name} does "
                                  f"not list ({len(extra)} such tensors)")

    # -- facts used by the plan -----------------------------------------------------------------------
    def info(self, name: str) -> TensorInfo:
        return self.by_name[self.where[name]].tensors[name]

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.shards)

    @property
    def largest_shard_bytes(self) -> int:
        return max(s.size for s in self.shards)

    def config(self) -> dict:
        """config.json as a dict ({} when absent)."""
        path = self.directory / "config.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc})") from None


class ShardReader:
    """Read tensors of one shard through ``safe_open``, reopening the mapping every ``reopen_bytes``."""

    def __init__(self, shard: Shard, reopen_bytes: int = DEFAULT_REOPEN_BYTES):
        self.shard = shard
        self.reopen_bytes = reopen_bytes
        self._handle = None
        self._since_open = 0

    def _open(self):
        if self._handle is None or self._since_open >= self.reopen_bytes:
            self._handle = None  # drop the old mapping first
            try:
                self._handle = safe_open(str(self.shard.path), framework="pt")
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"cannot open {self.shard.path}: corrupt or truncated safetensors file "
                                      f"({exc})") from exc
            self._since_open = 0
        return self._handle

    def get(self, name: str) -> torch.Tensor:
        """Tensor ``name``: a view of the file's memory mapping (no copy; pages are read on first touch and
        stay mapped while the tensor lives). The source must not change while a conversion reads it."""
        info = self.shard.tensors.get(name)
        if info is None:
            raise CheckpointError(f"tensor {name!r} is not in {self.shard.path}")
        try:
            t = self._open().get_tensor(name)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"cannot read tensor {name!r} from {self.shard.path}: corrupt or truncated "
                                  f"file ({exc})") from exc
        if tuple(t.shape) != info.shape or t.dtype != info.torch_dtype:
            raise CheckpointError(f"tensor {name!r} in {self.shard.path} reads as {t.dtype}{list(t.shape)}, its "
                                  f"header says {info.dtype}{list(info.shape)}")
        self._since_open += info.nbytes
        return t

    def close(self) -> None:
        self._handle = None
