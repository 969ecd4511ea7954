"""compressed-tensors on disk (vLLM, SGLang, transformers): tensors per module and ``quantization_config``.

Per quantized module ``<m>`` (see /work/shared/reference/formats.md section 1):

* ``pack-quantized`` (every int4 scheme incl. W4AFP8, which vLLM only loads packed, and W8A16):
  ``<m>.weight_packed`` int32 ``[N, ceil(K*b/32)]`` (dsq's canonical words: code + 2^(b-1), element i of a
  word in bits b*i..), ``<m>.weight_scale``, ``<m>.weight_shape`` int64 ``[2]``, and for asymmetric weights
  ``<m>.weight_zero_point`` int32 packed along N.
* ``int-quantized`` (int8 weights with int8 activations: W8A8, W8A8_DYNAMIC): ``<m>.weight`` int8 ``[N, K]``,
  ``<m>.weight_scale`` ``[N, 1]``; static activations add ``<m>.input_scale`` float32 ``[1]`` and
  ``<m>.input_zero_point`` int8 ``[1]`` (q = round(x / input_scale + input_zero_point)).
* ``float-quantized`` (FP8_BLOCK): ``<m>.weight`` float8_e4m3fn, ``<m>.weight_scale`` ``[ceil(N/bn), ceil(K/bk)]``.

Scale dtype. compressed-tensors keeps ``weight_scale`` in the model's dtype: it creates the parameter with
the weight's dtype (``initialize_qparams``) and vLLM does the same, so a float32 scale written into a bf16
model is silently rounded to bf16 on load and the weights no longer dequantize to what dsq computed. dsq
rounds the scale to ``scheme.scale_dtype`` *before* it quantizes the weight, so the bits agree only when the
scheme's ``scale_dtype`` equals the model dtype. :func:`check_entry` therefore refuses a scheme whose
``scale_dtype`` differs from the model dtype, and says how to fix it: quantize with
``scheme.replace(scale_dtype="bfloat16")`` (or the recipe's equivalent) for a bf16 model, or save
``format="ascend"``, which stores float32 scales. ``input_scale`` is written float32 as dsq computed it.

W4A8_DYNAMIC (two-level int4 with integer group scales) has no compressed-tensors form. It is written as
the W8A8_DYNAMIC layer it is exactly equal to: ``weight`` = the int8 ``q4 * s2`` that kernels rebuild
(within [-119, 119]) with the level-1 channel scale ``s1``; dequantized values, activations and outputs are
identical, and vLLM runs it as int8 W8A8. ``dsq.load`` brings it back as W8A8_DYNAMIC (the level-2 split
cannot be recovered from the product). Other dsq-only details that compressed-tensors cannot express
(``scale_rule``, ``act_rounding``) are kept in ``dsq_quantization.json`` for dsq itself.
"""

from __future__ import annotations

import json
import re

import torch

from dsq.errors import CheckpointError
from dsq.qtypes import PackedWeight, weight_tensor_name
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme, get_scheme

from .bits import unpack_words
from .entries import QuantEntry

__all__ = ["FORMAT_NAME", "storable_entry", "check_scheme", "ct_format", "ct_args", "entry_tensors",
           "quantization_config", "read_entry", "infer_schemes"]

FORMAT_NAME = "compressed-tensors"

_TORCH_DTYPE_NAME = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _expand_groups(s: torch.Tensor, group: int, k: int) -> torch.Tensor:
    return s.repeat_interleave(group, dim=-1)[..., :k]


def storable_entry(entry: QuantEntry) -> QuantEntry:
    """The entry compressed-tensors can store: W4A8_DYNAMIC becomes its exact W8A8_DYNAMIC equivalent."""
    s = entry.scheme
    if not s.two_level:
        return entry
    n, k = entry.packed.shape[-2:]
    q4 = unpack_words(entry.packed["weight_packed"], 4, k).to(torch.int16)
    s2 = _expand_groups(entry.packed["weight_group_scale"].to(torch.int16), s.group_size, k)
    q8 = (q4 * s2).to(torch.int8)  # |q4 * s2| <= 7 * 17 = 119: exact in int8
    scheme = get_scheme("W8A8_DYNAMIC").replace(scale_dtype=s.scale_dtype, scale_rule=s.scale_rule)
    tensors = {"weight": q8, "weight_scale": entry.packed["weight_scale"].clone(),
               "weight_shape": torch.tensor([n, k], dtype=torch.int64)}
    return QuantEntry(entry.name, scheme, PackedWeight(scheme.name, (n, k), tensors), entry.bias)


