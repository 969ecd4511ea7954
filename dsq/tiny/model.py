"""The embedded tiny DeepSeek-V3-architecture model: its configuration, loading, and routing statistics.

Architecture (transformers ``DeepseekV3ForCausalLM``; every Linear has in/out features that are
multiples of 128 so that group-128 and 128x128-block schemes tile every layer exactly):

* vocab 256 (bytes, :mod:`dsq.tiny.tokenizer`), hidden 256, 4 decoder layers, RMSNorm eps 1e-6,
  untied embedding / lm_head, context 256 bytes, RoPE theta 10000 (interleaved, as DeepSeek).
* MLA attention, 4 heads: q_a 256->128 (q_lora_rank 128), q_b 128->4*(64 nope + 128 rope) = 768,
  kv_a 256->128+128 (kv_lora_rank 128 + shared 128-dim rope key), kv_b 128->4*(64 nope + 64 v) = 512,
  o 4*64=256->256. The rope head dim is 128 (DeepSeek-V3 uses 64) only so that kv_a's output width
  (kv_lora_rank + rope dim) is a multiple of 128.
* layer 0: dense SwiGLU MLP, intermediate 768. Layers 1-3: MoE with 1 shared expert and 16 routed
  experts (SwiGLU, intermediate 128 each), sigmoid router with DeepSeek's group-limited top-k
  (4 groups of 4, 2 groups kept, top-2 experts), normalised top-k weights, scaling factor 1.0, and
  the aux-loss-free ``e_score_correction_bias`` (learned during training by :mod:`dsq.tiny.train`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from dsq.errors import CheckpointError

HERE = Path(__file__).resolve().parent
CONTEXT = 256

#: transformers ``DeepseekV3Config`` keyword arguments of the embedded model
CONFIG_KWARGS: dict = dict(
    vocab_size=256, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
    num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
    n_shared_experts=1, n_routed_experts=16, num_experts_per_tok=2, n_group=4, topk_group=2,
    routed_scaling_factor=1.0, norm_topk_prob=True, first_k_dense_replace=1,
    q_lora_rank=128, kv_lora_rank=128, qk_nope_head_dim=64, qk_rope_head_dim=128, v_head_dim=64,
    max_position_embeddings=CONTEXT, rope_interleave=True, rms_norm_eps=1e-6, initializer_range=0.02,
    tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    num_nextn_predict_layers=0, use_cache=False,
)


def tiny_config():
    """A fresh ``DeepseekV3Config`` for the embedded model."""
    from transformers import DeepseekV3Config

    return DeepseekV3Config(**CONFIG_KWARGS)


def default_model_dir() -> Path:
    """Folder with the shipped ``config.json`` and ``model.safetensors`` (bf16 weights) and nothing else:
    ``dsq.save`` carries the other files of a model's source folder into every checkpoint."""
    return HERE / "model"


def load_model(path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
    """Load a float ``DeepseekV3ForCausalLM`` (the shipped tiny model by default) for evaluation.

    Weights are stored in bf16 (the router's correction bias in fp32); ``dtype`` is the compute dtype
    they are cast to (fp32 by default, which represents every bf16 value exactly).
    """
    from transformers import DeepseekV3ForCausalLM

    d = Path(path) if path is not None else default_model_dir()
    for name in ("config.json", "model.safetensors"):
        if not (d / name).is_file():
            raise CheckpointError(f"{d / name} is missing: a float model folder needs config.json and "
                                  "model.safetensors (the tiny model ships them in dsq/tiny/model/)")
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 7M-parameter load needs no "Loading weights" bar
    try:
        model = DeepseekV3ForCausalLM.from_pretrained(str(d), dtype=dtype)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
    model.eval()
    return model


def routers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The top-k router modules (one per MoE layer), found by their ``e_score_correction_bias`` buffer."""
    return [(n, m) for n, m in model.named_modules()
            if hasattr(m, "e_score_correction_bias") and hasattr(m, "top_k")]


@contextmanager
def count_expert_load(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Count, per MoE layer, how many (token, slot) routing choices pick each routed expert.

    Yields a dict ``router name -> int64 tensor [n_routed_experts]`` that fills up while the model runs
    inside the ``with`` block. Relies on the router returning ``(logits, topk_weights, topk_indices)``.
    """
    counts: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in routers(model):
        counts[name] = torch.zeros(mod.num_experts, dtype=torch.int64)

        def hook(_m, _inp, out, name=name):
            idx = out[2]
            counts[name] += torch.bincount(idx.reshape(-1).to(torch.int64), minlength=counts[name].numel()).cpu()

        handles.append(mod.register_forward_hook(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


def is_dsq_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by ``dsq.save`` (compressed-tensors or msModelSlim layout)."""
    import json

    d = Path(path)
    if (d / "quant_model_description.json").is_file() or (d / "dsq_quantization.json").is_file():
        return True
    cfg = d / "config.json"
    if cfg.is_file():
        try:
            return "quantization_config" in json.loads(cfg.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{cfg} is not readable JSON: {exc}") from exc
    return False


def open_model(spec: str | os.PathLike | None = None, backend: str | None = None):
    """Resolve what ``dsq eval`` / ``dsq demo`` evaluate: returns ``(model, kind)``.

    ``spec`` ``None`` or ``"tiny"``: the shipped float model (kind ``"float"``). A folder written by
    ``dsq.save``: ``dsq.load(folder, backend=backend or "cpu")`` (kind ``"dsq"``). Any other folder with
    config.json + model.safetensors: a float transformers model.
    """
    if spec is None or str(spec) == "tiny":
        return load_model(), "float"
    d = Path(spec)
    if not d.is_dir():
        raise CheckpointError(f"{d} is not a folder; give 'tiny' (the embedded model), a float model folder "
                              "(config.json + model.safetensors) or a folder written by dsq.save")
    if is_dsq_checkpoint(d):
        import dsq

        model = dsq.load(str(d), backend=backend or "cpu")
        if hasattr(model, "eval"):
            model.eval()
        return model, "dsq"
    return load_model(d), "float"
