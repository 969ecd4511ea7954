"""Faster equivalents of the two checkpoint builders that dominate streaming time, proven identical by tests.

For W4A8_DYNAMIC (two-level int4, the routed experts of ``deepseek-w4a8``: ~97% of a DeepSeek checkpoint's
bytes) the checkpoint package's builders work in int64/float64 and cost 4-8x the quantization itself. Both
builders here start from the *unpacked* codes (:class:`TwoLevelCodes`: ``q4`` int8 [N, K] in -8..7, the
level-1 scale ``s1`` [N, 1], the level-2 scale ``s2`` int8 [N, G]), which the CPU engine writes directly
(:meth:`dsq.streaming.fastquant.FastQuantizer.two_level_codes`), so the int4 words are never packed only to be
unpacked again; :func:`codes_of` unpacks a canonical PackedWeight for the other engines.

* :func:`ct_two_level_tensors` = :func:`dsq.checkpoint.compressed_tensors.storable_entry` + ``entry_tensors``
  for two-level entries: the W8A8_DYNAMIC layer with int8 ``weight = q4 * s2`` (|q4 * s2| <= 7 * 17 = 119,
  so the int8 product is exact) and the level-1 scale ``s1``.
* :func:`ascend_two_level_from_codes` = :func:`dsq.checkpoint.msmodelslim.entry_tensors` for two-level
  entries: int4 pairs along N (row ``2i`` in the low nibble, two's complement), ``s1``, zero offsets,
  ``weight_scale_second`` = s2, and ``scale_bias = 8 * sum_k q4 * s2 * s1`` (per row, or per 16 K-chunks for
  down/o_proj). The package sums exact float64 products; here the integer sum ``sum_k q4 * s2`` is formed
  first (exact in int32) and multiplied by ``s1`` in float64. Both are the same exactly representable number
  (every product is an integer times the row's ``s1``, and the integer sums stay below 2^29), rounded once
  to float32.

Everything else (other schemes, naming, quantization_config) goes through dsq.checkpoint unchanged.
tests/streaming/test_streaming_fastformat.py checks both against the package on random and extreme codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsq.checkpoint import msmodelslim as ms
from dsq.checkpoint.entries import QuantEntry
from dsq.errors import CheckpointError
from dsq.qtypes import PackedWeight
from dsq.schemes import QuantScheme, get_scheme

__all__ = ["TwoLevelCodes", "unpack_int4", "codes_of", "ct_two_level_tensors", "ct_two_level_entry",
           "ascend_two_level_from_codes", "ascend_two_level_tensors"]


@dataclass
class TwoLevelCodes:
    """A W4A8_DYNAMIC weight before int4 packing: ``w ~ q4 * s2[n, k // g] * s1[n]``."""

    q4: torch.Tensor  # int8 [N, K], -8..7
    s1: torch.Tensor  # [N, 1], the scheme's scale dtype
    s2: torch.Tensor  # int8 [N, ceil(K / g)], 1..17
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q4.shape)


def unpack_int4(words: torch.Tensor, k: int) -> torch.Tensor:
    """Canonical int32 words [N, ceil(K/8)] -> int4 codes as int16 [N, K] (element 2j: low nibble of byte j)."""
    n = words.shape[0]
    b = words.contiguous().view(torch.uint8).view(n, -1).to(torch.int16)
    codes = torch.stack([b & 0xF, b >> 4], dim=-1).view(n, -1)[:, :k]
    return codes - 8


def codes_of(packed: PackedWeight, group: int) -> TwoLevelCodes:
    """The unpacked codes of a canonical two-level PackedWeight (on its device)."""
    n, k = packed.shape
    return TwoLevelCodes(unpack_int4(packed["weight_packed"], k).to(torch.int8), packed["weight_scale"].reshape(n, 1),
                         packed["weight_group_scale"], group)


