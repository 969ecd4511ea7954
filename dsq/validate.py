"""Input checks shared by every backend, so bad input gets the same clear error everywhere."""

from __future__ import annotations

import math

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import ExpertWeights, PackedWeight
from dsq.schemes import QuantScheme

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        first = tuple(int(i) for i in bad[0])
        raise QuantInputError(
            f"{name} has {n_nan} NaN and {n_inf} Inf values (first at index {first}); "
            "quantization needs finite values")


def check_weight(weight: torch.Tensor, scheme: QuantScheme, name: str = "weight") -> None:
    """A weight is a finite float32/bf16/fp16 tensor of shape [N, K] or stacked [E, N, K], N, K >= 1."""
    if not isinstance(weight, torch.Tensor):
        raise QuantInputError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dtype not in FLOAT_DTYPES:
        raise QuantInputError(f"{name} has dtype {weight.dtype}; expected one of float32, bfloat16, float16")
    if weight.ndim not in (2, 3) or min(weight.shape) < 1:
        raise QuantInputError(
            f"{name} has shape {tuple(weight.shape)}; {scheme.name} expects [N, K] or stacked [E, N, K] "
            "with every dimension >= 1")
    _check_finite(weight, name)


def check_activation(x: torch.Tensor, k: int | None, name: str = "x") -> None:
    """An activation is a finite float tensor [M, K] (M may be 0) whose K matches the weight's."""
    if not isinstance(x, torch.Tensor):
        raise QuantInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise QuantInputError(f"{name} has dtype {x.dtype}; expected one of float32, bfloat16, float16")
    if x.ndim != 2:
        raise QuantInputError(f"{name} has shape {tuple(x.shape)}; expected [M, K] (flatten leading dims first)")
    if k is not None and x.shape[1] != k:
        raise QuantInputError(f"{name} has {x.shape[1]} features (shape {tuple(x.shape)}); the weight expects K={k}")
    _check_finite(x, name)


def check_bias(bias: torch.Tensor | None, n: int) -> None:
    """A bias is None or a finite float32/bf16/fp16 tensor of shape [N]."""
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor):
        raise QuantInputError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if tuple(bias.shape) != (n,):
        raise QuantInputError(f"bias has shape {tuple(bias.shape)}; expected [N] = [{n}]")
    if bias.dtype not in FLOAT_DTYPES:
        raise QuantInputError(f"bias has dtype {bias.dtype}; expected one of float32, bfloat16, float16")
    _check_finite(bias, "bias")


def act_stats_range(act_stats, lead: tuple[int, ...], scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Observed (min, max) of static-scheme activations as float32 tensors of shape [*lead, 1].

    ``act_stats`` is one ActStats (shared by every stacked weight) or a list with one per leading index
    (one per expert for stacked [E, N, K] weights).
    """
    if act_stats is None:
        raise QuantInputError(f"{scheme.name} has static activations: calibrate needs act_stats "
                              "(ActStats from calibration data; one per expert for stacked weights)")
    stats = act_stats if isinstance(act_stats, (list, tuple)) else [act_stats] * (lead[0] if lead else 1)
    if lead and len(stats) != lead[0]:
        raise QuantInputError(f"got {len(stats)} ActStats for {lead[0]} stacked weights")
    bounds: list[tuple[float, float]] = []
    for i, s in enumerate(stats):
        name = "act_stats" if not isinstance(act_stats, (list, tuple)) else f"act_stats[{i}]"
        try:  # python, numpy or 0-d torch numbers; not str, bool or None
            if any(isinstance(v, (str, bool)) for v in (s.min_val, s.max_val)):
                raise TypeError
            lo_i, hi_i = float(s.min_val), float(s.max_val)
        except (AttributeError, TypeError, ValueError, RuntimeError):
            shown = repr(s) if len(repr(s)) <= 80 else type(s).__name__
            raise QuantInputError(f"{name} is {shown}; expected dsq.ActStats(min_val, max_val) with numeric "
                                  "bounds (or a list of them, one per stacked weight)") from None
        if not (math.isfinite(lo_i) and math.isfinite(hi_i)):
            raise QuantInputError(f"{name} has min_val={lo_i}, max_val={hi_i}; expected finite bounds "
                                  "(an ActStats.empty() that never saw calibration data has infinite ones)")
        if lo_i > hi_i:
            raise QuantInputError(f"{name} has min_val={lo_i} > max_val={hi_i}; expected min_val <= max_val")
        bounds.append((lo_i, hi_i))
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float32).reshape(lead + (1,))
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float32).reshape(lead + (1,))
    return lo, hi


def check_packed(packed: PackedWeight, scheme: QuantScheme, ndim: int = 2) -> None:
    """A PackedWeight matches the scheme it is used with and has the expected number of dims."""
    if packed.scheme.lower() != scheme.name.lower():
        raise QuantInputError(f"packed weight was made for scheme {packed.scheme}, but is used with {scheme.name}")
    if len(packed.shape) != ndim:
        raise QuantInputError(f"packed weight has shape {packed.shape}; expected {ndim} dims here")


def check_moe_inputs(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
                     experts: ExpertWeights, scheme: QuantScheme,
                     expert_range: tuple[int, int] | None) -> None:
    """x [T, H]; topk_ids integer [T, k] in [0, E); topk_weights float [T, k]; expert_range within [0, E]."""
    check_packed(experts.gate_up, scheme, ndim=3)
    check_packed(experts.down, scheme, ndim=3)
    e, two_i, h = experts.gate_up.shape
    if two_i % 2:
        raise QuantInputError(f"experts.gate_up has {two_i} rows; expected 2*I (gate rows then up rows)")
    if tuple(experts.down.shape) != (e, h, two_i // 2):
        raise QuantInputError(
            f"experts.down has shape {experts.down.shape}; expected [E, H, I] = {(e, h, two_i // 2)}")
    check_activation(x, h, "x")
    t = x.shape[0]
    if topk_ids.dtype.is_floating_point or topk_ids.dtype == torch.bool or topk_ids.ndim != 2:
        raise QuantInputError(
            f"topk_ids has dtype {topk_ids.dtype} and shape {tuple(topk_ids.shape)}; expected integer [T, k]")
    if topk_ids.shape[0] != t:
        raise QuantInputError(f"topk_ids has {topk_ids.shape[0]} rows; x has T={t} tokens")
    if tuple(topk_weights.shape) != tuple(topk_ids.shape) or not topk_weights.dtype.is_floating_point:
        raise QuantInputError(
            f"topk_weights has dtype {topk_weights.dtype} and shape {tuple(topk_weights.shape)}; "
            f"expected float of the same shape as topk_ids {tuple(topk_ids.shape)}")
    if topk_ids.numel() and (int(topk_ids.min()) < 0 or int(topk_ids.max()) >= e):
        raise QuantInputError(
            f"topk_ids has values in [{int(topk_ids.min())}, {int(topk_ids.max())}]; expected expert ids in [0, {e})")
    _check_finite(topk_weights, "topk_weights")
    if expert_range is not None:
        lo, hi = expert_range
        if not (0 <= lo <= hi <= e):
            raise QuantInputError(f"expert_range {expert_range} must satisfy 0 <= lo <= hi <= E={e}")
