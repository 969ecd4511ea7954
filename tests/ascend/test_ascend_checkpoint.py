"""Issue 7 item 5: a checkpoint saved in the Ascend (msModelSlim) format loads into the ascend backend and runs.

The backend runs on its emulated torch_npu ops (DSQ_EMULATE=1); its logits must agree with the same checkpoint
loaded on the numpy reference within the quantization-free arithmetic differences of the two backends.
"""

import pytest
import torch

import dsq

transformers = pytest.importorskip("transformers")


def _tiny_model():
    torch.manual_seed(0)
    cfg = transformers.DeepseekV3Config(
        vocab_size=256, hidden_size=128, intermediate_size=256, moe_intermediate_size=128, num_hidden_layers=2,
        first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
        num_attention_heads=2, num_key_value_heads=2, q_lora_rank=128, kv_lora_rank=128, qk_rope_head_dim=64,
        qk_nope_head_dim=64, v_head_dim=128, n_group=1, topk_group=1, max_position_embeddings=64)
    return transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()


def test_ascend_checkpoint_runs_on_emulated_npu(tmp_path, monkeypatch):
    monkeypatch.setenv("DSQ_EMULATE", "1")
    tokens = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(2))
    calib = [torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))]
    model = dsq.quantize(_tiny_model(), "deepseek-w4a8", backend="cpu", calib_data=calib, progress=False)
    out = dsq.save(model, tmp_path / "ascend-ckpt", format="ascend")
    assert (out / "quant_model_description.json").is_file()

    npu = dsq.load(out, backend="npu")
    assert dsq.get_backend("npu").mode == "emulated"
    kinds = {type(m).__name__ for m in npu.modules()}
    assert {"QuantLinear", "QuantExperts"} <= kinds
    assert all(m.backend.name == "ascend" for m in npu.modules() if type(m).__name__ in ("QuantLinear", "QuantExperts"))
    ref = dsq.load(out, backend="cpu")
    import dsq_ascend.emulated_ops as emulated

    calls: dict[str, int] = {}
    for op in ("npu_quant_matmul", "npu_grouped_matmul", "npu_moe_init_routing_v2"):
        real = getattr(emulated, op)
        monkeypatch.setattr(emulated, op, lambda *a, _op=op, _real=real, **k: (
            calls.__setitem__(_op, calls.get(_op, 0) + 1), _real(*a, **k))[1])
    with torch.no_grad():
        y_npu = npu(tokens).logits.float()
        y_ref = ref(tokens).logits.float()
    assert torch.isfinite(y_npu).all()
    rel = float((y_npu - y_ref).norm() / y_ref.norm())
    # bf16 activations: the two backends differ only by accumulation order and bf16 intermediate roundings
    assert set(calls) == {"npu_quant_matmul", "npu_grouped_matmul", "npu_moe_init_routing_v2"}, calls
    # int8 products are exact and both backends apply float32 scales, so the logits agree to bf16 rounding
    # (on this model they are identical)
    assert rel < 2e-2, rel
    assert (y_npu.argmax(-1) == y_ref.argmax(-1)).float().mean() > 0.9
