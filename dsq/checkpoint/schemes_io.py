"""Which module of a checkpoint is quantized with which dsq scheme.

dsq's own checkpoints carry ``dsq_quantization.json`` (``linears``: module name -> scheme dict; ``experts``:
fused expert-module name -> scheme dict and expert count), which is authoritative. Checkpoints from other
tools are read from their own metadata: compressed-tensors ``quantization_config`` groups (a module is
quantized when ``<m>.weight_scale`` exists; its scale dtype is the stored one), or msModelSlim's
description (a module is quantized when ``<m>.weight`` has a type other than ``FLOAT``). Per-expert names
are folded back into their fused block with the model's MoE adapter; all experts of a block share a scheme.
"""

from __future__ import annotations

from torch import nn

from dsq.adapters import get_adapter
from dsq.errors import CheckpointError
from dsq.schemes import QuantScheme

from . import compressed_tensors as ct
from . import msmodelslim as ms

__all__ = ["schemes_for"]

_ST_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def _from_sidecar(sidecar: dict) -> tuple[dict[str, QuantScheme], dict[str, QuantScheme]]:
    try:
        linears = {n: QuantScheme.from_dict(d) for n, d in sidecar.get("linears", {}).items()}
        experts = {n: QuantScheme.from_dict(v["scheme"]) for n, v in sidecar.get("experts", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"dsq_quantization.json has an invalid scheme entry ({exc})") from exc
    return linears, experts


def _fold_experts(model: nn.Module, per_module: dict[str, QuantScheme]):
    adapter = get_adapter(model)
    fused_names = list(adapter.find_experts(model))
    linears: dict[str, QuantScheme] = {}
    experts: dict[str, QuantScheme] = {}
    for name, scheme in per_module.items():
        hit = adapter.parse_expert_name(name, fused_names)
        if hit is None:
            linears[name] = scheme
            continue
        fused = hit[0]
        if fused in experts and experts[fused] != scheme:
            raise CheckpointError(f"experts of {fused} use different schemes ({experts[fused].name} and {scheme.name} "
                                  f"at {name}); dsq runs one scheme per fused expert block")
        experts[fused] = scheme
    return linears, experts


def schemes_for(fmt: str, model: nn.Module, reader, sidecar: dict | None, config: dict,
                description: dict | None) -> tuple[dict[str, QuantScheme], dict[str, QuantScheme]]:
    """(linear module name -> scheme, fused expert module name -> scheme)."""
    if sidecar is not None:
        if sidecar.get("format") not in (None, fmt):
            raise CheckpointError(f"dsq_quantization.json says format {sidecar.get('format')!r} but the files are {fmt}")
        return _from_sidecar(sidecar)
    per_module: dict[str, QuantScheme] = {}
    if fmt == ct.FORMAT_NAME:
        names = sorted(k[: -len(".weight_scale")] for k in reader.keys() if k.endswith(".weight_scale"))
        dtypes = {}
        for n in names:
            _, dt = reader.metadata(f"{n}.weight_scale")
            if dt not in _ST_DTYPE:
                raise CheckpointError(f"tensor {n}.weight_scale has dtype {dt}; expected F32, BF16 or F16")
            dtypes[n] = _ST_DTYPE[dt]
        per_module = ct.infer_schemes(config.get("quantization_config") or {}, names, dtypes)
    else:
        for key, typ in (description or {}).items():
            if not key.endswith(".weight") or not isinstance(typ, str) or typ == "FLOAT":
                continue
            name = key[: -len(".weight")]
            shape, _ = reader.metadata(key)
            n = shape[0] * (2 if typ == "W4A8_DYNAMIC" else 1)
            per_module[name] = ms.infer_scheme(typ, name, n, shape[1], reader.get, reader.__contains__)
    return _fold_experts(model, per_module)
