"""MoE routing: which experts each token visits and with what weight (shared by every backend).

Two routers, both pure torch (any device) and computed in float32 whatever the logits' dtype:

DeepSeek-V3 (:func:`deepseek_v3_route`), from router logits ``z`` [T, E]:
    1. ``s = sigmoid(z)``                                        affinity scores, [T, E]
    2. ``c = s + b``                                             b = ``e_score_correction_bias`` [E]; c is used
                                                                 for *selection only*, never as a weight
    3. groups: the E experts form ``n_group`` consecutive groups of E / n_group experts; a group's score is
       the sum of the two largest ``c`` in it (the largest alone when a group has one expert)
    4. keep the ``topk_group`` best groups; experts of the other groups get ``c = -inf``
    5. ``ids`` = the ``top_k`` experts with the largest ``c``   (among the kept groups)
    6. ``w = s[ids]``                                            the *uncorrected* sigmoid scores
    7. if ``norm_topk_prob``: ``w = w / (sum(w) + 1e-20)``       per token
    8. ``w = w * routed_scaling_factor``
    With ``n_group = topk_group = 1`` this is plain sigmoid top-k.

Softmax top-k (:func:`softmax_topk`, Mixtral/Qwen-MoE style):
    ``p = softmax(z)`` over E (float32), ``ids`` = the ``top_k`` largest ``p``, ``w = p[ids]``, and if
    ``renormalize``: ``w = w / sum(w)``.

Both return ``(topk_weights float32 [T, k], topk_ids int64 [T, k])`` with each row's experts in descending
order of their selection score (ties broken by ``torch.topk``), ready for ``Backend.moe``.
"""

from __future__ import annotations

import torch

from dsq.errors import QuantInputError

__all__ = ["deepseek_v3_route", "softmax_topk"]


def _check_logits(router_logits: torch.Tensor, top_k: int) -> tuple[int, int]:
    if not isinstance(router_logits, torch.Tensor) or router_logits.ndim != 2:
        shape = tuple(router_logits.shape) if isinstance(router_logits, torch.Tensor) else type(router_logits)
        raise QuantInputError(f"router_logits has shape {shape}; expected [T, E] (flatten leading dims first)")
    if not router_logits.dtype.is_floating_point:
        raise QuantInputError(f"router_logits has dtype {router_logits.dtype}; expected a float dtype")
    t, e = router_logits.shape
    if not 1 <= top_k <= e:
        raise QuantInputError(f"top_k={top_k} must be in [1, E={e}] for router_logits of shape {(t, e)}")
    if t and not torch.isfinite(router_logits).all():
        raise QuantInputError("router_logits has NaN or Inf values; routing needs finite logits")
    return t, e


def deepseek_v3_route(router_logits: torch.Tensor, e_score_correction_bias: torch.Tensor | None, top_k: int,
                      n_group: int = 1, topk_group: int = 1, norm_topk_prob: bool = True,
                      routed_scaling_factor: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3 group-limited sigmoid routing (module docstring, steps 1-8).

    Args:
        router_logits: [T, E] float, the gate's output ``x @ W_gate^T`` (before any activation).
        e_score_correction_bias: [E] float, or None for zeros; shifts selection only.
        top_k: experts per token (8 for DeepSeek-V3).
        n_group / topk_group: E experts in ``n_group`` groups, of which ``topk_group`` are eligible per token
            (8 / 4 for DeepSeek-V3).
        norm_topk_prob: divide the selected scores by their sum (+1e-20).
        routed_scaling_factor: final multiplier (2.5 for DeepSeek-V3).
    Returns:
        (topk_weights float32 [T, top_k], topk_ids int64 [T, top_k]).
    """
    t, e = _check_logits(router_logits, top_k)
    if n_group < 1 or e % n_group:
        raise QuantInputError(f"n_group={n_group} must be >= 1 and divide the number of experts E={e}")
    if not 1 <= topk_group <= n_group:
        raise QuantInputError(f"topk_group={topk_group} must be in [1, n_group={n_group}]")
    per_group = e // n_group
    if top_k > topk_group * per_group:
        raise QuantInputError(
            f"top_k={top_k} exceeds the {topk_group * per_group} experts of the {topk_group} kept groups "
            f"(E={e}, n_group={n_group})")
    scores = torch.sigmoid(router_logits.float())
    choice = scores
    if e_score_correction_bias is not None:
        if tuple(e_score_correction_bias.shape) != (e,):
            raise QuantInputError(
                f"e_score_correction_bias has shape {tuple(e_score_correction_bias.shape)}; expected [E] = [{e}]")
        choice = scores + e_score_correction_bias.to(device=scores.device, dtype=torch.float32)
    if n_group > 1 and topk_group < n_group:
        grouped = choice.view(t, n_group, per_group)
        group_score = grouped.topk(min(2, per_group), dim=-1).values.sum(dim=-1)  # [T, n_group]
        keep = group_score.topk(topk_group, dim=-1).indices
        mask = torch.zeros(t, n_group, dtype=torch.bool, device=scores.device)
        mask.scatter_(1, keep, True)
        choice = grouped.masked_fill(~mask.unsqueeze(-1), float("-inf")).view(t, e)
    topk_ids = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(1, topk_ids)
    if norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    weights = weights * float(routed_scaling_factor)
    return weights, topk_ids.to(torch.int64)


def softmax_topk(router_logits: torch.Tensor, top_k: int,
                 renormalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax top-k routing: ``w, ids = topk(softmax(z))``, optionally renormalised to sum to 1.

    Returns (topk_weights float32 [T, top_k], topk_ids int64 [T, top_k]).
    """
    _check_logits(router_logits, top_k)
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, topk_ids = probs.topk(top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, topk_ids.to(torch.int64)
