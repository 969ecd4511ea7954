"""Summarise a quantized checkpoint without building the model: format, schemes, bytes, tensors.

Reads only JSON files and safetensors headers. A tensor belongs to module ``key.rsplit(".", 1)[0]``; the
module's scheme comes from ``dsq_quantization.json`` (experts: every tensor under the fused block's name),
else from msModelSlim's description type, else (compressed-tensors from other tools) modules with a
``weight_scale`` count as ``quantized``. Everything else is ``float``.
"""

from __future__ import annotations

import json
from pathlib import Path

from dsq.errors import CheckpointError

from .shards import TensorReader

__all__ = ["inspect", "format_summary"]

_ITEMSIZE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1}


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc


def inspect(directory) -> dict:
    """A JSON-friendly summary of the checkpoint in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    sidecar = _json(directory / "dsq_quantization.json") or {}
    desc = _json(directory / "quant_model_description.json")
    config = _json(directory / "config.json") or {}
    qcfg = config.get("quantization_config")
    fmt = sidecar.get("format") or ("ascend" if desc is not None else
                                    "compressed-tensors" if qcfg else "unknown")
    module_scheme: dict[str, str] = {n: d.get("name", "?") for n, d in sidecar.get("linears", {}).items()}
    expert_scheme = {n: v["scheme"].get("name", "?") for n, v in sidecar.get("experts", {}).items()}
    reader = TensorReader(directory)
    keys = reader.keys()
    if not sidecar:
        if desc is not None:
            module_scheme = {k[: -len(".weight")]: t for k, t in desc.items()
                             if k.endswith(".weight") and isinstance(t, str) and t != "FLOAT"}
        else:
            module_scheme = {k[: -len(".weight_scale")]: "quantized" for k in keys if k.endswith(".weight_scale")}
    schemes: dict[str, dict] = {}
    modules: dict[str, set] = {}
    total = 0
    for key in keys:
        shape, dt = reader.metadata(key)
        nbytes = _ITEMSIZE.get(dt, 0)
        for d in shape:
            nbytes *= d
        total += nbytes
        module = key.rsplit(".", 1)[0]
        label = module_scheme.get(module)
        if label is None:
            label = next((s for f, s in expert_scheme.items() if key.startswith(f + ".")), "float")
        slot = schemes.setdefault(label, {"modules": 0, "tensors": 0, "bytes": 0})
        slot["tensors"] += 1
        slot["bytes"] += nbytes
        modules.setdefault(label, set()).add(module)
    for label, mods in modules.items():
        schemes[label]["modules"] = len(mods) if label != "float" else 0
    files = [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(directory.iterdir()) if p.is_file()]
    return {
        "path": str(directory), "format": fmt, "dtype": sidecar.get("dtype") or config.get("dtype") or config.get("torch_dtype"),
        "model_type": config.get("model_type"), "num_tensors": len(keys), "tensor_bytes": total,
        "schemes": dict(sorted(schemes.items())), "files": files,
        "recipe": (sidecar.get("recipe") or {}).get("name") if isinstance(sidecar.get("recipe"), dict)
        else sidecar.get("recipe"),
        "model_quant_type": (desc or {}).get("model_quant_type"),
        "ct_format": (qcfg or {}).get("format"),
    }


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def format_summary(s: dict) -> str:
    """The summary as a short table a person reads."""
    lines = [f"checkpoint {s['path']}", f"  format: {s['format']}"
             + (f" ({s['ct_format']})" if s.get("ct_format") else "")
             + (f", model_quant_type {s['model_quant_type']}" if s.get("model_quant_type") else ""),
             f"  model: {s['model_type']}  dtype: {s['dtype']}  recipe: {s.get('recipe')}",
             f"  tensors: {s['num_tensors']}  bytes: {_human(s['tensor_bytes'])}", "",
             f"  {'scheme':<16}{'modules':>9}{'tensors':>9}{'bytes':>14}"]
    for label, v in s["schemes"].items():
        mods = "-" if label == "float" else str(v["modules"])
        lines.append(f"  {label:<16}{mods:>9}{v['tensors']:>9}{_human(v['bytes']):>14}")
    lines += ["", "  files:"] + [f"    {f['name']}  {_human(f['bytes'])}" for f in s["files"]]
    return "\n".join(lines)
