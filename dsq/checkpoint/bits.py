"""Integer packing used by the on-disk formats, in torch (CPU, exact integer arithmetic).

Two layouts:

* canonical / compressed-tensors words (``pack_words``): signed b-bit codes (b = 4 or 8) are biased,
  ``u = q + 2^(b-1)``, and 32/b consecutive codes along the LAST dim share one int32 word, element ``i`` of a
  group in bits ``b*i .. b*i+b-1``; short rows are padded with u = 0. This is the layout documented in
  ``dsq.qtypes.PackedWeight`` and produced by the reference backend (the tests cross-check them).
* msModelSlim int4 pairs (``pack_int4_pairs``): two's-complement int4 codes are packed two per int8 byte
  along the OUTPUT dim (dim -2): ``byte[j, k] = (q[2j+1, k] << 4) | (q[2j, k] & 0xF)``: the even row sits in
  the low nibble. N must be even.
"""

from __future__ import annotations

import torch

from dsq.errors import CheckpointError

__all__ = ["pack_words", "unpack_words", "pack_int4_pairs", "unpack_int4_pairs"]


def pack_words(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes ``[..., K]`` (int8 holding b-bit values) -> int32 words ``[..., ceil(K*b/32)]``."""
    per = 32 // bits
    off = 1 << (bits - 1)
    q64 = q.to(torch.int64)
    if q64.numel() and (int(q64.min()) < -off or int(q64.max()) >= off):
        raise CheckpointError(f"codes out of the {bits}-bit range [{-off}, {off - 1}]")
    k = q64.shape[-1]
    pad = (-k) % per
    u = q64 + off
    if pad:
        u = torch.cat([u, u.new_zeros(*u.shape[:-1], pad)], dim=-1)
    u = u.reshape(*u.shape[:-1], -1, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    words = (u << shifts).sum(dim=-1)  # disjoint bit fields: the sum is the bitwise or
    # two's-complement wrap of the unsigned 32-bit value into int32
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


def unpack_words(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_words`: int32 ``[..., W]`` -> int8 codes ``[..., k]``."""
    per = 32 // bits
    if words.dtype != torch.int32:
        raise CheckpointError(f"packed words must be int32, got {words.dtype}")
    if words.shape[-1] != -(-k // per):
        raise CheckpointError(f"packed row has {words.shape[-1]} words; K={k} at {bits} bits needs {-(-k // per)}")
    u = words.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(per, dtype=torch.int64) * bits
    fields = (u.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    codes = fields.reshape(*words.shape[:-1], -1)[..., :k] - (1 << (bits - 1))
    return codes.to(torch.int8)


def pack_int4_pairs(q: torch.Tensor) -> torch.Tensor:
    """int4 codes ``[..., N, K]`` (int8 in [-8, 7]) -> int8 ``[..., N/2, K]``, pairs along N, even row low."""
    n = q.shape[-2]
    if n % 2:
        raise CheckpointError(f"int4 pair packing along the output dim needs an even N, got N={n}")
    q16 = q.to(torch.int16)
    lo, hi = q16[..., 0::2, :] & 0xF, (q16[..., 1::2, :] & 0xF) << 4
    byte = lo | hi  # 0..255
    return torch.where(byte >= 128, byte - 256, byte).to(torch.int8)


def unpack_int4_pairs(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4_pairs`: int8 ``[..., N/2, K]`` -> int4 codes int8 ``[..., N, K]``."""
    if packed.dtype != torch.int8:
        raise CheckpointError(f"int4 pairs must be stored as int8, got {packed.dtype}")
    b = packed.to(torch.int16) & 0xFF
    lo, hi = b & 0xF, (b >> 4) & 0xF
    lo, hi = torch.where(lo >= 8, lo - 16, lo), torch.where(hi >= 8, hi - 16, hi)
    out = torch.stack([lo, hi], dim=-2)  # [..., N/2, 2, K]
    return out.reshape(*packed.shape[:-2], packed.shape[-2] * 2, packed.shape[-1]).to(torch.int8)
