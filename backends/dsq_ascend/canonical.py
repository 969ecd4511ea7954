"""calibrate / pack / unpack / static-activation calibration in torch, bit-identical to the numpy reference.

The formulas are those of ``dsq/schemes.py`` (module docstring). They run on the HOST (CPU) in both modes:
they need IEEE float32 division and round-half-even exactly, which x86/ARM CPUs guarantee and which dsq
does not assume of NPU vector units; packing is a one-time offline cost, so nothing is lost. Every
function takes float32 weights ``[..., N, K]`` (bf16/fp16 widen exactly) and returns torch tensors.

    symmetric:  s = round_to(scale_dtype, max(amax / D, tiny)),  q = clip(rint(w / s), qmin, qmax)
    asymmetric: s = round_to(scale_dtype, max((hi - lo) / (qmax - qmin), tiny)), zp = clip(rint(qmin - lo / s)),
                q = clip(rint(w / s + zp))   (every operation float32, rint ties to even)
    two-level:  s1 as symmetric with D = 119, q8 = clip(rint(w / s1), +-119), s2 = max(1, ceil(max|q8| / 7))
                per group, q4 = rint(q8 / s2)
Canonical packing (dsq.qtypes): codes + 2^(b-1), 32/b per int32 word, element i in bits (i % (32/b)) * b.
"""

from __future__ import annotations

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight, QParams, weight_tensor_name
from dsq.schemes import Granularity, QType, QuantScheme

TWO_LEVEL_RANGE = 119
SCALE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def tiny(scale_dtype: str) -> float:
    """Smallest normal number of the scale dtype (float16: 2^-14, float32/bfloat16: 2^-126)."""
    return 2.0**-14 if scale_dtype == "float16" else 2.0**-126


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """Nearest integer, ties away from zero; ``v - trunc(v)`` is exact, so ties are detected exactly."""
    t = torch.trunc(v)
    return torch.where((v - t).abs() >= 0.5, t + torch.sign(v), t)


def round_scale(s: torch.Tensor, scale_dtype: str) -> torch.Tensor:
    """Round float32 scales to ``scale_dtype`` (ties to even); returned as float32 holding those values."""
    out = s.to(SCALE_DTYPES[scale_dtype]).to(torch.float32)
    if not torch.isfinite(out).all():
        raise QuantInputError(f"weight scale overflows {scale_dtype} (largest {float(s.max()):.4g}); "
                              "use a wider scale_dtype for weights this large")
    return out


def _pad_last(a: torch.Tensor, multiple: int) -> torch.Tensor:
    pad = (-a.shape[-1]) % multiple
    return torch.nn.functional.pad(a, (0, pad)) if pad else a


def _reduce(a: torch.Tensor, scheme: QuantScheme, fn) -> torch.Tensor:
    """``fn`` (amax / amin) over each scale group of [..., N, K] (zero padding never changes the result)."""
    if scheme.weight_granularity is Granularity.CHANNEL or scheme.two_level:
        return fn(a, dim=-1, keepdim=True)
    if scheme.weight_granularity is Granularity.GROUP:
        g = scheme.group_size
        p = _pad_last(a, g)
        return fn(p.reshape(*a.shape[:-1], -1, g), dim=-1)
    raise QuantInputError(f"{scheme.name}: block-scaled weights are not supported by the ascend backend")


def _expand(s: torch.Tensor, k: int, group: int | None) -> torch.Tensor:
    """Scale-shaped [..., N, G] -> [..., N, K]; ``group`` None means per-channel ([..., N, 1])."""
    return s if group is None else s.repeat_interleave(group, dim=-1)[..., :k]


def _group_of(scheme: QuantScheme) -> int | None:
    return scheme.group_size if scheme.weight_granularity is Granularity.GROUP and not scheme.two_level else None


def _sym_scale(amax: torch.Tensor, divisor: float, scheme: QuantScheme) -> torch.Tensor:
    return round_scale(torch.clamp_min(amax / divisor, tiny(scheme.scale_dtype)), scheme.scale_dtype)


