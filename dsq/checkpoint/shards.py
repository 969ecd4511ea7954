"""safetensors shards with a Hugging Face style index, and a reader that names the file at fault.

Writing: tensors are assigned to shards in insertion order, a new shard starting when the next tensor would
push the current one past ``max_shard_bytes`` (a tensor larger than the limit gets a shard of its own). One
shard is written as ``<prefix>.safetensors``; several as ``<prefix>-00001-of-0000N.safetensors`` plus
``<prefix>.safetensors.index.json`` (``{"metadata": {"total_size": bytes}, "weight_map": {name: file}}``).

Reading never unpickles: safetensors only. A truncated or corrupt file, an index that points at a missing
file, or a tensor listed in the index but absent from its shard raises :class:`CheckpointError` naming the
file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dsq.errors import CheckpointError

__all__ = ["write_shards", "TensorReader", "DEFAULT_SHARD_BYTES"]

DEFAULT_SHARD_BYTES = 4 * 1024**3


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def write_shards(tensors: dict[str, torch.Tensor], directory: Path, prefix: str = "model",
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES, metadata: dict[str, str] | None = None) -> list[str]:
    """Write ``tensors`` into ``directory``; returns the shard file names."""
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nb = _nbytes(t)
        if groups[-1] and size + nb > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = t.detach().contiguous().cpu()
        size += nb
    n = len(groups)
    files = [f"{prefix}.safetensors"] if n == 1 else \
        [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    meta = {"format": "pt", **(metadata or {})}
    for fname, group in zip(files, groups):
        save_file(group, str(directory / fname), metadata=meta)
    if n > 1:
        index = {"metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())},
                 "weight_map": {name: fname for fname, g in zip(files, groups) for name in g}}
        (directory / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


class TensorReader:
    """Lazy access to every tensor of a checkpoint directory (all ``*.safetensors`` files, or an index)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._where: dict[str, str] = {}
        self._handles: dict[str, object] = {}
        indexes = sorted(self.directory.glob("*.safetensors.index.json"))
        files = sorted(p.name for p in self.directory.glob("*.safetensors"))
        if not files and not indexes:
            raise CheckpointError(f"{self.directory} contains no *.safetensors files")
        for fname in files:
            for key in self._open(fname).keys():
                self._where[key] = fname
        for idx in indexes:
            try:
                weight_map = json.loads(idx.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"{idx} is not a valid safetensors index ({exc})") from exc
            for key, fname in weight_map.items():
                if not (self.directory / fname).is_file():
                    raise CheckpointError(f"{idx.name} maps {key!r} to {fname}, which does not exist in {self.directory}")
                if self._where.get(key) != fname:
                    raise CheckpointError(f"{idx.name} maps {key!r} to {fname}, but that file does not contain it")

    def _open(self, fname: str):
        if fname not in self._handles:
            path = self.directory / fname
            try:
                self._handles[fname] = safe_open(str(path), framework="pt")
            except Exception as exc:  # safetensors raises its own error types for bad headers/truncation
                raise CheckpointError(f"cannot read {path}: corrupt or truncated safetensors file ({exc})") from exc
        return self._handles[fname]

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def file_of(self, name: str) -> str:
        return self._where[name]

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name``; a read failure names its file."""
        if name not in self._where:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint in {self.directory}")
        fname = self._where[name]
        try:
            return self._open(fname).get_tensor(name)
        except Exception as exc:
            raise CheckpointError(
                f"cannot read tensor {name!r} from {self.directory / fname}: corrupt or truncated file ({exc})") from exc

    def metadata(self, name: str) -> tuple[tuple[int, ...], str]:
        """(shape, dtype string) of a tensor without reading its data."""
        sl = self._open(self._where[name]).get_slice(name)
        return tuple(sl.get_shape()), str(sl.get_dtype())
