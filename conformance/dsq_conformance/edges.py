"""Constructed edge-case inputs: zero rows/groups, a huge outlier, tiny and subnormal values, values at the
format's maximum, and exact rounding ties.

Ties are built so that ``value / scale`` is exactly ``k + 1/2`` (or exactly halfway between two e4m3 values):
every scale group gets one element equal to ``D * step`` (``D`` the scheme's divisor), so the scale is the
power of two ``step`` exactly and the other elements ``(k + 1/2) * step`` divide exactly. A backend rounding
half away from zero (or truncating) instead of half to even gets these wrong. All values are representable
in bf16 (at most 8 significant bits), so the same construction works for bf16 inputs.
"""

from __future__ import annotations

import torch

from dsq.qtypes import ActStats
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme

INT_STEP = 2.0**-4
FP8_STEP = 2.0**-6


def _stats(x: torch.Tensor) -> ActStats:
    return ActStats.empty().update(x.float()) if x.numel() else ActStats(-1.0, 1.0)


def _randint(g: torch.Generator, lo: int, hi: int, shape) -> torch.Tensor:
    return torch.randint(lo, hi + 1, shape, generator=g).double()


def _sign(g: torch.Generator, shape) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=g).double() * 2 - 1


def fp8_midpoints(g: torch.Generator, shape) -> torch.Tensor:
    """Values exactly halfway between two adjacent e4m3fn values (normal and subnormal), random signs."""
    e = _randint(g, -6, 7, shape)
    i = _randint(g, 0, 7, shape)
    normal = (1 + i / 8 + 1 / 16) * torch.pow(2.0, e)
    sub = (i + 0.5) * 2.0**-9
    pick_sub = torch.rand(shape, generator=g) < 0.2
    return torch.where(pick_sub, sub, normal) * _sign(g, shape)


def _group_starts(scheme: QuantScheme, k: int, act: bool = False) -> list[int]:
    if act:
        step = scheme.act_group_size if scheme.act_granularity is ActGranularity.TOKEN_GROUP else k
    elif scheme.weight_granularity is Granularity.GROUP and not scheme.two_level:
        step = scheme.group_size
    elif scheme.weight_granularity is Granularity.BLOCK:
        step = scheme.block_size[1]
    else:
        step = k
    return list(range(0, k, step))


def weight_ties(scheme: QuantScheme, g: torch.Generator, n: int, k: int) -> torch.Tensor:
    """float64 [n, k] weights whose quantization hits exact ties at every level of the scheme."""
    shape = (n, k)
    if scheme.weight_dtype is QType.FP8_E4M3:
        w = fp8_midpoints(g, shape) * FP8_STEP
        amax = 448.0 * FP8_STEP
    elif not scheme.weight_symmetric:  # asymmetric int4: groups of [0, 15 step] or [-15 step, 0]
        qrange = int(scheme.weight_dtype.qmax - scheme.weight_dtype.qmin)
        w = (_randint(g, 0, qrange - 1, shape) + 0.5) * INT_STEP
        neg = (torch.arange(n) % 2 == 1)[:, None]
        w = torch.where(neg, -w, w)
        for c in _group_starts(scheme, k):
            w[:, c] = torch.where(neg[:, 0], -qrange * INT_STEP, qrange * INT_STEP)
            if c + 1 < k:
                w[:, c + 1] = 0.0
        return w
    elif scheme.two_level:  # level-1 ties in group 0; groups >= 1 hold odd q8 with max 14 -> s2 = 2, q8/2 ties
        w = (_randint(g, -119, 118, shape) + 0.5) * INT_STEP
        gs = scheme.group_size
        if k > gs:
            odd = (_randint(g, -7, 6, (n, k - gs)) * 2 + 1) * INT_STEP
            w[:, gs:] = odd
            for c in range(gs, k, gs):
                w[:, c] = 14 * INT_STEP
        amax = 119 * INT_STEP
        w[:, 0] = amax * _sign(g, (n,))
        return w
    else:
        qmax = int(scheme.weight_dtype.qmax)
        w = (_randint(g, -qmax, qmax - 1, shape) + 0.5) * INT_STEP
        amax = scheme.weight_divisor() * INT_STEP
    for c in _group_starts(scheme, k):
        w[:, c] = amax * _sign(g, (n,))
    return w


