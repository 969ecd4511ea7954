"""Private device layout of stacked expert weights for the fused-MoE decode kernel (prepared once, cached).

Canonical packed codes (dsq.qtypes) put the codes of inputs ``EPW*c .. EPW*c + EPW-1`` into word ``c`` of a
row (EPW = 8 for int4, 4 for int8 four-per-word). Unpacking that needs a reshape of ``[BK/EPW, EPW, BN]`` to
``[BK, BN]``, which Triton lowers to a layout conversion per K step. The decode kernel reads a *slab* layout
instead: K is cut into tiles of ``LBK`` inputs, each tile into EPW slabs of ``SL = LBK / EPW`` consecutive
inputs, and word ``c`` of a tile holds, in bit field j, the code of input ``k0 + j*SL + c``:

    word[e, n, t*SL + c] = sum_j  u[e, n, t*LBK + j*SL + c] << (BITS * j)        (u: raw unsigned field)

so bit field j of a ``[SL, BN]`` word tile *is* the ``[SL, BN]`` weight slab j, which multiplies the
activation columns ``k0 + j*SL .. k0 + j*SL + SL-1`` (contiguous): EPW shifts/masks and EPW tensor-core dots,
no reshape. K is padded to whole tiles with the field that decodes to 0 (``2**(BITS-1)``).

Cached in ``PackedWeight.device_layout["dsq_cuda_moe:<device>:<LBK>"]`` (conformance compares only the
canonical tensors, which stay untouched):
    w     int32 ``[E, N, ceil(K/LBK) * SL]`` slab words (packed kinds); the canonical tensor otherwise
    corr  int32 ``[E, N]`` = ``sum_k q[e, n, k]`` (static activation schemes: the zero point's share)
"""

from __future__ import annotations

import torch

from dsq.qtypes import PackedWeight, weight_tensor_name
from dsq.schemes import QType, QuantScheme
from dsq_cuda._env import check_not_capturing


def _unpack_fields(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Raw unsigned fields of canonical words ``[..., W]`` -> int32 ``[..., W * 32/bits]`` (k = EPW*c + j)."""
    epw = 32 // bits
    shifts = torch.arange(epw, device=words.device, dtype=torch.int32) * bits
    u = (words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return u.reshape(*words.shape[:-1], words.shape[-1] * epw)


def slab_words(words: torch.Tensor, k: int, bits: int, lbk: int) -> torch.Tensor:
    """Canonical int32 words ``[N, ceil(K/EPW)]`` of one expert -> slab words ``[N, ceil(K/LBK) * LBK/EPW]``."""
    epw = 32 // bits
    sl = lbk // epw
    n = words.shape[0]
    u = _unpack_fields(words, bits)[:, :k]
    tiles = -(-k // lbk)
    pad = tiles * lbk - k
    if pad:
        u = torch.cat([u, u.new_full((n, pad), 1 << (bits - 1))], dim=1)
    u = u.reshape(n, tiles, epw, sl).to(torch.int64)
    shifts = torch.arange(epw, device=u.device, dtype=torch.int64).view(1, 1, epw, 1) * bits
    w = (u << shifts).sum(dim=2)  # [n, tiles, sl], fields are disjoint so the sum is an OR
    w = torch.where(w >= 2**31, w - 2**32, w)  # the int32 with the same bits
    return w.reshape(n, tiles * sl).to(torch.int32)


def bits_of(scheme: QuantScheme) -> int:
    """Bits per code of a packed weight (4 or 8), 0 when codes are stored one per byte (int8/fp8)."""
    if weight_tensor_name(scheme) != "weight_packed":
        return 0
    return 4 if scheme.weight_dtype is QType.INT4 else 8


def prepare(packed: PackedWeight, scheme: QuantScheme, device: torch.device, lbk: int) -> dict:
    """The slab layout of stacked expert weights ``[E, N, K]`` for tile width ``lbk`` (cached)."""
    key = f"dsq_cuda_moe:{device}:{lbk}"
    if key in packed.device_layout:
        return packed.device_layout[key]
    check_not_capturing("MoE slab layout")
    e, n, k = packed.shape
    bits = bits_of(scheme)
    lay: dict = {"lbk": lbk}
    canon = packed[weight_tensor_name(scheme)]
    if bits:
        # One expert at a time: the int64 fields of a whole stack would not fit next to the weights.
        lay["w"] = torch.stack([slab_words(canon[i].to(device), k, bits, lbk) for i in range(e)]).contiguous()
    else:
        lay["w"] = canon
    if scheme.static_activations:
        if bits:
            off = 1 << (bits - 1)
            corr = [(_unpack_fields(canon[i].to(device), bits)[:, :k] - off).sum(1, dtype=torch.int32)
                    for i in range(e)]
        else:
            corr = [canon[i].to(device).to(torch.int32).sum(1, dtype=torch.int32) for i in range(e)]
        lay["corr"] = torch.stack(corr).contiguous()
    packed.device_layout[key] = lay
    return lay
