"""The safetensors file layout, read from headers and written one tensor at a time.

A safetensors file is ``u64 little-endian header length H``, ``H`` bytes of JSON, then the data buffer. The
JSON maps every tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
start of the buffer) plus an optional ``"__metadata__"`` dict of strings. The buffer is fully covered by the
tensors, without holes or overlaps, in row-major little-endian order.

Why dsq reads and writes the layout itself here (and still reads tensor data through ``safe_open``):

* :func:`read_header` parses only the first ``8 + H`` bytes, so a whole model's plan (names, shapes, dtypes,
  byte sizes) costs kilobytes per shard, and a truncated file is caught before any tensor is read: the end
  of the last tensor must equal the file size.
* :class:`StreamWriter` writes the header first and then each tensor's bytes straight from its storage. The
  safetensors ``save_file`` serialises every tensor to ``bytes`` first, a second full copy of the shard in
  memory; the streaming writer keeps peak memory at the tensors already computed, reports the tensor it was
  writing when the disk fills up, and computes each tensor's CRC-32 as it goes (the manifest's checksums).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from dsq.errors import CheckpointError

__all__ = ["TensorInfo", "read_header", "StreamWriter", "DTYPE_CODES", "TORCH_DTYPES", "tensor_bytes", "crc32_of"]

#: safetensors dtype codes of the torch dtypes dsq reads and writes
DTYPE_CODES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
TORCH_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
_ITEMSIZE = {code: torch.empty(0, dtype=dt).element_size() for dt, code in DTYPE_CODES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a safetensors header: dtype code (``"BF16"``), shape and byte range in the buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]


def read_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """(tensors by name in file order, ``__metadata__``, byte offset of the data buffer) of a safetensors file.

    Raises CheckpointError naming the file when it is missing, truncated (shorter than its header says),
    has a malformed header, an unknown dtype, or a tensor whose byte range does not match its shape.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
            (hlen,) = struct.unpack("<Q", raw)
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise CheckpointError(f"{path} is corrupt or truncated: header length {hlen} bytes, file {size} bytes")
            text = f.read(hlen)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt: its safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupt: its safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    for name, d in header.items():
        try:
            dtype, shape, (b, e) = d["dtype"], tuple(int(x) for x in d["shape"]), d["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: header entry for tensor {name!r} is malformed ({exc})") from None
        if dtype not in _ITEMSIZE:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {dtype}, which dsq does not handle "
                                  f"(known: {', '.join(_ITEMSIZE)})")
        numel = 1
        for s in shape:
            numel *= s
        if e - b != numel * _ITEMSIZE[dtype] or b < 0:
            raise CheckpointError(f"{path}: tensor {name!r} {dtype}{list(shape)} needs {numel * _ITEMSIZE[dtype]} "
                                  f"bytes but its data_offsets are [{b}, {e}]")
        tensors[name] = TensorInfo(name, dtype, shape, int(b), int(e))
    ordered = dict(sorted(tensors.items(), key=lambda kv: kv[1].begin))
    data_start = 8 + hlen
    end = max((t.end for t in ordered.values()), default=0)
    if data_start + end > size:
        last = max(ordered.values(), key=lambda t: t.end)
        raise CheckpointError(f"{path} is truncated: {size} bytes, but tensor {last.name!r} ends at byte "
                              f"{data_start + end}")
    return ordered, dict(meta), data_start


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a contiguous CPU tensor, without a copy."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(-1).view(torch.uint8).numpy())


def crc32_of(t: torch.Tensor) -> str:
    """CRC-32 of a tensor's bytes, as 8 hex digits (zlib releases the GIL on large buffers)."""
    return f"{zlib.crc32(tensor_bytes(t)) & 0xFFFFFFFF:08x}"


