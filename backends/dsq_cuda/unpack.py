"""unpack: canonical PackedWeight -> (codes, dequantized float32). Not on a hot path, so plain torch ops.

codes: int8 [..., N, K] (int4/int8 schemes; two-level gives the int4 level-2 codes) or float8_e4m3fn.
dequantized: float32 ``(q - zp) * scale`` with the scale of each element's channel/group/block, or
``(q4 * s2) * s1`` for two-level weights (the integer product is exact, then one float32 multiply).
"""

from __future__ import annotations

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight
from dsq.schemes import Granularity, QuantScheme


def unpack_words(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """int32 [..., W] of b-bit unsigned codes -> int8 signed codes [..., k] (offset 2**(b-1) removed)."""
    epw = 32 // bits
    shifts = torch.arange(epw, device=words.device, dtype=torch.int32) * bits
    u = (words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    u = u.reshape(*words.shape[:-1], -1)[..., :k]
    return (u - (1 << (bits - 1))).to(torch.int8)


def unpack_zero_points(words: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """compressed-tensors zero points, int32 ``[..., ceil(N b / 32), G]`` with 32 / b b-bit values per word along N
    (int4: 8) -> int8 signed ``[..., N, G]``."""
    return unpack_words(words.transpose(-1, -2).contiguous(), bits, n).transpose(-1, -2).contiguous()


def expand_groups(t: torch.Tensor, group: int, k: int) -> torch.Tensor:
    """[..., G] per-group values -> [..., k] per-element values."""
    return t.repeat_interleave(group, dim=-1)[..., :k]


def _get(packed: PackedWeight, name: str) -> torch.Tensor:
    if name not in packed:
        raise QuantInputError(f"packed weight ({packed.scheme}) has no tensor {name!r}; it has "
                              f"{sorted(packed.tensors)}")
    return packed[name]


def unpack(packed: PackedWeight, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = packed.shape[-2:]
    scale = _get(packed, "weight_scale").float()
    if scheme.weight_granularity is Granularity.BLOCK:
        codes = _get(packed, "weight")
        bn, bk = scheme.block_size
        s = scale.repeat_interleave(bn, dim=-2)[..., :n, :].repeat_interleave(bk, dim=-1)[..., :k]
        return codes, codes.float() * s
    if "weight_packed" in packed:
        codes = unpack_words(_get(packed, "weight_packed"), scheme.weight_bits, k)
    else:
        codes = _get(packed, "weight")
    if scheme.two_level:
        s2 = expand_groups(_get(packed, "weight_group_scale").to(torch.int32), scheme.group_size, k)
        return codes, (codes.to(torch.int32) * s2).float() * scale
    group = k if scheme.weight_granularity is Granularity.CHANNEL else scheme.group_size
    q = codes.float()
    if not scheme.weight_symmetric:
        zp = unpack_zero_points(_get(packed, "weight_zero_point"), n, scheme.weight_bits)  # [..., N, G]
        q = q - expand_groups(zp.float(), group, k)
    return codes, q * expand_groups(scale, group, k)