def weight_edges(scheme: QuantScheme, g: torch.Generator, quick: bool = False,
                 shape: tuple[int, int] = (6, 136)) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) pairs of edge-case weights of ``shape`` (K > 128 so a second, short group exists)."""
    n, k = shape
    out = []
    w = torch.randn(shape, generator=g) * 0.05
    w[0] = 0
    w[min(3, n - 1)] = 0
    if k > 128:
        w[1, 128:] = 0  # an all-zero group / block column
    out.append(("zero-rows-and-group-fp32", w))
    w = torch.randn(shape, generator=g) * 0.02
    w[1, 5] = 1e4
    out.append(("huge-outlier-bf16", w.to(torch.bfloat16)))
    out.append(("tiny-1e-30-fp32", torch.randn(shape, generator=g) * 1e-30))
    out.append(("subnormal-fp32", torch.randn(shape, generator=g) * 1e-40))
    w = torch.randn(shape, generator=g) * 0.05
    amax = w.abs().amax(dim=1, keepdim=True)
    w[:, 0:1], w[:, 2:3] = amax, -amax  # codes at +qmax and at the negative end
    out.append(("at-format-max-fp32", w))
    out.append(("exact-ties-fp32", weight_ties(scheme, g, n, k).float()))
    out.append(("exact-ties-bf16", weight_ties(scheme, g, n, k).to(torch.bfloat16)))
    if not quick:
        out.append(("huge-outlier-fp16", (torch.randn(shape, generator=g) * 0.02)
                    .index_put_((torch.tensor([2]), torch.tensor([7])), torch.tensor(3e4)).half()))
        out.append(("subnormal-fp16", (torch.randn(shape, generator=g) * 1e-6).half()))
        out.append(("subnormal-bf16", (torch.randn(shape, generator=g) * 1e-40).to(torch.bfloat16)))
        w = torch.randn(shape, generator=g)
        w[0, 0], w[1, 3] = 65504.0, -65504.0
        out.append(("fp16-max-fp16", w.half()))
        out.append(("exact-ties-stacked-fp32", torch.stack([weight_ties(scheme, g, n, k) for _ in range(2)]).float()))
    return out


def activation_ties(scheme: QuantScheme, g: torch.Generator, m: int, k: int) -> tuple[torch.Tensor, ActStats]:
    """float64 [m, k] activations whose quantization hits exact ties, and the stats of a static scale."""
    shape = (m, k)
    if scheme.act_dtype is QType.FP8_E4M3:
        x = fp8_midpoints(g, shape) * FP8_STEP
        amax = 448.0 * FP8_STEP
        for c in _group_starts(scheme, k, act=True):
            x[:, c] = amax * _sign(g, (m,))
        return x, ActStats(-amax, amax)
    if scheme.static_activations:  # scale (127 + 128) * step / 255 = step exactly, zero point 0
        x = (_randint(g, -128, 126, shape) + 0.5) * INT_STEP
        return x, ActStats(-128 * INT_STEP, 127 * INT_STEP)
    x = (_randint(g, -127, 126, shape) + 0.5) * INT_STEP
    x[:, 0] = 127 * INT_STEP * _sign(g, (m,))
    return x, ActStats(-128 * INT_STEP, 127 * INT_STEP)


def activation_edges(scheme: QuantScheme, g: torch.Generator, quick: bool = False,
                     k: int = 136) -> list[tuple[str, torch.Tensor, ActStats]]:
    """(name, x [M, k], stats) edge-case activations (stats calibrate static input scales)."""
    m = 5
    out = []
    x = torch.randn(m, k, generator=g) * 2
    x[0] = 0
    x[2] = 0
    out.append(("zero-rows-bf16", x.to(torch.bfloat16)))
    x = torch.randn(m, k, generator=g)
    x[1, 7] = 1e4
    out.append(("huge-outlier-fp32", x))
    out.append(("tiny-1e-30-fp32", torch.randn(m, k, generator=g) * 1e-30))
    out.append(("subnormal-fp16", (torch.randn(m, k, generator=g) * 1e-6).half()))
    x = torch.randn(m, k, generator=g)
    amax = x.abs().amax(dim=1, keepdim=True)
    x[:, 0:1], x[:, 3:4] = amax, -amax
    out.append(("at-format-max-bf16", x.to(torch.bfloat16)))
    out.append(("empty-M0-bf16", torch.zeros(0, k, dtype=torch.bfloat16)))
    if not quick:
        out.append(("subnormal-fp32", torch.randn(m, k, generator=g) * 1e-40))
        x = torch.randn(m, k, generator=g)
        x[3, 100] = -3e4
        out.append(("huge-outlier-fp16", x.half()))
    result = [(name, x, _stats(x)) for name, x in out]
    ties, stats = activation_ties(scheme, g, m, k)
    result.append(("exact-ties-fp32", ties.float(), stats))
    result.append(("exact-ties-bf16", ties.to(torch.bfloat16), stats))
    return result