def check_scheme(name: str, s: QuantScheme, model_dtype: torch.dtype) -> None:
    """Raise CheckpointError unless compressed-tensors can store module ``name`` bit-exactly in a model of
    this dtype."""
    want = _TORCH_DTYPE_NAME.get(model_dtype)
    if want is None:
        raise CheckpointError(f"model dtype {model_dtype} is not float32/bfloat16/float16")
    if s.scale_dtype != want:
        raise CheckpointError(
            f"module {name}: scheme {s.name} has scale_dtype={s.scale_dtype}, but compressed-tensors stores "
            f"weight scales in the model dtype ({want}) and loaders would round them; quantize with "
            f"scale_dtype='{want}' (e.g. get_scheme('{s.name}').replace(scale_dtype='{want}')) or save "
            "format='ascend'")
    if not s.weight_symmetric and weight_tensor_name(s) != "weight_packed":
        raise CheckpointError(f"module {name}: asymmetric unpacked weights ({s.name}) are not supported")


def ct_format(scheme: QuantScheme) -> str:
    """pack-quantized for packed int weights, int-quantized for int8 with activations, float-quantized for FP8."""
    if weight_tensor_name(scheme) == "weight_packed":
        return "pack-quantized"
    return "float-quantized" if scheme.weight_dtype is QType.FP8_E4M3 else "int-quantized"


def ct_args(scheme: QuantScheme) -> dict:
    """``weights`` and ``input_activations`` QuantizationArgs of a scheme (JSON form)."""
    wt = "float" if scheme.weight_dtype is QType.FP8_E4M3 else "int"
    w: dict = {"num_bits": scheme.weight_bits, "type": wt, "symmetric": scheme.weight_symmetric,
               "dynamic": False, "actorder": None, "observer": "minmax"}
    if scheme.weight_granularity is Granularity.GROUP:
        w.update(strategy="group", group_size=scheme.group_size)
    elif scheme.weight_granularity is Granularity.CHANNEL:
        w.update(strategy="channel", group_size=None)
    else:
        w.update(strategy="block", group_size=None, block_structure=list(scheme.block_size))
    a = None
    if scheme.act_dtype is not None:
        at = "float" if scheme.act_dtype is QType.FP8_E4M3 else "int"
        a = {"num_bits": 8, "type": at, "symmetric": scheme.act_symmetric}
        if scheme.act_granularity is ActGranularity.TENSOR:
            a.update(strategy="tensor", dynamic=False, observer="minmax")
        elif scheme.act_granularity is ActGranularity.TOKEN:
            a.update(strategy="token", dynamic=True, observer=None)
        else:
            a.update(strategy="group", group_size=scheme.act_group_size, dynamic=True, observer=None)
    return {"weights": w, "input_activations": a, "output_activations": None, "format": ct_format(scheme)}


def entry_tensors(entry: QuantEntry) -> dict[str, torch.Tensor]:
    """On-disk tensors of one module, by full name."""
    p, s, m = entry.packed, entry.scheme, entry.name
    out: dict[str, torch.Tensor] = {}
    if ct_format(s) == "pack-quantized":
        out[f"{m}.weight_packed"] = p["weight_packed"]
        out[f"{m}.weight_scale"] = p["weight_scale"]
        out[f"{m}.weight_shape"] = p["weight_shape"].to(torch.int64)
        if "weight_zero_point" in p:
            out[f"{m}.weight_zero_point"] = p["weight_zero_point"].to(torch.int32)
    else:
        out[f"{m}.weight"] = p["weight"]
        out[f"{m}.weight_scale"] = p["weight_scale"]
    if "input_scale" in p:
        out[f"{m}.input_scale"] = p["input_scale"].to(torch.float32).reshape(1)
    if "input_zero_point" in p:
        out[f"{m}.input_zero_point"] = p["input_zero_point"].to(torch.int8).reshape(1)
    if entry.bias is not None:
        out[f"{m}.bias"] = entry.bias
    return out


def _targets(names: list[str]) -> list[str]:
    """Exact names, with each layer's per-expert projections folded into one ``re:`` target.

    transformers picks the experts' scheme from the group whose ``re:`` target mentions ``experts``.
    """
    out, folded = [], set()
    for name in names:
        m = re.fullmatch(r"(.*\.experts)\.\d+\.(\w+)", name)
        if m is None:
            out.append(name)
            continue
        if m.group(1) not in folded:
            folded.add(m.group(1))
            projs = sorted({re.fullmatch(r".*\.\d+\.(\w+)", n).group(1)
                            for n in names if n.startswith(m.group(1) + ".")})
            out.append(f"re:{re.escape(m.group(1))}\\.\\d+\\.(?:{'|'.join(projs)})$")
    return out


def quantization_config(entries: list[QuantEntry], ignore: list[str]) -> dict:
    """config.json ``quantization_config``: one config group per distinct compressed-tensors scheme.

    One group: ``targets: ["Linear"]`` plus the ignore list (what llm-compressor writes; vLLM and transformers
    match it best). Several groups: exact module names, experts folded into ``re:`` targets.
    """
    groups: dict[str, tuple[dict, list[str]]] = {}
    for e in entries:
        args = ct_args(e.scheme)
        groups.setdefault(json.dumps(args, sort_keys=True), (args, []))[1].append(e.name)
    config_groups = {}
    for i, (args, names) in enumerate(groups.values()):
        targets = ["Linear"] if len(groups) == 1 else _targets(names)
        config_groups[f"group_{i}"] = {"targets": targets, **args}
    formats = {g["format"] for g in config_groups.values()}
    return {
        "quant_method": "compressed-tensors",
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": sorted(ignore),
        "kv_cache_scheme": None,
    }


