"""Faster equivalents of the two checkpoint builders that dominate streaming time, proven identical by tests.

For W4A8_DYNAMIC (two-level int4, the routed experts of ``deepseek-w4a8``: ~97% of a DeepSeek checkpoint's
bytes) the checkpoint package's builders work in int64/float64 and cost 4-8x the quantization itself:

* :func:`ct_two_level_entry` = :func:`dsq.checkpoint.compressed_tensors.storable_entry` for two-level
  entries: the W8A8_DYNAMIC layer with int8 ``weight = q4 * s2`` (|q4 * s2| <= 7 * 17 = 119) and the
  level-1 scale ``s1``.
* :func:`ascend_two_level_tensors` = :func:`dsq.checkpoint.msmodelslim.entry_tensors` for two-level
  entries: int4 pairs along N, ``s1``, zero offsets, ``weight_scale_second`` = s2, and
  ``scale_bias = 8 * sum_k q4 * s2 * s1`` (per row, or per 16 K-chunks for down/o_proj). The package sums
  exact float64 products; here the integer sum ``sum_k q4 * s2`` is formed first (exact in int32) and
  multiplied by ``s1`` in float64. Both are the same exactly representable number (every product is an
  integer times the row's ``s1``, and the integer sums stay below 2^29), rounded once to float32.

Everything else (other schemes, naming, quantization_config) goes through dsq.checkpoint unchanged.
tests/streaming/test_streaming_fastformat.py checks both against the package on random and extreme codes.
"""

from __future__ import annotations

import torch

from dsq.checkpoint import msmodelslim as ms
from dsq.checkpoint.entries import QuantEntry
from dsq.errors import CheckpointError
from dsq.qtypes import PackedWeight
from dsq.schemes import get_scheme

__all__ = ["unpack_int4", "ct_two_level_entry", "ascend_two_level_tensors"]


def unpack_int4(words: torch.Tensor, k: int) -> torch.Tensor:
    """Canonical int32 words [N, ceil(K/8)] -> int4 codes as int16 [N, K] (element 2j: low nibble of byte j)."""
    n = words.shape[0]
    b = words.contiguous().view(torch.uint8).view(n, -1).to(torch.int16)
    codes = torch.stack([b & 0xF, b >> 4], dim=-1).view(n, -1)[:, :k]
    return codes - 8


def _q8(packed: PackedWeight, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q4 int16 [N, K], q4 * s2 int16 [N, K])."""
    n, k = packed.shape
    q4 = unpack_int4(packed["weight_packed"], k)
    s2 = packed["weight_group_scale"].to(torch.int16)
    kp = s2.shape[1] * group
    if kp == k:
        q8 = (q4.view(n, -1, group) * s2.unsqueeze(-1)).view(n, k)
    else:
        q8 = q4 * s2.repeat_interleave(group, dim=1)[:, :k]
    return q4, q8


def ct_two_level_entry(entry: QuantEntry) -> QuantEntry:
    """What ``ct.storable_entry`` returns for a two-level entry (W8A8_DYNAMIC with int8 q4 * s2)."""
    s = entry.scheme
    n, k = entry.packed.shape
    _, q8 = _q8(entry.packed, s.group_size)
    scheme = get_scheme("W8A8_DYNAMIC").replace(scale_dtype=s.scale_dtype, scale_rule=s.scale_rule)
    tensors = {"weight": q8.to(torch.int8), "weight_scale": entry.packed["weight_scale"].clone(),
               "weight_shape": torch.tensor([n, k], dtype=torch.int64)}
    return QuantEntry(entry.name, scheme, PackedWeight(scheme.name, (n, k), tensors), entry.bias)


def ascend_two_level_tensors(entry: QuantEntry) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What ``ms.entry_tensors`` returns for a two-level entry (tensors and description types)."""
    p, m, s = entry.packed, entry.name, entry.scheme
    n, k = p.shape
    if n % 2:
        raise CheckpointError(f"int4 pair packing along the output dim needs an even N, got N={n} ({m})")
    q4, q8 = _q8(p, s.group_size)
    s1 = p["weight_scale"].to(torch.float32).reshape(n, 1)
    lo, hi = q4[0::2] & 0xF, (q4[1::2] & 0xF) << 4
    pairs = (lo | hi).to(torch.uint8).view(torch.int8)  # two's-complement nibbles, even row low
    s2f = p["weight_group_scale"].to(torch.float32)
    if m.rsplit(".", 1)[-1] in ms.CHUNKED_SCALE_BIAS:
        chunks = ms.SCALE_BIAS_CHUNKS
        if k % chunks:
            raise CheckpointError(f"module {m}: scale_bias splits K={k} into {chunks} chunks; K must be a "
                                  f"multiple of {chunks}")
        isum = q8.view(n, chunks, -1).to(torch.int32).sum(-1)
    else:
        isum = q8.to(torch.int32).sum(-1, keepdim=True)
    scale_bias = (8 * isum.to(torch.float64) * s1.to(torch.float64)).to(torch.float32)
    t = {f"{m}.weight": pairs, f"{m}.weight_scale": s1, f"{m}.weight_offset": torch.zeros_like(s1),
         f"{m}.weight_scale_second": s2f, f"{m}.weight_offset_second": torch.zeros_like(s2f),
         f"{m}.scale_bias": scale_bias}
    types = {name: "W4A8_DYNAMIC" for name in t}
    if entry.bias is not None:
        t[f"{m}.bias"] = entry.bias
        types[f"{m}.bias"] = "FLOAT"
    return t, types
