"""Test inputs: random draws over many shapes and dtypes, plus constructed edge cases, all deterministic.

Shapes deliberately include sizes that are not multiples of 8, 16, 32, the group size (128) or the fp8
block (128x128): 1, 3, 7, 33, 130, 260, 300. Edge cases (:mod:`dsq_conformance.edges`) cover all-zero rows
and groups, one huge outlier, tiny and subnormal values, values at the format's maximum and exact rounding
ties. ``quick=True`` keeps a small subset with the same kinds of cases (for slow backends such as the
Triton interpreter in CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dsq.qtypes import ActStats
from dsq.schemes import QuantScheme

from . import edges

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class WeightCase:
    """Input to calibrate/pack/unpack: a float weight [N, K] or [E, N, K] (+ activation stats if static)."""

    name: str
    weight: torch.Tensor
    act_stats: ActStats | None = None


@dataclass
class ActCase:
    """Input to quantize_activation: x [M, K]; act_stats calibrate the static input scale when needed."""

    name: str
    x: torch.Tensor
    act_stats: ActStats | None = None


@dataclass
class MatmulCase:
    name: str
    x: torch.Tensor
    weight: torch.Tensor
    act_stats: ActStats | None = None
    bias: torch.Tensor | None = None


@dataclass
class MoeCase:
    """A routed-expert MoE call: float expert weights (packed by the reference), routing and inputs."""

    name: str
    x: torch.Tensor
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor
    gate_up: torch.Tensor  # float [E, 2I, H]
    down: torch.Tensor  # float [E, H, I]
    stats_gate_up: ActStats | None = None
    stats_down: ActStats | None = None
    expert_range: tuple[int, int] | None = None
    tags: list[str] = field(default_factory=list)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stats(x: torch.Tensor) -> ActStats:
    return ActStats.empty().update(x.float()) if x.numel() else ActStats(-1.0, 1.0)


def weight_cases(scheme: QuantScheme, quick: bool = False) -> list[WeightCase]:
    """Random weights over many shapes and the three float dtypes, stacked experts, and edge cases."""
    g = _gen(1234)
    shapes = [(3, 7), (17, 130), (2, 5, 40)] if quick else \
        [(1, 1), (3, 7), (5, 33), (17, 130), (64, 256), (33, 300), (130, 260), (3, 9, 136), (2, 130, 40)]
    out = []
    for i, shape in enumerate(shapes):
        dt = DTYPES[i % 3]
        w = (torch.randn(shape, generator=g) * 0.05).to(dt)
        out.append(WeightCase(f"random{list(shape)}-{_dt(dt)}", w, _stats(torch.randn(4, 8, generator=g))))
    for name, w in edges.weight_edges(scheme, g, quick):
        out.append(WeightCase(name, w, ActStats(-3.0, 2.5)))
    return out


def activation_cases(scheme: QuantScheme, quick: bool = False) -> list[ActCase]:
    """Random activations (M, K not multiples of 8/16/32/128, M = 0 included) and edge cases."""
    g = _gen(4321)
    shapes = [(3, 7), (5, 130), (0, 40)] if quick else \
        [(1, 1), (3, 7), (0, 40), (5, 33), (9, 130), (16, 256), (4, 300), (2, 1000)]
    out = []
    for i, shape in enumerate(shapes):
        dt = DTYPES[i % 3]
        x = (torch.randn(shape, generator=g) * 2).to(dt)
        out.append(ActCase(f"random{list(shape)}-{_dt(dt)}", x, _stats(x)))
    # a static scale calibrated on a narrower range than the data: codes clip at -128 / 127
    x = torch.randn(6, 50, generator=g).to(torch.bfloat16)
    out.append(ActCase("beyond-calibrated-range-bf16", x, ActStats(-0.5, 0.7)))
    for name, x, stats in edges.activation_edges(scheme, g, quick):
        out.append(ActCase(name, x, stats))
    return out


def matmul_cases(scheme: QuantScheme, quick: bool = False) -> list[MatmulCase]:
    """(M, N, K) draws over dtypes with and without bias, plus edge weights and activations."""
    g = _gen(777)
    shapes = [(3, 5, 7), (4, 17, 130), (0, 6, 40)] if quick else \
        [(1, 1, 1), (3, 5, 7), (4, 17, 130), (0, 6, 40), (7, 33, 300), (16, 64, 256), (5, 130, 260), (2, 3, 1000),
         # deep K: backends may switch kernels on depth (the cuda decode kernel serves K >= 1024)
         (1, 24, 1100), (9, 8, 1024), (5, 40, 2304)]
    out = []
    for i, (m, n, k) in enumerate(shapes):
        dt = DTYPES[i % 3]
        x = torch.randn(m, k, generator=g).to(dt)
        w = torch.randn(n, k, generator=g) * k**-0.5
        bias = (torch.randn(n, generator=g) * 0.1).to(dt) if i % 2 else None
        out.append(MatmulCase(f"random[{m}x{n}x{k}]-{_dt(dt)}{'-bias' if bias is not None else ''}",
                              x, w, _stats(x), bias))
    k = 136
    w_rand = torch.randn(9, k, generator=g) * k**-0.5
    for name, x, stats in edges.activation_edges(scheme, g, quick=True, k=k):
        out.append(MatmulCase(f"x-{name}", x, w_rand, stats))
    x_rand = torch.randn(4, k, generator=g).to(torch.bfloat16)
    for name, w in edges.weight_edges(scheme, g, quick=True, shape=(9, k)):
        out.append(MatmulCase(f"w-{name}", x_rand, w, _stats(x_rand)))
    return out


def _routing(g: torch.Generator, t: int, e: int, k: int, probs: torch.Tensor | None = None):
    """topk_ids: k distinct experts per token drawn from ``probs``; topk_weights: softmax of random logits."""
    p = torch.ones(e) if probs is None else probs
    ids = torch.stack([torch.multinomial(p, k, replacement=False, generator=g) for _ in range(t)]) \
        if t else torch.zeros(0, k, dtype=torch.int64)
    weights = torch.softmax(torch.randn(t, k, generator=g), dim=-1)
    return ids.to(torch.int64), weights.to(torch.float32)


def _moe_stats(x: torch.Tensor, gate_up: torch.Tensor) -> tuple[ActStats, ActStats]:
    """Activation ranges of the gate/up input and of the SwiGLU output (for static schemes)."""
    h = torch.einsum("tk,enk->ten", x.double(), gate_up.double())
    i = gate_up.shape[1] // 2
    a = torch.nn.functional.silu(h[..., :i]) * h[..., i:]
    return _stats(x), _stats(a if a.numel() else torch.zeros(1, 1))


def moe_cases(scheme: QuantScheme, quick: bool = False) -> list[MoeCase]:
    """Uniform and skewed routing, empty experts, topk 1 and 8, expert_range, T = 1 and T = 0, and a prefill-sized
    T = 80 (above the 64 tokens where backends such as cuda switch from their decode kernels to tiled ones)."""
    g = _gen(2468)
    hidden, inter = (40, 24) if quick else (160, 96)
    specs = [  # name, E, T, topk, routing probs (None = uniform), expert_range, dtype
        ("top8-uniform", 8, 4 if quick else 12, 8, None, None, torch.bfloat16),
        ("top1-skewed-empty-experts", 4 if quick else 8, 6 if quick else 16, 1,
         "skewed_empty", None, torch.float32),
        ("top3-expert-range", 6, 5 if quick else 10, 3, None, (2, 5), torch.bfloat16),
    ]
    if not quick:
        specs += [
            ("top2-skewed", 8, 16, 2, "skewed", None, torch.float16),
            ("top4-expert-range-last", 8, 8, 4, None, (6, 8), torch.float32),
            ("top8-single-token", 8, 1, 8, None, None, torch.bfloat16),
            ("no-tokens", 4, 0, 2, None, None, torch.bfloat16),
            ("top2-prefill", 8, 80, 2, None, None, torch.bfloat16),
        ]
    out = []
    for name, e, t, k, routing, erange, dt in specs:
        probs = None
        if routing == "skewed":
            probs = torch.full((e,), 0.02)
            probs[3] = 1.0
        elif routing == "skewed_empty":  # experts 0 and 2 get nothing; expert 1 almost everything
            probs = torch.tensor([0.0, 1.0, 0.0] + [0.05] * (e - 3))
        ids, weights = _routing(g, t, e, k, probs)
        x = torch.randn(t, hidden, generator=g).to(dt)
        gate_up = torch.randn(e, 2 * inter, hidden, generator=g) * hidden**-0.5
        down = torch.randn(e, hidden, inter, generator=g) * inter**-0.5
        s_gu, s_dn = _moe_stats(x.float(), gate_up)
        out.append(MoeCase(f"{name}[E={e},T={t},H={hidden},I={inter}]-{_dt(dt)}", x, ids, weights,
                           gate_up, down, s_gu, s_dn, erange))
    return out


def _dt(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