# -- reading ------------------------------------------------------------------------------------------

def _expect(name: str, t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
    if tuple(t.shape) != tuple(shape):
        raise CheckpointError(f"tensor {name} has shape {tuple(t.shape)}; expected {tuple(shape)}")
    if dtype is not None and t.dtype != dtype:
        raise CheckpointError(f"tensor {name} has dtype {t.dtype}; expected {dtype}")
    return t


def read_entry(name: str, get, scheme: QuantScheme, n: int, k: int) -> PackedWeight:
    """Canonical PackedWeight of module ``name`` ([n, k]) from its on-disk tensors (``get(full_name)``)."""
    s = scheme
    scale_dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[s.scale_dtype]
    t: dict[str, torch.Tensor] = {}
    if ct_format(s) == "pack-quantized":
        b = s.weight_bits
        t["weight_packed"] = _expect(f"{name}.weight_packed", get(f"{name}.weight_packed"),
                                     (n, -(-k * b // 32)), torch.int32)
        shape = get(f"{name}.weight_shape")
        if shape.numel() != 2 or [int(v) for v in shape] != [n, k]:
            raise CheckpointError(f"tensor {name}.weight_shape is {shape.tolist()}; the model expects [{n}, {k}]")
        if not s.weight_symmetric:
            t["weight_zero_point"] = _expect(f"{name}.weight_zero_point", get(f"{name}.weight_zero_point"),
                                             (-(-n * b // 32), s.scale_shape(n, k)[1]), torch.int32)
    else:
        wdt = torch.float8_e4m3fn if s.weight_dtype is QType.FP8_E4M3 else torch.int8
        t["weight"] = _expect(f"{name}.weight", get(f"{name}.weight"), (n, k), wdt)
    t["weight_scale"] = _expect(f"{name}.weight_scale", get(f"{name}.weight_scale"), s.scale_shape(n, k), scale_dt)
    if s.static_activations:
        t["input_scale"] = _expect(f"{name}.input_scale", get(f"{name}.input_scale"), (1,)).to(torch.float32)
        if not s.act_symmetric:
            t["input_zero_point"] = _expect(f"{name}.input_zero_point", get(f"{name}.input_zero_point"),
                                            (1,)).to(torch.int8)
    t["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    if "weight_packed" in t and s.weight_bits == 4:
        unpack_words(t["weight_packed"], 4, k)  # validates the row width
    return PackedWeight(s.name, (n, k), t)


def _scheme_from_args(group: dict, scale_dtype: str) -> QuantScheme:
    """dsq scheme for one compressed-tensors config group (checkpoints written by other tools)."""
    w, a = group.get("weights") or {}, group.get("input_activations")
    bits, wtype, strat = w.get("num_bits"), w.get("type", "int"), w.get("strategy")
    atype = None if a is None else (a.get("type", "int"), a.get("strategy"), bool(a.get("dynamic")))
    if wtype == "float" and bits == 8 and strat == "block" and atype == ("float", "group", True):
        return get_scheme("FP8_BLOCK", block_size=tuple(w["block_structure"]), scale_dtype=scale_dtype,
                          act_group_size=a.get("group_size") or 128)
    if wtype == "int" and bits == 4 and strat == "group":
        if atype is None:
            name = "W4A16" if w.get("symmetric", True) else "W4A16_ASYM"
            return get_scheme(name, group_size=w["group_size"], scale_dtype=scale_dtype)
        if atype == ("float", "token", True):
            return get_scheme("W4AFP8", group_size=w["group_size"], scale_dtype=scale_dtype)
    if wtype == "int" and bits == 8 and strat == "channel" and w.get("symmetric", True):
        if atype is None:
            return get_scheme("W8A16", scale_dtype=scale_dtype)
        if atype == ("int", "token", True):
            return get_scheme("W8A8_DYNAMIC", scale_dtype=scale_dtype)
        if atype == ("int", "tensor", False):
            return get_scheme("W8A8", scale_dtype=scale_dtype, act_symmetric=bool(a.get("symmetric")))
    raise CheckpointError(f"compressed-tensors config group {json.dumps(group)} has no dsq scheme equivalent")


def _matches(target: str, name: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    return target == name or target == "Linear"


def infer_schemes(qcfg: dict, module_names: list[str], scale_dtypes: dict[str, str]) -> dict[str, QuantScheme]:
    """Scheme of each quantized module from ``quantization_config`` (first matching group, as vLLM does)."""
    out = {}
    groups = list((qcfg.get("config_groups") or {}).values())
    for name in module_names:
        group = next((g for g in groups if any(_matches(t, name) for t in g.get("targets", []))), None)
        if group is None:
            raise CheckpointError(f"module {name} has quantized tensors but no quantization_config group targets it")
        out[name] = _scheme_from_args(group, scale_dtypes[name])
    return out