def calibrate_weight(w: torch.Tensor, scheme: QuantScheme) -> QParams:
    """Weight parameters of float32 ``w`` [..., N, K] (scale in scheme.scale_dtype; zp / group scale int8)."""
    sd = SCALE_DTYPES[scheme.scale_dtype]
    if scheme.two_level:
        s1 = _sym_scale(_reduce(w.abs(), scheme, torch.amax), TWO_LEVEL_RANGE, scheme)
        q8 = torch.round(w / s1).clamp(-TWO_LEVEL_RANGE, TWO_LEVEL_RANGE)
        g = scheme.group_size
        amax8 = _pad_last(q8.abs(), g).reshape(*q8.shape[:-1], -1, g).amax(-1).to(torch.int64)
        s2 = torch.clamp_min(torch.div(amax8 + 6, 7, rounding_mode="floor"), 1).to(torch.int8)
        return QParams(weight_scale=s1.to(sd), weight_group_scale=s2)
    if scheme.weight_symmetric:
        return QParams(weight_scale=_sym_scale(_reduce(w.abs(), scheme, torch.amax), scheme.weight_divisor(),
                                               scheme).to(sd))
    qt = scheme.weight_dtype
    lo = torch.clamp_max(_reduce(w, scheme, torch.amin), 0.0)
    hi = torch.clamp_min(_reduce(w, scheme, torch.amax), 0.0)
    s = round_scale(torch.clamp_min((hi - lo) / float(qt.qmax - qt.qmin), tiny(scheme.scale_dtype)),
                    scheme.scale_dtype)
    zp = torch.round(float(qt.qmin) - lo / s).clamp(qt.qmin, qt.qmax)
    return QParams(weight_scale=s.to(sd), weight_zero_point=zp.to(torch.int8))


def calibrate_static_activation(lo: torch.Tensor, hi: torch.Tensor, scheme: QuantScheme):
    """input_scale (float32) and input_zero_point (int8, None if symmetric) from observed min / max [..., 1]."""
    lo = torch.clamp_max(lo.to(torch.float32), 0.0)
    hi = torch.clamp_min(hi.to(torch.float32), 0.0)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise QuantInputError("activation statistics are not finite (no calibration data seen?): "
                              f"min={lo.flatten()[:4].tolist()}, max={hi.flatten()[:4].tolist()}")
    qt = scheme.act_dtype
    if scheme.act_symmetric:
        s = torch.clamp_min(torch.maximum(-lo, hi) / float(qt.qmax), 2.0**-126)
        return s, None
    s = torch.clamp_min((hi - lo) / float(qt.qmax - qt.qmin), 2.0**-126)
    zp = torch.round(float(qt.qmin) - lo / s).clamp(qt.qmin, qt.qmax)
    return s, zp.to(torch.int8)


def quantize_codes(w: torch.Tensor, qp: dict, scheme: QuantScheme) -> torch.Tensor:
    """int8 codes of float32 ``w`` [..., N, K] (int4 values in [-8, 7]; two-level: the level-2 int4 codes)."""
    k = w.shape[-1]
    qt = scheme.weight_dtype
    s = _expand(qp["weight_scale"].to(torch.float32), k, _group_of(scheme))
    if scheme.two_level:
        q8 = torch.round(w / s).clamp(-TWO_LEVEL_RANGE, TWO_LEVEL_RANGE).to(torch.float64)
        s2 = _expand(qp["weight_group_scale"].to(torch.float64), k, scheme.group_size)
        if (s2 < 1).any():
            raise QuantInputError("weight_group_scale must be integers >= 1")
        return torch.round(q8 / s2).clamp(qt.qmin, qt.qmax).to(torch.int8)
    v = w / s
    if qp.get("weight_zero_point") is not None:
        v = v + _expand(qp["weight_zero_point"].to(torch.float32), k, _group_of(scheme))
    return torch.round(v).clamp(qt.qmin, qt.qmax).to(torch.int8)


def dequantize(codes: torch.Tensor, qp: dict, scheme: QuantScheme) -> torch.Tensor:
    """Exact values (float64) of codes [..., N, K]: (q - zp) * s or q4 * s2 * s1."""
    k = codes.shape[-1]
    q = codes.to(torch.float64)
    if scheme.two_level:
        q = q * _expand(qp["weight_group_scale"].to(torch.float64), k, scheme.group_size)
    if qp.get("weight_zero_point") is not None:
        q = q - _expand(qp["weight_zero_point"].to(torch.float64), k, _group_of(scheme))
    return q * _expand(qp["weight_scale"].to(torch.float64), k, _group_of(scheme))