def _q8(c: TwoLevelCodes) -> torch.Tensor:
    """``q4 * s2`` as int8 [N, K] (exact: |q4 * s2| <= 119)."""
    n, k = c.shape
    s2 = c.s2.to(torch.int8)
    if s2.shape[1] * c.group == k:
        return (c.q4.view(n, -1, c.group) * s2.unsqueeze(-1)).view(n, k)
    return c.q4 * s2.repeat_interleave(c.group, dim=1)[:, :k]


def _w8a8_scheme(s: QuantScheme) -> QuantScheme:
    return get_scheme("W8A8_DYNAMIC").replace(scale_dtype=s.scale_dtype, scale_rule=s.scale_rule)


def ct_two_level_tensors(name: str, scheme: QuantScheme,
                         codes: TwoLevelCodes) -> tuple[dict[str, torch.Tensor], QuantScheme]:
    """(on-disk tensors, stored scheme) of ``ct.entry_tensors(ct.storable_entry(entry))`` for a two-level
    module without bias: ``{name}.weight`` int8 ``q4 * s2`` and ``{name}.weight_scale`` = s1 [N, 1]."""
    n, _ = codes.shape
    return ({f"{name}.weight": _q8(codes), f"{name}.weight_scale": codes.s1.reshape(n, 1).clone()},
            _w8a8_scheme(scheme))


def ct_two_level_entry(entry: QuantEntry) -> QuantEntry:
    """What ``ct.storable_entry`` returns for a two-level entry (W8A8_DYNAMIC with int8 q4 * s2)."""
    s = entry.scheme
    n, k = entry.packed.shape
    tensors, scheme = ct_two_level_tensors(entry.name, s, codes_of(entry.packed, s.group_size))
    tensors = {"weight": tensors[f"{entry.name}.weight"], "weight_scale": entry.packed["weight_scale"].clone(),
               "weight_shape": torch.tensor([n, k], dtype=torch.int64)}
    return QuantEntry(entry.name, scheme, PackedWeight(scheme.name, (n, k), tensors), entry.bias)


def ascend_two_level_from_codes(m: str, codes: TwoLevelCodes,
                                bias: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What ``ms.entry_tensors`` returns for a two-level module ``m`` (tensors and description types)."""
    n, k = codes.shape
    if n % 2:
        raise CheckpointError(f"int4 pair packing along the output dim needs an even N, got N={n} ({m})")
    u = codes.q4.view(torch.uint8)
    pairs = (u[0::2] & 0xF).bitwise_or_(u[1::2] << 4).view(torch.int8)  # even row in the low nibble
    s1 = codes.s1.to(torch.float32).reshape(n, 1)
    s2f = codes.s2.to(torch.float32)
    q8 = _q8(codes)
    if m.rsplit(".", 1)[-1] in ms.CHUNKED_SCALE_BIAS:
        chunks = ms.SCALE_BIAS_CHUNKS
        if k % chunks:
            raise CheckpointError(f"module {m}: scale_bias splits K={k} into {chunks} chunks; K must be a "
                                  f"multiple of {chunks}")
        isum = q8.view(n, chunks, -1).sum(-1, dtype=torch.int32)
    else:
        isum = q8.sum(-1, keepdim=True, dtype=torch.int32)
    scale_bias = (8 * isum.to(torch.float64) * s1.to(torch.float64)).to(torch.float32)
    t = {f"{m}.weight": pairs, f"{m}.weight_scale": s1, f"{m}.weight_offset": torch.zeros_like(s1),
         f"{m}.weight_scale_second": s2f, f"{m}.weight_offset_second": torch.zeros_like(s2f),
         f"{m}.scale_bias": scale_bias}
    types = {name: "W4A8_DYNAMIC" for name in t}
    if bias is not None:
        t[f"{m}.bias"] = bias
        types[f"{m}.bias"] = "FLOAT"
    return t, types


def ascend_two_level_tensors(entry: QuantEntry) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """What ``ms.entry_tensors`` returns for a two-level entry (tensors and description types)."""
    return ascend_two_level_from_codes(entry.name, codes_of(entry.packed, entry.scheme.group_size), entry.bias)
