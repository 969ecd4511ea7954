"""Canonical integer packing (the compressed-tensors ``pack-quantized`` layout), in numpy.

Codes are signed b-bit integers (b = 4 or 8). Each code is stored biased, ``u = q + 2^(b-1)`` (0..15 or
0..255), and 32/b consecutive codes share one 32-bit word, the first in the lowest bits::

    word[n, j] = sum_i  u[n, j*(32/b) + i] << (b * i),    i = 0 .. 32/b - 1

Rows are padded with u = 0 (code -2^(b-1)) up to a multiple of 32/b; ``weight_shape`` trims the padding.
Words are stored as signed int32 (the same 32 bits). Zero points of asymmetric int4 groups are packed the
same way but along the output dimension N (a [N, G] matrix becomes [ceil(N/8), G]).
"""

from __future__ import annotations

import numpy as np

from dsq.errors import QuantInputError


def pack_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack signed codes [..., K] (b-bit range) along the last axis into int32 [..., ceil(K*b/32)]."""
    per_word = 32 // bits
    offset = 1 << (bits - 1)
    q = np.asarray(q, dtype=np.int64)
    if q.size and (q.min() < -offset or q.max() >= offset):
        raise QuantInputError(f"codes out of the {bits}-bit range [{-offset}, {offset - 1}]: "
                              f"[{int(q.min())}, {int(q.max())}]")
    k = q.shape[-1]
    pad = (-k) % per_word
    u = (q + offset).astype(np.uint64)
    if pad:
        u = np.concatenate([u, np.zeros(u.shape[:-1] + (pad,), dtype=np.uint64)], axis=-1)
    u = u.reshape(u.shape[:-1] + (-1, per_word))
    shifts = (np.arange(per_word, dtype=np.uint64) * np.uint64(bits))
    words = np.bitwise_or.reduce(u << shifts, axis=-1)
    return words.astype(np.uint32).view(np.int32)


def unpack_codes(words: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: int32 words [..., W] -> signed codes int8 [..., k]."""
    per_word = 32 // bits
    words = np.asarray(words)
    if words.dtype != np.int32:
        raise QuantInputError(f"packed words must be int32, got {words.dtype}")
    need = -(-k // per_word)
    if words.shape[-1] != need:
        raise QuantInputError(f"packed row has {words.shape[-1]} words; K={k} at {bits} bits needs {need}")
    u = words.view(np.uint32).astype(np.uint64)[..., None]
    shifts = np.arange(per_word, dtype=np.uint64) * np.uint64(bits)
    fields = (u >> shifts) & np.uint64((1 << bits) - 1)
    codes = fields.reshape(words.shape[:-1] + (-1,))[..., :k].astype(np.int64) - (1 << (bits - 1))
    return codes.astype(np.int8)


def pack_zero_points(zp: np.ndarray, bits: int = 4) -> np.ndarray:
    """b-bit zero points [..., N, G] -> int32 [..., ceil(N*b/32), G], packed along N."""
    zp_t = np.ascontiguousarray(np.swapaxes(np.asarray(zp), -1, -2))  # [..., G, N]
    return np.ascontiguousarray(np.swapaxes(pack_codes(zp_t, bits), -1, -2))


def unpack_zero_points(words: np.ndarray, n: int, bits: int = 4) -> np.ndarray:
    """Inverse of :func:`pack_zero_points`: int32 [..., ceil(N*b/32), G] -> int8 [..., N, G]."""
    w_t = np.ascontiguousarray(np.swapaxes(np.asarray(words), -1, -2))
    return np.ascontiguousarray(np.swapaxes(unpack_codes(w_t, bits, n), -1, -2))
