"""msModelSlim ("ascend") on disk, the layout vllm-ascend loads (formats.md section 2).

Files: ``quant_model_weights*.safetensors`` (+ index), ``quant_model_description.json`` and ``config.json``
without ``quantization_config``. The description maps every tensor name to its type (``"W8A8"``,
``"W8A8_DYNAMIC"``, ``"W8A16"``, ``"W4A8_DYNAMIC"``, ``"FLOAT"``) and carries ``model_quant_type``,
``version`` ("1.0.0") and ``group_size``.

Tensors per module ``<m>`` ([N, K] weight; q = integer codes; all scales float32 so dsq's values are exact):

* W8A8 (static, per-tensor asymmetric int8 activations ``xq = round(x / input_scale + input_offset)``):
  ``weight`` int8 [N, K]; ``input_scale`` [1]; ``input_offset`` [1] (dsq's zero point, as float);
  ``deq_scale`` [N] = fp32(input_scale * weight_scale), float32 for bf16/fp32 models and, for fp16 models,
  the float32 bit pattern read as int32 and widened to int64; ``quant_bias`` int32 [N] =
  rint(bias / deq_scale - input_offset * sum_k q[n, k]) (half to even; bias 0 when the layer has none);
  plus ``weight_scale`` [N, 1] and ``weight_offset`` zeros [N, 1] that vllm-ascend also declares.
* W8A8_DYNAMIC and W8A16: ``weight`` int8 [N, K]; ``weight_scale`` [N, 1]; ``weight_offset`` zeros [N, 1].
* W4A8_DYNAMIC, "version 1.0.0" packing: ``weight`` int8 [N/2, K] holding two int4 codes per byte along the
  OUTPUT dim (``byte = (q[2j+1] << 4) | (q[2j] & 0xF)``); ``weight_scale`` = dsq's level-1 scale s1 [N, 1];
  ``weight_offset`` zeros [N, 1]; ``scale_bias`` = 8 * sum_k q4 * s2 * s1 over the row, [N, 1], or over 16
  equal K chunks [N, 16] for ``down_proj``/``o_proj`` (vllm-ascend sums the chunks of its TP rank).
  dsq's integer level-2 group scales s2 (W = q4 * s2 * s1) are written as msModelSlim's two-stage names
  ``weight_scale_second`` float32 [N, K/G] (integers 1..17) and ``weight_offset_second`` zeros, with
  ``group_size`` = G in the description. vllm-ascend's current W4A8 loader is per-channel only (it rejects
  group_size > 0); the device layout for per-group scales is the ascend backend's (backends/dsq_ascend).
  Reading a per-channel msModelSlim checkpoint (no ``weight_scale_second``) gives s2 = 1 with G = K.

Other schemes (W4A16, W4A16_ASYM, W4AFP8, FP8_BLOCK) have no msModelSlim form here: :func:`ascend_type`
raises :class:`~dsq.errors.UnsupportedError` naming the module.
"""

from __future__ import annotations

import torch

from dsq.errors import CheckpointError, UnsupportedError
from dsq.qtypes import PackedWeight
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme, RoundMode, ScaleRule, get_scheme

from .bits import pack_int4_pairs, pack_words, unpack_int4_pairs, unpack_words
from .entries import QuantEntry

__all__ = ["FORMAT_NAME", "DESCRIPTION", "ascend_type", "entry_tensors", "description", "read_entry",
           "infer_scheme", "SUPPORTED"]

FORMAT_NAME = "ascend"
DESCRIPTION = "quant_model_description.json"
VERSION = "1.0.0"
SUPPORTED = ("W8A8", "W8A8_DYNAMIC", "W8A16", "W4A8_DYNAMIC")
#: model_quant_type is the first of these present (W4A8_DYNAMIC only when nothing else is quantized)
_PRIORITY = ("W8A8", "W8A8_DYNAMIC", "W8A16", "W4A8_DYNAMIC")
#: projections whose scale_bias msModelSlim stores per K chunk ([out, 16], tensor parallel up to 16)
CHUNKED_SCALE_BIAS = ("down_proj", "o_proj")
SCALE_BIAS_CHUNKS = 16


