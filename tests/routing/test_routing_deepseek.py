"""dsq.routing against transformers' DeepseekV3 and Mixtral routers on random inputs."""

from __future__ import annotations

import pytest
import torch

from dsq.errors import QuantInputError
from dsq.routing import deepseek_v3_route, softmax_topk

transformers = pytest.importorskip("transformers")


def _by_id(weights: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sorted by expert id, so routers that order the k choices differently compare equal."""
    order = ids.argsort(dim=-1)
    return weights.gather(1, order), ids.gather(1, order)


def _hf_deepseek(n_experts, top_k, n_group, topk_group, norm, scale, hidden, seed):
    from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

    cfg = DeepseekV3Config(hidden_size=hidden, n_routed_experts=n_experts, num_experts_per_tok=top_k,
                           n_group=n_group, topk_group=topk_group, norm_topk_prob=norm,
                           routed_scaling_factor=scale)
    router = DeepseekV3TopkRouter(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        router.weight.copy_(torch.randn(n_experts, hidden, generator=g) * 0.2)
        router.e_score_correction_bias.copy_(torch.randn(n_experts, generator=g) * 0.3)
    return router


@pytest.mark.parametrize("n_experts,top_k,n_group,topk_group,norm,scale", [
    (256, 8, 8, 4, True, 2.5),     # DeepSeek-V3
    (64, 6, 8, 3, True, 1.0),
    (32, 4, 4, 4, False, 1.5),     # every group kept
    (16, 2, 1, 1, True, 1.0),      # no grouping
    (16, 1, 8, 2, False, 2.0),     # top-1
])
def test_deepseek_matches_transformers(n_experts, top_k, n_group, topk_group, norm, scale):
    hidden, t = 32, 97
    router = _hf_deepseek(n_experts, top_k, n_group, topk_group, norm, scale, hidden, seed=n_experts + top_k)
    x = torch.randn(t, hidden, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits, hf_w, hf_ids = router(x)
    w, ids = deepseek_v3_route(logits, router.e_score_correction_bias, top_k, n_group, topk_group,
                               norm_topk_prob=norm, routed_scaling_factor=scale)
    assert w.dtype == torch.float32 and ids.dtype == torch.int64 and ids.shape == (t, top_k)
    w_s, ids_s = _by_id(w, ids)
    hw_s, hids_s = _by_id(hf_w, hf_ids)
    assert torch.equal(ids_s, hids_s)
    torch.testing.assert_close(w_s, hw_s, rtol=1e-6, atol=1e-7)


def test_deepseek_bias_selects_but_does_not_weight():
    # Expert 3 has the lowest score but a huge bias: it must be chosen, with its own (small) sigmoid score.
    logits = torch.tensor([[2.0, 1.0, 0.5, -3.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 10.0])
    w, ids = deepseek_v3_route(logits, bias, top_k=2, norm_topk_prob=False)
    assert ids.tolist() == [[3, 0]]
    torch.testing.assert_close(w, torch.sigmoid(torch.tensor([[-3.0, 2.0]])))


def test_deepseek_group_limit():
    # Group 0 = experts 0,1; group 1 = experts 2,3. Expert 2 alone is the best, but group 0's top-2 sum wins.
    logits = torch.tensor([[1.0, 1.0, 3.0, -5.0]])
    w, ids = deepseek_v3_route(logits, None, top_k=2, n_group=2, topk_group=1, norm_topk_prob=True,
                               routed_scaling_factor=2.0)
    assert sorted(ids[0].tolist()) == [0, 1]
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.0]]))


@pytest.mark.parametrize("renormalize", [True, False])
def test_softmax_topk_matches_mixtral(renormalize):
    from transformers.models.mixtral.configuration_mixtral import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    cfg = MixtralConfig(hidden_size=24, num_local_experts=12, num_experts_per_tok=3)
    router = MixtralTopKRouter(cfg)
    with torch.no_grad():
        router.weight.copy_(torch.randn(12, 24, generator=torch.Generator().manual_seed(3)))
    x = torch.randn(50, 24, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits, hf_w, hf_ids = router(x)
    w, ids = softmax_topk(logits, 3, renormalize=renormalize)
    assert torch.equal(ids, hf_ids)
    if renormalize:
        torch.testing.assert_close(w, hf_w)
    else:
        torch.testing.assert_close(w, torch.softmax(logits.float(), -1).gather(1, hf_ids))
        assert not torch.allclose(w.sum(-1), torch.ones(50))


def test_bad_inputs_name_the_problem():
    with pytest.raises(QuantInputError, match="router_logits"):
        deepseek_v3_route(torch.randn(4, 4, 4), None, 2)
    with pytest.raises(QuantInputError, match="n_group"):
        deepseek_v3_route(torch.randn(4, 10), None, 2, n_group=4, topk_group=2)
    with pytest.raises(QuantInputError, match="e_score_correction_bias"):
        deepseek_v3_route(torch.randn(4, 8), torch.zeros(7), 2)
    with pytest.raises(QuantInputError, match="top_k"):
        deepseek_v3_route(torch.randn(4, 8), None, 5, n_group=4, topk_group=2)
    with pytest.raises(QuantInputError, match="NaN"):
        softmax_topk(torch.tensor([[0.0, float("nan")]]), 1)
