"""``verify_checkpoint``: check a streamed checkpoint against its manifest, and that it loads.

Checks, each failure naming the file and tensor:

1. ``dsq_manifest.json`` exists and is complete; every shard it lists exists with the recorded size.
2. Each shard's header lists exactly the manifest's tensors, with the same dtypes and shapes, and every
   tensor's bytes have the recorded CRC-32 (read in bounded pieces, never a whole file at once).
3. The index (when there are several shards) maps exactly the manifest's tensors to the right files.
4. The checkpoint loads through dsq's own reader (:class:`dsq.checkpoint.shards.TensorReader`, which opens
   every shard with ``safe_open`` and checks the index); ``config.json`` parses; every quantized module listed in
   ``dsq_quantization.json`` is rebuilt by the format's reader (``read_entry`` of
   :mod:`dsq.checkpoint.compressed_tensors` / :mod:`dsq.checkpoint.msmodelslim`), which checks names,
   shapes and dtypes of its tensors; for the ascend format every tensor has a description entry.
   ``load_model=True`` additionally runs :func:`dsq.load` (builds the transformers model; small models).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from dsq.errors import CheckpointError

from .manifest import MANIFEST, read_json
from .st_format import read_header

__all__ = ["verify_checkpoint"]

_PIECE = 64 * 1024 * 1024


def _crc_file_range(f, start: int, length: int) -> str:
    f.seek(start)
    crc = 0
    left = length
    while left:
        buf = f.read(min(_PIECE, left))
        if not buf:
            break
        crc = zlib.crc32(buf, crc)
        left -= len(buf)
    return f"{crc & 0xFFFFFFFF:08x}"


def _check_shard(path: Path, expected: dict) -> int:
    if not path.is_file():
        raise CheckpointError(f"{path} is listed in {MANIFEST} but missing")
    if path.stat().st_size != expected["size"]:
        raise CheckpointError(f"{path} has {path.stat().st_size} bytes; {MANIFEST} records {expected['size']}")
    tensors, _, start = read_header(path)
    want = expected["tensors"]
    for name in want:
        if name not in tensors:
            raise CheckpointError(f"{path}: tensor {name!r} is in {MANIFEST} but not in the file")
    for name, info in tensors.items():
        w = want.get(name)
        if w is None:
            raise CheckpointError(f"{path}: tensor {name!r} is not in {MANIFEST}")
        if info.dtype != w["dtype"] or list(info.shape) != list(w["shape"]):
            raise CheckpointError(f"{path}: tensor {name!r} is {info.dtype}{list(info.shape)}; {MANIFEST} records "
                                  f"{w['dtype']}{w['shape']}")
    with open(path, "rb") as f:
        for name, info in tensors.items():
            crc = _crc_file_range(f, start + info.begin, info.nbytes)
            if crc != want[name]["crc32"]:
                raise CheckpointError(f"{path}: tensor {name!r} has CRC-32 {crc}; {MANIFEST} records "
                                      f"{want[name]['crc32']} (the file is corrupt)")
    return len(tensors)


def _check_loads(d: Path, manifest: dict) -> int:
    """Read every tensor through safe_open and rebuild every quantized module with the format's reader."""
    from dsq.checkpoint import SIDECAR
    from dsq.checkpoint import compressed_tensors as ct
    from dsq.checkpoint import msmodelslim as ms
    from dsq.checkpoint.shards import TensorReader
    from dsq.schemes import QuantScheme

    reader = TensorReader(d)  # validates the index against the files
    names = set(reader.keys())
    listed = {t for s in manifest["shards"].values() for t in s["tensors"]}
    if names != listed:
        extra = sorted(names - listed) or sorted(listed - names)
        raise CheckpointError(f"{d}: the files/index and {MANIFEST} disagree on tensor {extra[0]!r}")
    for name in sorted(names):  # header-level read of every tensor (bytes were CRC-checked already)
        reader.metadata(name)
    read_json(d / "config.json")
    sidecar = read_json(d / SIDECAR)
    fmt = sidecar.get("format")
    modules: dict[str, QuantScheme] = {m: QuantScheme.from_dict(s) for m, s in sidecar.get("linears", {}).items()}
    for block, info in sidecar.get("experts", {}).items():
        scheme = QuantScheme.from_dict(info["scheme"])
        for e in range(int(info["num_experts"])):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                modules[f"{block}.{e}.{proj}"] = scheme
    shapes = {}
    for m in modules:
        if fmt == ct.FORMAT_NAME:
            shape_t = f"{m}.weight_shape"
            if shape_t in names:
                shapes[m] = tuple(int(x) for x in reader.get(shape_t).tolist())
                continue
        w = reader.metadata(f"{m}.weight")[0] if f"{m}.weight" in names else None
        if w is None:
            raise CheckpointError(f"{d}: quantized module {m} has no weight tensor")
        n = w[0] * 2 if fmt == ms.FORMAT_NAME and modules[m].two_level else w[0]
        shapes[m] = (n, w[1])
    for m, scheme in modules.items():
        n, k = shapes[m]
        if fmt == ct.FORMAT_NAME:
            ct.read_entry(m, reader.get, scheme, n, k)
        else:
            ms.read_entry(m, reader.get, reader.__contains__, scheme, n, k)
    if fmt == ms.FORMAT_NAME:
        desc = read_json(d / ms.DESCRIPTION)
        missing = [t for t in names if t not in desc]
        if missing:
            raise CheckpointError(f"{d / ms.DESCRIPTION} has no entry for tensor {missing[0]!r}")
    return len(modules)


def verify_checkpoint(directory, load_model: bool = False) -> dict:
    """Verify a checkpoint written by ``quantize_checkpoint``; returns counts, raises CheckpointError."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d} is not a directory")
    man = read_json(d / MANIFEST)
    if not man.get("complete"):
        raise CheckpointError(f"{d / MANIFEST} says the conversion is not complete")
    tensors = 0
    nbytes = 0
    for name, expected in man["shards"].items():
        tensors += _check_shard(d / name, expected)
        nbytes += expected["size"]
    modules = _check_loads(d, man)
    out = {"shards": len(man["shards"]), "tensors": tensors, "bytes": nbytes, "quantized_modules": modules,
           "model_loaded": False}
    if load_model:
        import dsq

        dsq.load(d)
        out["model_loaded"] = True
    return out