class StreamWriter:
    """Write one safetensors file tensor by tensor, into ``path`` (normally a temporary name).

    Two modes:

    * ``specs`` given: names, dtypes and shapes (so the header) are fixed up front and written first;
      :meth:`write` is then called once per tensor in that order.
    * ``specs=None, reserve=R``: the header is not known yet. ``R`` bytes are reserved for it, tensors are
      appended as they are produced (nothing accumulates in memory), and :meth:`close` writes the header into
      the reserved space, padded with spaces, which the safetensors format allows after its JSON. Data offsets
      are relative to the end of the header, so they do not depend on its length. A header that outgrows
      the reservation is still handled: the data is copied behind a larger header.

    ``opener`` opens the file (tests pass one that simulates a full disk). An ``OSError`` while writing is
    re-raised as CheckpointError naming the file and the tensor.
    """

    def __init__(self, path: str | os.PathLike, specs: list[tuple[str, torch.dtype, tuple[int, ...]]] | None,
                 metadata: dict[str, str] | None = None, opener=open, reserve: int = 0):
        self.path = Path(path)
        self._meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        self._fixed = specs is not None
        self._order: list[tuple[str, int]] = []
        self.specs: list[tuple[str, str, tuple[int, ...]]] = []  # (name, dtype code, shape)
        self._offset = 0
        self._next = 0
        self.crcs: dict[str, str] = {}
        self._f = None
        for name, dtype, shape in specs or []:
            self._add_spec(name, dtype, shape)
        if self._fixed:
            text = self._header_bytes()
        else:
            self._reserved = max(64, reserve + (-reserve) % 8)
            text = b" " * self._reserved
        self._header_len = len(text)
        try:
            self._f = opener(self.path, "wb")
            self._f.write(struct.pack("<Q", len(text)) + text)
        except OSError as exc:
            self._fail(exc, "the header")

    def _add_spec(self, name: str, dtype: torch.dtype, shape) -> int:
        if dtype not in DTYPE_CODES:
            raise CheckpointError(f"tensor {name!r}: dtype {dtype} cannot be stored in safetensors by dsq")
        numel = 1
        for d in shape:
            numel *= int(d)
        nb = numel * _ITEMSIZE[DTYPE_CODES[dtype]]
        self._order.append((name, nb))
        self.specs.append((name, DTYPE_CODES[dtype], tuple(int(x) for x in shape)))
        return nb

    def _header_bytes(self, pad_to: int = 0) -> bytes:
        header: dict[str, object] = {"__metadata__": self._meta} if self._meta else {}
        offset = 0
        for (name, code, shape), (_, nb) in zip(self.specs, self._order):
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nb]}
            offset += nb
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * ((-len(text)) % 8)  # keep the data buffer 8-byte aligned, as safetensors does
        return text + b" " * max(0, pad_to - len(text))

    def _fail(self, exc: OSError, what: str) -> None:
        self.abort()
        reason = "the disk is full" if getattr(exc, "errno", None) == 28 else str(exc)
        raise CheckpointError(f"cannot write {what} of {self.path}: {reason}") from exc

    def write(self, name: str, t: torch.Tensor, crc: str | None = None) -> None:
        """Append tensor ``name`` (with fixed specs: the next one, same dtype and shape). ``crc``: its CRC-32
        when the caller computed it already (on another thread)."""
        data = tensor_bytes(t)
        if self._fixed:
            exp_name, nb = self._order[self._next]
            if name != exp_name:
                raise CheckpointError(f"{self.path}: tensor {name!r} written out of order (expected {exp_name!r})")
            if data.nbytes != nb:
                raise CheckpointError(f"{self.path}: tensor {name!r} has {data.nbytes} bytes, its header says {nb}")
        else:
            if name in self.crcs:
                raise CheckpointError(f"{self.path}: tensor {name!r} is written twice")
            self._add_spec(name, t.dtype, tuple(t.shape))
        self.crcs[name] = crc or f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"
        try:
            self._f.write(data)
        except OSError as exc:
            self._fail(exc, f"tensor {name!r}")
        self._next += 1

    def _finish_header(self) -> None:
        text = self._header_bytes(pad_to=self._reserved)
        if len(text) == self._reserved:
            self._f.seek(8)
            self._f.write(text)
            return
        # the header outgrew its reservation: move the data behind the full header (rare; costs a copy)
        self._f.flush()
        data_path = self.path.with_name(self.path.name + ".data")
        os.replace(self.path, data_path)
        self._f.close()
        self._f = open(self.path, "wb")
        self._f.write(struct.pack("<Q", len(text)) + text)
        with open(data_path, "rb") as src:
            src.seek(8 + self._reserved)
            shutil.copyfileobj(src, self._f, 64 * 1024 * 1024)
        data_path.unlink()

    def close(self) -> None:
        """Complete the header and flush to disk (fsync: a shard counts as finished only once durable)."""
        if self._fixed and self._next != len(self._order):
            missing = self._order[self._next][0]
            self.abort()
            raise CheckpointError(f"{self.path}: closed before tensor {missing!r} was written")
        try:
            if not self._fixed:
                self._finish_header()
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        except OSError as exc:
            self._fail(exc, "the header and end")

    def abort(self) -> None:
        """Close and delete the partial file."""
        try:
            if self._f is not None:
                self._f.close()
        except OSError:  # already failing; deleting the partial file is what matters
            pass
        for p in (self.path, self.path.with_name(self.path.name + ".data")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