# -- canonical packing -------------------------------------------------------------------------------
def pack_codes(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes [..., K] -> int32 [..., ceil(K*b/32)] with the +2^(b-1) bias (compressed-tensors)."""
    per, off = 32 // bits, 1 << (bits - 1)
    u = _pad_last(q.to(torch.int64) + off, per)  # padding is u = 0 (value -2^(b-1)), as compressed-tensors
    u = u.reshape(*u.shape[:-1], -1, per)
    word = (u << (torch.arange(per, dtype=torch.int64, device=q.device) * bits)).sum(-1)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def unpack_codes(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int32 [..., W] -> int8 [..., k]."""
    per = 32 // bits
    if words.dtype != torch.int32:
        raise QuantInputError(f"packed words must be int32, got {words.dtype}")
    if words.shape[-1] != -(-k // per):
        raise QuantInputError(f"packed row has {words.shape[-1]} words; K={k} at {bits} bits needs {-(-k // per)}")
    shifts = torch.arange(per, dtype=torch.int64, device=words.device) * bits
    u = (words.to(torch.int64).unsqueeze(-1) & 0xFFFFFFFF) >> shifts & ((1 << bits) - 1)
    return (u.reshape(*words.shape[:-1], -1)[..., :k] - (1 << (bits - 1))).to(torch.int8)


def pack_zero_points(zp: torch.Tensor, bits: int) -> torch.Tensor:
    """Zero points [..., N, G] -> int32 [..., ceil(N*b/32), G] packed along N."""
    return pack_codes(zp.transpose(-1, -2), bits).transpose(-1, -2).contiguous()


def unpack_zero_points(words: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    return unpack_codes(words.transpose(-1, -2).contiguous(), bits, n).transpose(-1, -2).contiguous()


def pack(w: torch.Tensor, qp: QParams, scheme: QuantScheme) -> PackedWeight:
    """Canonical PackedWeight of float32 ``w`` [..., N, K] (host tensors)."""
    n, k = w.shape[-2:]
    want = tuple(w.shape[:-2]) + scheme.scale_shape(n, k)
    if tuple(qp.weight_scale.shape) != want:
        raise QuantInputError(f"weight_scale has shape {tuple(qp.weight_scale.shape)}; {scheme.name} expects "
                              f"{want} for a weight of shape {tuple(w.shape)}")
    qd = {"weight_scale": qp.weight_scale.detach().cpu(), "weight_zero_point": qp.weight_zero_point,
          "weight_group_scale": qp.weight_group_scale}
    qd = {key: (None if v is None else v.detach().cpu()) for key, v in qd.items()}
    codes = quantize_codes(w, qd, scheme)
    t: dict[str, torch.Tensor] = {}
    if weight_tensor_name(scheme) == "weight_packed":
        t["weight_packed"] = pack_codes(codes, scheme.weight_bits)
    else:
        t["weight"] = codes
    t["weight_scale"] = qd["weight_scale"].to(SCALE_DTYPES[scheme.scale_dtype]).clone()
    if qd["weight_zero_point"] is not None:
        t["weight_zero_point"] = pack_zero_points(qd["weight_zero_point"].to(torch.int8), scheme.weight_bits)
    if qd["weight_group_scale"] is not None:
        t["weight_group_scale"] = qd["weight_group_scale"].to(torch.int8).contiguous()
    if scheme.static_activations:
        if qp.input_scale is None:
            raise QuantInputError(f"{scheme.name} needs input_scale in QParams (calibrate with act_stats)")
        t["input_scale"] = qp.input_scale.detach().cpu().to(torch.float32).clone()
        if qp.input_zero_point is not None:
            t["input_zero_point"] = qp.input_zero_point.detach().cpu().to(torch.int8).clone()
    t["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    return PackedWeight(scheme.name, tuple(w.shape), t)


def codes_and_params(packed: PackedWeight, scheme: QuantScheme) -> tuple[torch.Tensor, dict]:
    """(int8 codes [..., N, K], {weight_scale fp32, weight_zero_point int8 [..., N, G] | None, group scale})."""
    n, k = packed.shape[-2:]
    if "weight_packed" in packed:
        codes = unpack_codes(packed["weight_packed"].cpu(), scheme.weight_bits, k)
    elif "weight" in packed:
        codes = packed["weight"].cpu()
        if codes.dtype != torch.int8:
            raise QuantInputError(f"packed {scheme.name} weight has dtype {codes.dtype}; expected int8")
    else:
        raise QuantInputError(f"packed {scheme.name} weight has neither weight_packed nor weight "
                              f"(tensors: {sorted(packed.tensors)})")
    zp = packed.tensors.get("weight_zero_point")
    if zp is not None and zp.dtype == torch.int32:
        zp = unpack_zero_points(zp.cpu(), n, scheme.weight_bits)
    gs = packed.tensors.get("weight_group_scale")
    return codes, {"weight_scale": packed["weight_scale"].cpu().to(torch.float32),
                   "weight_zero_point": None if zp is None else zp.cpu().to(torch.int8),
                   "weight_group_scale": None if gs is None else gs.cpu()}


def is_supported_weight(scheme: QuantScheme) -> bool:
    """Integer weights with channel or group scales (no fp8, no block scales)."""
    return scheme.weight_dtype is not QType.FP8_E4M3 and scheme.weight_granularity is not Granularity.BLOCK