def ascend_type(scheme: QuantScheme, module: str) -> str:
    """msModelSlim type of a dsq scheme, decided by its numerics (not its name)."""
    s = scheme
    int8_channel = (s.weight_dtype is QType.INT8 and s.weight_granularity is Granularity.CHANNEL
                    and s.weight_symmetric and not s.two_level)
    if int8_channel and s.act_dtype is None:
        return "W8A16"
    if int8_channel and s.act_dtype is QType.INT8 and s.act_granularity is ActGranularity.TENSOR:
        return "W8A8"
    if int8_channel and s.act_dtype is QType.INT8 and s.act_granularity is ActGranularity.TOKEN:
        return "W8A8_DYNAMIC"
    if s.two_level and s.act_dtype is QType.INT8 and s.act_granularity is ActGranularity.TOKEN:
        return "W4A8_DYNAMIC"
    raise UnsupportedError(
        f"module {module}: scheme {s.name} ({s.describe()}) has no msModelSlim/ascend on-disk form; supported: "
        f"{', '.join(SUPPORTED)}. Save it with format='compressed-tensors' or choose an ascend recipe")


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


def _scale_bias(name: str, deq_w: torch.Tensor) -> torch.Tensor:
    """8 * row sums of the dequantized weight (float64 sums of exact products, rounded once to float32)."""
    n, k = deq_w.shape
    if name.rsplit(".", 1)[-1] in CHUNKED_SCALE_BIAS:
        if k % SCALE_BIAS_CHUNKS:
            raise CheckpointError(f"module {name}: scale_bias splits K={k} into {SCALE_BIAS_CHUNKS} chunks; "
                                  f"K must be a multiple of {SCALE_BIAS_CHUNKS}")
        return (8 * deq_w.reshape(n, SCALE_BIAS_CHUNKS, -1).sum(-1)).to(torch.float32)
    return (8 * deq_w.sum(-1, keepdim=True)).to(torch.float32)


def entry_tensors(entry: QuantEntry, model_dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors by full name, description type by full name) for one module."""
    s, p, m = entry.scheme, entry.packed, entry.name
    typ = ascend_type(s, m)
    n, k = p.shape[-2:]
    s1 = _f32(p["weight_scale"]).reshape(n, 1)
    t: dict[str, torch.Tensor] = {}
    if typ == "W4A8_DYNAMIC":
        q4 = unpack_words(p["weight_packed"], 4, k)
        s2 = p["weight_group_scale"].to(torch.float32)
        t[f"{m}.weight"] = pack_int4_pairs(q4)
        t[f"{m}.weight_scale"] = s1
        t[f"{m}.weight_offset"] = torch.zeros_like(s1)
        t[f"{m}.weight_scale_second"] = s2
        t[f"{m}.weight_offset_second"] = torch.zeros_like(s2)
        s2_full = s2.to(torch.float64).repeat_interleave(s.group_size, dim=-1)[:, :k]
        t[f"{m}.scale_bias"] = _scale_bias(m, q4.to(torch.float64) * s2_full * s1.to(torch.float64))
    else:
        q = unpack_words(p["weight_packed"], 8, k) if typ == "W8A16" else p["weight"]
        t[f"{m}.weight"] = q.to(torch.int8)
        t[f"{m}.weight_scale"] = s1
        t[f"{m}.weight_offset"] = torch.zeros_like(s1)
    if typ == "W8A8":
        in_scale = _f32(p["input_scale"]).reshape(1)
        zp = p["input_zero_point"] if "input_zero_point" in p else torch.zeros(1, dtype=torch.int8)
        in_off = _f32(zp).reshape(1)
        deq = (in_scale * s1.reshape(n)).to(torch.float32)  # one float32 rounding of the product
        bias = torch.zeros(n, dtype=torch.float64) if entry.bias is None else entry.bias.to(torch.float64)
        rowsum = t[f"{m}.weight"].to(torch.int64).sum(-1).to(torch.float64)
        qb = torch.round(bias / deq.to(torch.float64) - in_off.to(torch.float64) * rowsum)
        t[f"{m}.input_scale"] = in_scale
        t[f"{m}.input_offset"] = in_off
        t[f"{m}.deq_scale"] = deq.view(torch.int32).to(torch.int64) if model_dtype == torch.float16 else deq
        t[f"{m}.quant_bias"] = qb.to(torch.int32)
    types = {name: typ for name in t}
    if entry.bias is not None:
        t[f"{m}.bias"] = entry.bias
        types[f"{m}.bias"] = "FLOAT"
    return t, types


def description(types: dict[str, str], group_sizes: set[int]) -> dict:
    """quant_model_description.json: global keys plus every tensor's type."""
    if len(group_sizes) > 1:
        raise CheckpointError(f"msModelSlim stores one group_size per model; W4A8_DYNAMIC modules use {sorted(group_sizes)}")
    present = set(types.values())
    mqt = next((q for q in _PRIORITY if q in present), "FLOAT")
    return {"model_quant_type": mqt, "version": VERSION, "group_size": next(iter(group_sizes), 0), **types}


