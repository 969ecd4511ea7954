"""Random expert weights straight in dsq's canonical packed layout, made on the GPU (no calibration pass).

A DeepSeek-V3 layer has 256 x 44M routed weights; quantizing real ones would cost minutes of device time.
Kernel speed does not depend on the values, so codes are uniform random over their range and scales
plausible positive numbers; the correctness of the kernels is checked separately against the reference.
"""

from __future__ import annotations

import torch

from dsq.qtypes import ExpertWeights, PackedWeight, weight_tensor_name
from dsq.schemes import QType, QuantScheme


def _words(shape, gen, device):
    return torch.randint(-(2**31), 2**31 - 1, shape, dtype=torch.int32, device=device, generator=gen)


def _pack_nibbles(nib: torch.Tensor) -> torch.Tensor:
    """[..., W, 8] nibbles (0..15) -> int32 [..., W], the first nibble in the lowest bits."""
    words = torch.zeros(nib.shape[:-1], dtype=torch.int64, device=nib.device)
    for j in range(8):
        words |= nib[..., j].to(torch.int64) << (4 * j)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def packed_weight(scheme: QuantScheme, e: int, n: int, k: int, device, gen) -> PackedWeight:
    t: dict[str, torch.Tensor] = {}
    name = weight_tensor_name(scheme)
    if name == "weight_packed":
        per = 32 // scheme.weight_bits
        t[name] = _words((e, n, -(-k // per)), gen, device)
        if scheme.two_level:  # level-2 codes lie in [-7, 7]: biased nibbles 1..15, never 0
            for j in range(e):  # one expert at a time keeps the nibble tensor small
                nib = torch.randint(1, 16, (n, -(-k // 8), 8), dtype=torch.int32, device=device, generator=gen)
                t[name][j] = _pack_nibbles(nib)
    elif scheme.weight_dtype is QType.FP8_E4M3:
        # clamp first: torch turns out-of-range floats into fp8 NaN (e4m3fn has no infinity)
        t[name] = (torch.randn((e, n, k), device=device, generator=gen) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    else:
        t[name] = torch.randint(-128, 128, (e, n, k), dtype=torch.int8, device=device, generator=gen)
    sdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[scheme.scale_dtype]
    t["weight_scale"] = (torch.rand((e, *scheme.scale_shape(n, k)), device=device, generator=gen) * 1e-3
                         + 1e-4).to(sdt)
    g = -(-k // scheme.group_size) if scheme.group_size else 1
    if not scheme.weight_symmetric:
        t["weight_zero_point"] = _words((e, -(-n // 8), g), gen, device)
    if scheme.two_level:
        t["weight_group_scale"] = torch.randint(1, 18, (e, n, g), dtype=torch.int8, device=device, generator=gen)
    if scheme.static_activations:
        t["input_scale"] = torch.full((e, 1), 0.02, device=device)
        t["input_zero_point"] = torch.randint(-5, 5, (e, 1), dtype=torch.int8, device=device, generator=gen)
    t["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    return PackedWeight(scheme.name, (e, n, k), t)


def experts(scheme: QuantScheme, e: int, h: int, i: int, device, seed: int = 0) -> ExpertWeights:
    gen = torch.Generator(device=device).manual_seed(seed)
    return ExpertWeights(packed_weight(scheme, e, 2 * i, h, device, gen), packed_weight(scheme, e, h, i, device, gen))


def calibrate_static(ew: ExpertWeights, x: torch.Tensor, gate_up_deq: torch.Tensor) -> None:
    """Static (per-tensor asymmetric) input scales from x's range and the intermediate's range, in place."""
    i = gate_up_deq.shape[1] // 2

    def set_range(p: PackedWeight, lo: float, hi: float) -> None:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s = max((hi - lo) / 255.0, 1e-12)
        p.tensors["input_scale"].fill_(s)
        p.tensors["input_zero_point"].fill_(int(max(-128, min(127, round(-128 - lo / s)))))

    xf = x.float()
    set_range(ew.gate_up, float(xf.min()), float(xf.max()))
    hmin, hmax = 0.0, 0.0
    for e in range(gate_up_deq.shape[0]):
        hh = xf @ gate_up_deq[e].float().t()
        a = torch.nn.functional.silu(hh[:, :i]) * hh[:, i:]
        hmin, hmax = min(hmin, float(a.min())), max(hmax, float(a.max()))
    set_range(ew.down, hmin, hmax)


def expert_bytes(ew: ExpertWeights) -> int:
    """Bytes one expert reads (codes and every per-expert scale tensor of gate_up and down)."""
    total = 0
    for p in (ew.gate_up, ew.down):
        for name, v in p.tensors.items():
            if name != "weight_shape":
                total += v.numel() * v.element_size() // v.shape[0]
    return total
