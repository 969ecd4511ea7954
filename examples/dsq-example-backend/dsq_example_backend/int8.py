"""int8 numerics in torch, written to match dsq's scheme definition bit for bit.

Weights (symmetric, per output channel), for a float weight ``w`` [..., N, K] widened exactly to float32::

    scale = max(amax_row / D, 2^-126)   D = 127.5 (compressed-tensors rule) or 127 (msModelSlim rule)
    scale = round_to(scale_dtype)       float32 as is; bfloat16 rounds to nearest, ties to even
    q     = clip(rint(w / scale), -128, 127)     rint: half to even (torch.round); w / scale: IEEE float32

Dynamic per-token activations: ``s = max(amax_row / 127, 2^-126)``, ``q = clip(rint(x / s), -128, 127)``.

Canonical packing of int8 weight-only codes (compressed-tensors pack-quantized): ``u = q + 128`` and four
codes per int32 word, code ``4j + i`` in bits ``8i .. 8i+7`` of word ``j``; rows padded with u = 0.

Every division is a tensor / tensor division (correctly rounded), so the results equal the reference's.
"""

from __future__ import annotations

import torch

TINY = 2.0**-126  #: smallest normal float32: the scale of an all-zero row
_SCALE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def channel_scale(w: torch.Tensor, divisor: float, scale_dtype: str) -> torch.Tensor:
    """Per-row scale [..., N, 1] in ``scale_dtype`` (float32 or bfloat16)."""
    amax = w.float().abs().amax(dim=-1, keepdim=True)
    s = torch.clamp_min(amax / torch.tensor(divisor, dtype=torch.float32, device=w.device), TINY)
    return s.to(_SCALE_DTYPES[scale_dtype])


def quantize(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 codes ``clip(rint(v / scale), -128, 127)`` (v widened to float32, scale broadcast)."""
    return torch.round(v.float() / scale.float()).clamp_(-128, 127).to(torch.int8)


def token_scale(x: torch.Tensor) -> torch.Tensor:
    """Dynamic per-token scale [M, 1] float32 for int8 activations."""
    amax = x.float().abs().amax(dim=-1, keepdim=True)
    return torch.clamp_min(amax / torch.tensor(127.0, device=x.device), TINY)


def pack_words(q: torch.Tensor) -> torch.Tensor:
    """int8 codes [..., K] -> int32 words [..., ceil(K/4)] (see module docstring)."""
    k = q.shape[-1]
    u = q.to(torch.int64) + 128
    pad = (-k) % 4
    if pad:
        u = torch.nn.functional.pad(u, (0, pad))  # padding code -128 is stored as 0
    u = u.reshape(*u.shape[:-1], -1, 4)
    words = u[..., 0] | (u[..., 1] << 8) | (u[..., 2] << 16) | (u[..., 3] << 24)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_words(words: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_words`: int32 [..., W] -> int8 codes [..., k]."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    shifts = torch.arange(4, device=words.device) * 8
    u = (w.unsqueeze(-1) >> shifts) & 0xFF
    return (u.reshape(*words.shape[:-1], -1)[..., :k] - 128).to(torch.int8)