# -- reading ------------------------------------------------------------------------------------------

def _expect(name: str, t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
    if tuple(t.shape) != tuple(shape):
        raise CheckpointError(f"tensor {name} has shape {tuple(t.shape)}; expected {tuple(shape)}")
    if dtype is not None and t.dtype != dtype:
        raise CheckpointError(f"tensor {name} has dtype {t.dtype}; expected {dtype}")
    return t


def infer_scheme(typ: str, module: str, n: int, k: int, get, has) -> QuantScheme:
    """dsq scheme for an msModelSlim type (checkpoints written by msModelSlim): its scale rule (amax/qmax)
    and, for W8A8, Ascend's half-away-from-zero activation rounding (npu_quantize)."""
    if typ == "W8A8":
        return get_scheme("W8A8", scale_rule=ScaleRule.QMAX, act_rounding=RoundMode.HALF_AWAY)
    if typ in ("W8A8_DYNAMIC", "W8A16"):
        return get_scheme(typ, scale_rule=ScaleRule.QMAX)
    if typ == "W4A8_DYNAMIC":
        second = f"{module}.weight_scale_second"
        g = k if not has(second) else -(-k // get(second).shape[-1])
        return get_scheme("W4A8_DYNAMIC", group_size=g, scale_rule=ScaleRule.QMAX)
    raise CheckpointError(f"module {module}: msModelSlim type {typ!r} is not supported; supported: {', '.join(SUPPORTED)}")


def read_entry(name: str, get, has, scheme: QuantScheme, n: int, k: int) -> PackedWeight:
    """Canonical PackedWeight of module ``name`` ([n, k]) from its msModelSlim tensors."""
    s = scheme
    typ = ascend_type(s, name)
    scale_dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[s.scale_dtype]
    s1 = _expect(f"{name}.weight_scale", get(f"{name}.weight_scale"), (n, 1))
    t: dict[str, torch.Tensor] = {}
    if typ == "W4A8_DYNAMIC":
        q4 = unpack_int4_pairs(_expect(f"{name}.weight", get(f"{name}.weight"), (n // 2, k), torch.int8))
        g = -(-k // s.group_size)
        if has(f"{name}.weight_scale_second"):
            s2 = _expect(f"{name}.weight_scale_second", get(f"{name}.weight_scale_second"), (n, g))
        else:
            s2 = torch.ones(n, g)
        if not torch.equal(s2, s2.round()) or s2.numel() and (float(s2.min()) < 1 or float(s2.max()) > 17):
            raise CheckpointError(f"tensor {name}.weight_scale_second must hold integers 1..17 (dsq two-level scales)")
        t["weight_packed"] = pack_words(q4, 4)
        t["weight_group_scale"] = s2.to(torch.int8)
    elif typ == "W8A16":
        t["weight_packed"] = pack_words(_expect(f"{name}.weight", get(f"{name}.weight"), (n, k), torch.int8), 8)
    else:
        t["weight"] = _expect(f"{name}.weight", get(f"{name}.weight"), (n, k), torch.int8)
    t["weight_scale"] = s1.to(scale_dt)
    if typ == "W8A8":
        t["input_scale"] = _expect(f"{name}.input_scale", get(f"{name}.input_scale"), (1,)).to(torch.float32)
        off = _expect(f"{name}.input_offset", get(f"{name}.input_offset"), (1,)).to(torch.float32)
        if float(off) != round(float(off)) or not -128 <= float(off) <= 127:
            raise CheckpointError(f"tensor {name}.input_offset is {float(off)}; expected an integer in [-128, 127]")
        if not s.act_symmetric:
            t["input_zero_point"] = off.to(torch.int8)
        elif float(off) != 0:
            raise CheckpointError(f"tensor {name}.input_offset is {float(off)} but the scheme is symmetric")
    t["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    return PackedWeight(s.name, (n, k), t)
