"""Quantized checkpoints: ``dsq.save``, ``dsq.load`` and ``inspect``.

Formats (one module each): ``"compressed-tensors"`` (:mod:`dsq.checkpoint.compressed_tensors`; vLLM,
SGLang, transformers) and ``"ascend"`` (:mod:`dsq.checkpoint.msmodelslim`; msModelSlim layout for
vllm-ascend). Both write safetensors shards (+ index) with per-expert names, a ``config.json``, files carried
over from the model's source folder (tokenizer, generation config), and ``dsq_quantization.json``: the exact
dsq scheme of every quantized module (fields a format cannot express, e.g. ``act_rounding``), the recipe,
backend and calibration report. ``dsq.load`` prefers that file and otherwise infers schemes from the
format's own metadata, so checkpoints written by llm-compressor or msModelSlim load too.

Saving is atomic (:mod:`dsq.checkpoint.atomic`): everything is written into a hidden sibling directory that
is renamed to the target at the end.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from dsq.errors import CheckpointError, UnknownNameError
from dsq.schemes import QuantScheme

from . import compressed_tensors as ct
from . import msmodelslim as ms
from .atomic import atomic_directory
from .shards import DEFAULT_SHARD_BYTES, TensorReader, write_shards
from .summary import inspect

__all__ = ["save", "load", "inspect", "preflight", "FORMATS", "SIDECAR"]

FORMATS = (ct.FORMAT_NAME, ms.FORMAT_NAME)
SIDECAR = "dsq_quantization.json"
#: files of a source model folder that are not carried over (weights and what dsq writes itself)
_SKIP_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".index.json")
_SKIP_NAMES = {"config.json", SIDECAR, ms.DESCRIPTION}


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        return repr(obj)


def _source_dir(model: nn.Module) -> Path | None:
    path = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return Path(path) if path and Path(path).is_dir() else None


def _carry_files(src: Path | None, dst: Path) -> list[str]:
    if src is None:
        return []
    copied = []
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name not in _SKIP_NAMES and not p.name.endswith(_SKIP_SUFFIXES):
            shutil.copy2(p, dst / p.name)
            copied.append(p.name)
    return copied


def preflight(schemes: dict[str, QuantScheme], format: str, dtype: torch.dtype) -> None:
    """Raise now (before quantizing) if ``format`` cannot store one of the planned module schemes."""
    if format not in FORMATS:
        raise UnknownNameError("checkpoint format", format, list(FORMATS))
    for name, scheme in schemes.items():
        if format == ct.FORMAT_NAME:
            ct.check_scheme(name, scheme, dtype)
        else:
            ms.ascend_type(scheme, name)


def save(model: nn.Module, directory, format: str = "compressed-tensors", overwrite: bool = False,
         max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = False) -> Path:
    """Write a dsq-quantized model as a checkpoint directory; returns its path.

    Args:
        model: a model quantized by :func:`dsq.quantize` (or loaded by :func:`load`).
        directory: output directory; refused if it exists unless ``overwrite=True``.
        format: ``"compressed-tensors"`` or ``"ascend"``.
        max_shard_bytes: largest safetensors shard.
        progress: show a progress bar over modules.
    Raises CheckpointError (format cannot store a module exactly, existing directory) or UnsupportedError
    (scheme without an on-disk form in this format), before anything is written at the target.
    """
    from dsq.adapters import get_adapter

    from .model_io import collect, model_dtype

    adapter = get_adapter(model)
    dtype = model_dtype(model)
    col = collect(model)
    preflight({e.name: e.scheme for e in col.entries}, format, dtype)
    tensors: dict[str, torch.Tensor] = {}
    stored: dict[str, QuantScheme] = {}
    bar = _bar(progress, len(col.entries), f"writing {format}")
    if format == ct.FORMAT_NAME:
        entries = [ct.storable_entry(e) for e in col.entries]
        converted = sum(e.scheme.two_level for e in col.entries)
        if converted:
            warnings.warn(f"{converted} W4A8_DYNAMIC modules are written as the W8A8_DYNAMIC layers they equal "
                          "(int8 on disk): compressed-tensors has no two-level int4 form; save format='ascend' "
                          "to keep them 4-bit", stacklevel=2)
        for e in entries:
            ct.check_scheme(e.name, e.scheme, dtype)
            tensors.update(ct.entry_tensors(e))
            stored[e.name] = e.scheme
            bar.update(1)
        tensors.update(col.floats)
        qconfig = ct.quantization_config(entries, col.ignore)
        description = None
    else:
        types: dict[str, str] = {}
        groups = set()
        for e in col.entries:
            t, ty = ms.entry_tensors(e, dtype)
            tensors.update(t)
            types.update(ty)
            stored[e.name] = e.scheme
            if e.scheme.two_level:
                groups.add(e.scheme.group_size)
            bar.update(1)
        tensors.update(col.floats)
        types.update({k: "FLOAT" for k in col.floats})
        description = ms.description(types, groups)
        qconfig = None
    bar.close()
    config = model.config.to_dict() if hasattr(model, "config") else {}
    config.pop("quantization_config", None)
    if qconfig is not None:
        config["quantization_config"] = qconfig
    info = getattr(model, "dsq_info", {}) or {}
    sidecar = {
        "format": format, "dtype": str(dtype).removeprefix("torch."),
        "linears": {n: stored[n].to_dict() for n in col.linears},
        "experts": {n: {"scheme": stored[adapter.expert_names(n, e)[0]["gate"]].to_dict(), "num_experts": e}
                    for n, (_, e) in col.experts.items()},
        "recipe": _jsonable(info.get("recipe")), "backend": _jsonable(info.get("backend")),
        "calibration": _jsonable(info.get("calibration")),
    }
    prefix = "model" if format == ct.FORMAT_NAME else "quant_model_weights"
    with atomic_directory(directory, overwrite) as tmp:
        write_shards(tensors, tmp, prefix=prefix, max_shard_bytes=max_shard_bytes)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
        if description is not None:
            (tmp / ms.DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        _carry_files(_source_dir(model), tmp)
    return Path(directory)


def _bar(enabled: bool, total: int, desc: str):
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="module")

    class _Null:
        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    return _Null()


def detect_format(directory: Path) -> str:
    """``"ascend"`` when quant_model_description.json exists, else ``"compressed-tensors"``."""
    if (directory / ms.DESCRIPTION).is_file():
        return ms.FORMAT_NAME
    cfg = _read_json(directory / "config.json")
    if (cfg.get("quantization_config") or {}).get("quant_method") == "compressed-tensors":
        return ct.FORMAT_NAME
    raise CheckpointError(f"{directory} is neither a compressed-tensors checkpoint (config.json quantization_config) "
                          f"nor an msModelSlim one ({ms.DESCRIPTION})")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc


def load(directory, backend: str = "cpu", progress: bool = False) -> nn.Module:
    """Rebuild a runnable quantized model from a checkpoint written by :func:`save` (or by llm-compressor /
    msModelSlim, schemes then inferred from their metadata), with its quantized modules on ``backend``."""
    from .model_io import DTYPES, build_skeleton, populate
    from .schemes_io import schemes_for

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    fmt = detect_format(directory)
    reader = TensorReader(directory)
    sidecar = _read_json(directory / SIDECAR) if (directory / SIDECAR).is_file() else None
    cfg = _read_json(directory / "config.json")
    dtype_name = (sidecar or {}).get("dtype") or cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    if dtype_name not in DTYPES:
        raise CheckpointError(f"{directory / 'config.json'}: unsupported model dtype {dtype_name!r}")
    dtype = DTYPES[dtype_name]
    model = build_skeleton(directory, dtype)
    desc = _read_json(directory / ms.DESCRIPTION) if fmt == ms.FORMAT_NAME else None
    linears, experts = schemes_for(fmt, model, reader, sidecar, cfg, desc)
    if fmt == ct.FORMAT_NAME:
        def read_entry(name, scheme, n, k):
            return ct.read_entry(name, reader.get, scheme, n, k)
    else:
        def read_entry(name, scheme, n, k):
            return ms.read_entry(name, reader.get, reader.__contains__, scheme, n, k)
    bar = _bar(progress, len(linears) + len(experts), "loading")
    populate(model, linears, experts, read_entry, reader, backend, dtype, bar)
    bar.close()
    model.dsq_info = {
        "recipe": (sidecar or {}).get("recipe"), "backend": backend, "calibration": (sidecar or {}).get("calibration"),
        "modules": {**{n: s.to_dict() for n, s in linears.items()}, **{n: s.to_dict() for n, s in experts.items()}},
        "checkpoint": {"path": str(directory), "format": fmt},
    }
    return model
