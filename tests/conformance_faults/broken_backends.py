"""Deliberately broken backends (subclasses of the numpy reference) that the conformance suite must catch,
plus one that differs from the reference only in ways a correct kernel may (1-ulp output noise)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from dsq.qtypes import PackedWeight
from dsq.schemes import RoundMode
from dsq_cpu_reference import CpuReferenceBackend
from dsq_cpu_reference import activations as ref_activations
from dsq_cpu_reference import weights as ref_weights
from dsq_cpu_reference.numerics import FP8_MIN_NORMAL, FP8_SUBNORMAL_STEP


class _Renamed(CpuReferenceBackend):
    aliases = ()


class CorrectCopy(_Renamed):
    """The reference under another name: must pass everything."""

    name = "test-correct-copy"


class FlippedBitPack(_Renamed):
    """Flips the lowest bit of the first code word of every packed weight."""

    name = "test-flipped-bit-pack"

    def pack(self, weight, qparams, scheme) -> PackedWeight:
        packed = super().pack(weight, qparams, scheme)
        key = "weight_packed" if "weight_packed" in packed else "weight"
        t = packed.tensors[key].clone()
        bits = t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t
        bits.view(-1)[0] ^= 1
        packed.tensors[key] = t
        return packed


def _rint_half_away(v, mode=RoundMode.HALF_EVEN):
    v64 = np.asarray(v, dtype=np.float64)
    return np.sign(v64) * np.floor(np.abs(v64) + 0.5)


def _fp8_round_half_away(v):
    v64 = np.asarray(v, dtype=np.float64)
    a = np.abs(v64)
    _, exp = np.frexp(a)
    step = np.where(a >= FP8_MIN_NORMAL, np.ldexp(1.0, exp - 1 - 3), FP8_SUBNORMAL_STEP)
    return np.copysign(np.floor(a / step + 0.5) * step, v64)


@contextlib.contextmanager
def _half_away():
    saved = [(m, n, getattr(m, n)) for m in (ref_weights, ref_activations) for n in ("rint", "fp8_e4m3_round")]
    try:
        for m, n, _ in saved:
            setattr(m, n, _rint_half_away if n == "rint" else _fp8_round_half_away)
        yield
    finally:
        for m, n, f in saved:
            setattr(m, n, f)


class HalfAwayRounding(_Renamed):
    """Rounds every code half away from zero instead of half to even (int and fp8)."""

    name = "test-half-away-rounding"

    def calibrate(self, *a, **k):
        with _half_away():
            return super().calibrate(*a, **k)

    def pack(self, *a, **k):
        with _half_away():
            return super().pack(*a, **k)

    def quantize_activation(self, *a, **k):
        with _half_away():
            return super().quantize_activation(*a, **k)


class MatmulOnePercent(_Renamed):
    """matmul results 1% too large."""

    name = "test-matmul-one-percent"

    def matmul(self, x, packed, scheme, bias=None):
        return (super().matmul(x, packed, scheme, bias).float() * 1.01).to(x.dtype)


class WrongCombine(_Renamed):
    """moe pairs each expert's output with the next slot's routing weight."""

    name = "test-wrong-moe-combine"

    def moe(self, x, topk_ids, topk_weights, experts, scheme, expert_range=None):
        return super().moe(x, topk_ids, topk_weights.roll(1, dims=1), experts, scheme, expert_range)


class UlpNoise(_Renamed):
    """Legitimate differences: every matmul output (also the MoE intermediates) is *faithfully* rounded,
    i.e. randomly either neighbour of the exact value in x.dtype (at most 1 ulp away) instead of the nearest."""

    name = "test-ulp-noise"

    def __init__(self):
        self._g = torch.Generator().manual_seed(5)

    def matmul(self, x, packed, scheme, bias=None):
        exact = super().matmul(x.float(), packed, scheme, None if bias is None else bias.float())  # same codes
        nearest = exact.to(x.dtype)
        up = nearest.float() < exact
        other = torch.nextafter(nearest, torch.where(up, torch.inf, -torch.inf).to(x.dtype))
        flip = (torch.rand(exact.shape, generator=self._g) < 0.5) & (nearest.float() != exact)
        return torch.where(flip, other, nearest)
