"""Device layouts of packed int4/int8 weights (made once): slabs for the GEMM and dequantize kernels, row tiles
for the M = 1 decode kernel (:func:`to_row_tiles`), pair tiles for the tensor-core decode kernel; and the tile
order of activations in which the M = 1 kernel can read the canonical words themselves (:func:`tile_order`).

Canonical words (dsq.qtypes) hold the codes of inputs ``EPW*c .. EPW*c + EPW-1`` in word ``c`` of a row
(EPW = 32 / bits: 8 for int4, 4 for int8). Kernels that read that layout must either reshape the unpacked
``[BN, BK/EPW, EPW]`` fields to ``[BN, BK]`` (a register shuffle through shared memory per tile) or gather
x with stride EPW (not pipelinable). The slab layout removes both: K is cut into tiles of ``LBK = EPW * SL``
inputs, and word ``s`` of tile ``t`` holds in bit field ``j`` the code of input ``t*LBK + j*SL + s``:

    slab[t*SL + s, n] = OR_j  u[n, t*LBK + j*SL + s] << (bits * j)          (u: raw unsigned field)

stored ``[ceil(K/LBK) * SL, N]`` int32 with N contiguous (a ``[SL, BN]`` tile load is coalesced along N).
Bit field j of a ``[SL, BN]`` word tile is then the weight slab ``[SL, BN]`` that multiplies the contiguous
activation columns ``t*LBK + j*SL .. + SL-1``: EPW shift+mask ops and EPW dots per tile, no reshape.
K is padded to whole tiles with the field ``2**(bits-1)`` (code 0); kernels also mask x beyond K to 0.
"""

from __future__ import annotations

import math

import torch

from dsq_cuda.int4_int8_mma import LBK as I8_LBK
from dsq_cuda.int4_int8_mma import mma_position_source

#: slab length (words per tile along K): 32 gives int8/fp8 MMAs their native depth of 32; 16 is the minimum
#: depth of a tensor-core dot, used when the scale group is 16-deep.
SLAB_LENGTHS = (32, 16)
#: rows converted per chunk: bounds the int64 temporaries (8 B per code) to ~0.5 GB on a 7168-wide weight
_CHUNK_N = 8192


