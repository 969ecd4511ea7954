"""Shared helpers of the fused-MoE tests: experts quantized by the numpy reference, moved to the test device."""

from __future__ import annotations

import os

import torch

import dsq
import dsq.errors
from dsq.qtypes import ActStats, ExpertWeights, PackedWeight
from dsq.schemes import get_scheme

DEVICE = os.environ.get("DSQ_MOE_TEST_DEVICE", "cpu")
ALL_SCHEMES = ["W8A16", "W4A16", "W4A16_ASYM", "W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "W4AFP8", "FP8_BLOCK"]


def reference():
    try:
        return dsq.get_backend("cpu")
    except dsq.errors.DsqError:  # run from a source tree without installed entry points (the GPU machine)
        from dsq_cpu_reference.backend import CpuReferenceBackend
        return CpuReferenceBackend()


def to_device(p: PackedWeight) -> PackedWeight:
    return PackedWeight(p.scheme, p.shape, {k: v.to(DEVICE) for k, v in p.tensors.items()})


def make_experts(scheme_name: str, e: int, h: int, i: int, seed: int = 0):
    """(scheme, ExpertWeights on the reference's CPU, ExpertWeights on DEVICE) of random experts."""
    scheme = get_scheme(scheme_name)
    g = torch.Generator().manual_seed(seed)
    wg = torch.randn(e, 2 * i, h, generator=g) * 0.05
    wd = torch.randn(e, h, i, generator=g) * 0.05
    st_up = st_down = None
    if scheme.static_activations:  # per-expert ranges, asymmetric on purpose (non-zero zero points)
        st_up = [ActStats(-2.5 - 0.1 * k, 3.0 + 0.2 * k) for k in range(e)]
        st_down = [ActStats(-0.05, 0.08 + 0.01 * k) for k in range(e)]
    ref = reference()
    cpu = ExpertWeights(ref.quantize_weight(wg, scheme, st_up), ref.quantize_weight(wd, scheme, st_down))
    dev = ExpertWeights(to_device(cpu.gate_up), to_device(cpu.down))
    return scheme, cpu, dev


def rel_err(y: torch.Tensor, r: torch.Tensor) -> float:
    y, r = y.detach().cpu().double(), r.detach().cpu().double()
    return float((y - r).norm() / r.norm().clamp_min(1e-30))