def _padded_fields(words: torch.Tensor, k: int, kp: int, bits: int) -> torch.Tensor:
    """Canonical int32 words ``[rows, W]`` -> raw unsigned fields int64 ``[rows, kp]``: the first k inputs,
    then code 0 (field ``2**(bits-1)``) up to kp."""
    shifts = torch.arange(32 // bits, device=words.device, dtype=torch.int64) * bits
    w = words.to(torch.int64) & 0xFFFFFFFF
    u = ((w.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(w.shape[0], -1)[:, :k]
    if kp > k:
        u = torch.cat([u, u.new_full((u.shape[0], kp - k), 1 << (bits - 1))], dim=1)
    return u


def _as_int32(s: torch.Tensor) -> torch.Tensor:
    """Non-negative int64 values below 2**32 -> the int32 with the same bits."""
    return torch.where(s >= 2**31, s - 2**32, s).to(torch.int32)


def slab_length(group: int) -> int:
    """The slab length for a scale group of ``group`` inputs (0 = per channel); 0 if none divides it."""
    for sl in SLAB_LENGTHS:
        if not group or group % sl == 0:
            return sl
    return 0


def to_slabs(words: torch.Tensor, k: int, bits: int, sl: int) -> torch.Tensor:
    """Canonical int32 words ``[N, ceil(K/EPW)]`` -> slab words int32 ``[ceil(K/LBK) * SL, N]``."""
    epw = 32 // bits
    lbk = epw * sl
    n = words.shape[0]
    tiles = -(-k // lbk)
    shifts = torch.arange(epw, device=words.device, dtype=torch.int64) * bits
    out = torch.empty((tiles * sl, n), dtype=torch.int32, device=words.device)
    for lo in range(0, n, _CHUNK_N):
        u = _padded_fields(words[lo:lo + _CHUNK_N], k, tiles * lbk, bits)
        u = u.reshape(u.shape[0], tiles, epw, sl)
        s = _as_int32((u << shifts.view(1, 1, epw, 1)).sum(dim=2))  # fields are disjoint: the sum is an OR
        out[:, lo:lo + _CHUNK_N] = s.reshape(s.shape[0], tiles * sl).t()
    return out


def from_slabs(slabs: torch.Tensor, k: int, bits: int, sl: int) -> torch.Tensor:
    """Inverse of :func:`to_slabs` on the codes: int8 signed codes ``[N, K]`` (tests and debugging)."""
    epw = 32 // bits
    tiles = slabs.shape[0] // sl
    w = slabs.to(torch.int64) & 0xFFFFFFFF  # [tiles*SL, N]
    shifts = torch.arange(epw, device=slabs.device, dtype=torch.int64) * bits
    u = (w.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # [tiles*SL, N, EPW]
    u = u.reshape(tiles, sl, -1, epw).permute(2, 0, 3, 1).reshape(-1, tiles * epw * sl)[:, :k]
    return (u - (1 << (bits - 1))).to(torch.int8)


#: words of a row per tile of the M = 1 decode kernel (dsq_cuda.gemv_kernel): 16 words = 64 bytes per row, read
#: by one thread as four 16-byte loads (the H200 sweep of benchmarks/cuda/gemv_lab.py: 16 beat 8 and 4)
GEMV_TILE_WORDS = 16


def gemv_tile_words(bits: int, group: int, sw: int = GEMV_TILE_WORDS) -> int:
    """The tile width in words (at most ``sw``) of gemv_kernel for a scale group of ``group`` inputs (0 = per
    channel): the largest power of two whose tile of ``32/bits * SW`` inputs divides the group, because a
    field of a tile spans the whole tile (see :func:`tile_order`)."""
    epw = 32 // bits
    while sw > 1 and group and group % (epw * sw):
        sw //= 2
    return sw


def gemv_chunk(bits: int, group: int, sw: int) -> int:
    """Inputs per chunk of gemv_kernel: the least common multiple of a tile (EPW * SW inputs) and the scale
    group (0: per channel), so every chunk starts a tile and a group (split-K splits whole chunks)."""
    return math.lcm(group or 1, (32 // bits) * sw)


def tile_order(x: torch.Tensor, bits: int, sw: int) -> torch.Tensor:
    """Activation rows ``[R, K]`` -> ``[R, Kp]`` (Kp = K rounded up to a tile of ``LBK = EPW * sw`` inputs,
    zero-filled) in the order in which gemv_kernel reads canonical words ``sw`` at a time:

        out[r, t*LBK + j*sw + s] = x[r, t*LBK + EPW*s + j]        (s < sw, j < EPW)

    Word s of tile t holds inputs ``t*LBK + EPW*s + j`` in its bit fields j, so field j of the tile's
    ``sw`` words multiplies the contiguous ``out[r, t*LBK + j*sw + (0..sw-1)]``. A permutation inside each
    tile: per-row statistics (amax, hence dynamic quantization) are unchanged by it.
    """
    epw = 32 // bits
    r, k = x.shape
    lbk = epw * sw
    kp = -(-k // lbk) * lbk
    if kp != k:
        x = torch.nn.functional.pad(x, (0, kp - k))
    return x.reshape(r, kp // lbk, sw, epw).transpose(2, 3).reshape(r, kp)


def to_row_tiles(words: torch.Tensor, k: int, bits: int, group: int, sw: int = GEMV_TILE_WORDS) -> torch.Tensor:
    """Canonical int32 words ``[N, ceil(K/EPW)]`` -> row-tile words int32 ``[tiles, N, SW]``.

    Word ``s`` of (tile t, row n) holds in bit field j the code of input ``t*LBK + j*SW + s`` (LBK = EPW * SW):
    a thread that owns row n reads the tile as SW contiguous words, and field j multiplies the SW contiguous x
    values ``t*LBK + j*SW + [0, SW)``, the same for every row. K is padded with code 0 (field ``2**(bits-1)``)
    to whole chunks (:func:`gemv_chunk`), so a chunk never straddles a scale group or a tile.
    """
    epw = 32 // bits
    lbk = epw * sw
    chunk = gemv_chunk(bits, group, sw)
    kp = -(-k // chunk) * chunk
    tiles = kp // lbk
    n = words.shape[0]
    shifts = torch.arange(epw, device=words.device, dtype=torch.int64) * bits
    out = torch.empty((tiles, n, sw), dtype=torch.int32, device=words.device)
    for lo in range(0, n, _CHUNK_N):
        u = _padded_fields(words[lo:lo + _CHUNK_N], k, kp, bits).reshape(-1, tiles, epw, sw)
        s = _as_int32((u << shifts.view(1, 1, epw, 1)).sum(dim=2))  # disjoint fields: the sum is an OR
        out[:, lo:lo + _CHUNK_N] = s.permute(1, 0, 2)
    return out


_TILE_PERMUTATIONS: dict[tuple, torch.Tensor] = {}


def _permute_in_tiles(x: torch.Tensor, lbk: int, key: tuple, source) -> torch.Tensor:
    """Rows ``[R, K]`` -> ``[R, Kp]`` (K rounded up to ``lbk``, zero-filled), position p of every tile of ``lbk``
    holding the tile's element ``source(arange(lbk))[p]`` (the index cached per ``key`` and device)."""
    r, k = x.shape
    kp = -(-k // lbk) * lbk
    key = (*key, str(x.device))
    if key not in _TILE_PERMUTATIONS:
        _TILE_PERMUTATIONS[key] = source(torch.arange(lbk)).to(x.device)
    if kp != k:
        x = torch.nn.functional.pad(x, (0, kp - k))
    return x.reshape(r, kp // lbk, lbk).index_select(2, _TILE_PERMUTATIONS[key]).reshape(r, kp)


def pair_order(x: torch.Tensor, sw: int) -> torch.Tensor:
    """Activation rows ``[R, K]`` -> ``[R, Kp]`` (Kp = K rounded up to a tile of ``LBK = 8 * sw`` inputs,
    zero-filled) in the order in which mma_decode_kernel (ROW_TILES) multiplies int4 row tiles of width ``sw``.

    That kernel decodes field F of a ``[*, sw]`` word tile as pairs of adjacent elements ``(2p, 2p + 1)``, both
    from one word: word ``2p + h`` with ``h = F // 4``, its fields ``f = F % 4`` (element 2p) and ``f + 4``
    (element 2p + 1). In row tiles field j of word s holds input ``t*LBK + j*sw + s``, so element c of field F
    is input ``t*LBK + (F % 4 + 4 * (c % 2)) * sw + 2 * (c // 2) + F // 4``, and the kernel multiplies it by
    activation ``t*LBK + F*sw + c``: this function puts each input's activation there. A permutation inside
    each tile: per-row statistics (amax) are unchanged.
    """
    def source(p):
        f, c = p // sw, p % sw
        return (f % 4 + 4 * (c % 2)) * sw + 2 * (c // 2) + f // 4

    return _permute_in_tiles(x, 8 * sw, ("pair", sw), source)


def int8_mma_order(x: torch.Tensor) -> torch.Tensor:
    """Activation rows ``[R, K]`` -> ``[R, Kp]`` (Kp = K rounded up to 128, zero-filled) in the order in which
    mma_decode_kernel (I8) multiplies int4 row tiles of 16 words on the int8 tensor cores: position p of a tile
    holds input ``dsq_cuda.int4_int8_mma.mma_position_source(p)`` (see that module). A permutation inside each
    tile: per-row statistics (amax) are unchanged, so x may be quantized before or after it."""
    return _permute_in_tiles(x, I8_LBK, ("int8_mma",), mma_position_source)


def row_tile_byte_order(x: torch.Tensor, bits: int, sw: int, block_k: int) -> torch.Tensor:
    """Activation rows ``[R, K]`` -> ``[R, Kp]`` (Kp = K rounded up to a tile of ``32/bits * sw`` inputs,
    zero-filled) in the order in which the prefill kernel multiplies the bytes of row tiles of width ``sw``
    (moe_tiles.int4_split_step / int8_bytes_step with RT > 0).

    Byte ``c`` of a row's tile is byte ``b = c % 4`` of word ``s = c // 4``, which holds fields ``2b`` and ``2b + 1``
    (int4), inputs ``2b*sw + s`` and ``(2b + 1)*sw + s`` of the tile, or field b (int8), input ``b*sw + s``.
    int8: position c holds that input's activation. int4: in every ``block_k`` block of positions (block_k divides
    a tile), the first half holds the low-field inputs of the block's bytes and the second half their high-field
    inputs (the layout moe_requant.split_halves gives the canonical words). A permutation inside each tile.
    """
    def source(p):
        if bits == 8:
            return (p % 4) * sw + p // 4
        high = (p % block_k) >= block_k // 2
        c = p // block_k * (block_k // 2) + p % (block_k // 2)  # the byte of the tile
        return (2 * (c % 4) + high.long()) * sw + c // 4

    return _permute_in_tiles(x, (32 // bits) * sw, ("bytes", bits, sw, block_k), source)


def to_pair_tiles(words: torch.Tensor, k: int, bits: int, sl: int) -> torch.Tensor:
    """Canonical int32 words ``[N, ceil(K/EPW)]`` -> pair-tile words int32 ``[N, tiles * SL]`` (the layout of
    dsq_cuda.mma_decode_kernel, made for decoding two codes per instruction into a bf16x2/f16x2 register).

    K is cut into tiles of ``LBK = EPW * SL`` inputs, and each tile into EPW fields of SL contiguous inputs
    (field i: inputs ``t*LBK + i*SL + [0, SL)``). A row's tile is SL words; the words ``2p`` and ``2p + 1``
    (a *pair*) hold the codes of inputs ``s = 2p`` and ``2p + 1`` of every field, as 4-bit nibbles at bit
    ``4*f + 16*e`` (e = 0 for input 2p, 1 for 2p + 1), so one shift and one ``lop3`` make both inputs of a
    field a bf16x2 register:
        int4  word ``2p + h`` holds fields ``4h + f`` (f = 0..3) at nibble f;
        int8  word 2p holds the low nibbles of fields f = 0..3, word 2p + 1 their high nibbles.
    K is padded with code 0 (field ``2**(bits-1)``) to whole tiles; kernels also mask x beyond K to 0.
    """
    if sl % 2:
        raise ValueError(f"pair tiles need an even slab length, got {sl}")
    epw = 32 // bits
    lbk = epw * sl
    tiles = -(-k // lbk)
    n = words.shape[0]
    nib = torch.arange(4, device=words.device, dtype=torch.int64).view(4, 1, 1) * 4 + \
        torch.tensor([0, 16], device=words.device, dtype=torch.int64).view(1, 1, 2)  # [f, 1, e]
    out = torch.empty((n, tiles * sl), dtype=torch.int32, device=words.device)
    for lo in range(0, n, _CHUNK_N):
        u = _padded_fields(words[lo:lo + _CHUNK_N], k, tiles * lbk, bits)
        if bits == 4:  # [rows, tiles, h, f, p, e]: field 4h + f
            v = u.reshape(u.shape[0], tiles, 2, 4, sl // 2, 2)
        else:  # [rows, tiles, f, p, e] -> low and high nibble planes h
            u = u.reshape(u.shape[0], tiles, 4, sl // 2, 2)
            v = torch.stack([u & 15, u >> 4], dim=2)
        s = _as_int32((v << nib).sum(dim=(3, 5)))  # [rows, tiles, h, p]: disjoint nibbles, the sum is an OR
        out[lo:lo + _CHUNK_N] = s.permute(0, 1, 3, 2).reshape(s.shape[0], tiles * sl)
    return out
