"""A synthetic DeepSeek-V3-shaped checkpoint: real tensor names, widths and dtypes; fewer layers and experts.

Layout (DeepSeek-V3's Hugging Face checkpoint, ``deepseek-ai/DeepSeek-V3`` config_671B / model.py): per
decoder layer ``model.layers.i``: ``input_layernorm`` / ``post_attention_layernorm`` [H]; MLA attention
``self_attn.q_a_proj`` [q_lora, H], ``q_a_layernorm`` [q_lora], ``q_b_proj`` [heads*(nope+rope), q_lora],
``kv_a_proj_with_mqa`` [kv_lora+rope, H], ``kv_a_layernorm`` [kv_lora], ``kv_b_proj`` [heads*(nope+v),
kv_lora], ``o_proj`` [H, heads*v]; layers ``i < first_k_dense`` a dense MLP ``mlp.{gate,up}_proj`` [I, H],
``down_proj`` [H, I]; the others a router ``mlp.gate`` [E, H] (bf16) with ``e_score_correction_bias`` [E]
(float32), shared experts ``mlp.shared_experts.*`` and routed experts ``mlp.experts.<e>.{gate,up,down}_proj``
([I_moe, H], [I_moe, H], [H, I_moe]). After the decoder layers, each MTP layer is a full MoE decoder layer
plus ``embed_tokens``, ``enorm``, ``hnorm``, ``eh_proj`` [H, 2H], ``shared_head.norm`` and
``shared_head.head`` [vocab, H]. ``model.embed_tokens``, ``model.norm`` and ``lm_head`` complete it.

``dtype="fp8"`` stores every Linear except routers and heads as float8 e4m3 with a float32
``weight_scale_inv`` [ceil(N/128), ceil(K/128)] right after it, as DeepSeek ships V3/R1; ``dtype="bf16"``
stores everything in bfloat16. Values: ``exact=True`` draws every tensor from its own seeded normal
distribution and block-quantizes it the way DeepSeek's fp8 weights were made (``s = amax / 448``,
``q = e4m3(w / s)``); ``exact=False`` (benchmarks) copies slices of one random pool at random offsets, which
is as fast as the disk and still gives realistic value distributions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .st_format import StreamWriter

__all__ = ["SyntheticSpec", "PRESETS", "tensor_specs", "write_synthetic"]


@dataclass(frozen=True)
class SyntheticSpec:
    hidden: int = 7168
    intermediate: int = 18432
    moe_intermediate: int = 2048
    q_lora: int = 1536
    kv_lora: int = 512
    heads: int = 128
    nope: int = 128
    rope: int = 64
    v_head: int = 128
    vocab: int = 129280
    layers: int = 61
    first_dense: int = 3
    experts: int = 256
    shared: int = 1
    topk: int = 8
    mtp: int = 1
    dtype: str = "fp8"  # fp8 | bf16
    shard_bytes: int = 5 * 10**9
    seed: int = 0


PRESETS = {
    # DeepSeek-V3/R1 671B itself (for byte counts and projections; never written)
    "deepseek-v3": SyntheticSpec(),
    # real widths, 1 dense + 5 MoE layers of 24 experts + 1 MTP layer, vocab cut: ~12.5 GB in fp8
    "bench": SyntheticSpec(vocab=32768, layers=6, first_dense=1, experts=24, shard_bytes=10**9),
    # tiny, for tests: every kind of tensor; output widths 192 and 160 give short edge blocks (K stays a
    # multiple of 128, which group-128 schemes require)
    "tiny": SyntheticSpec(hidden=256, intermediate=384, moe_intermediate=128, q_lora=128, kv_lora=128, heads=2,
                          nope=64, rope=32, v_head=64, vocab=512, layers=3, first_dense=1, experts=4, topk=2,
                          mtp=1, shard_bytes=400_000),
}

_FP8, _BF16, _F32 = torch.float8_e4m3fn, torch.bfloat16, torch.float32


def _moe_layer(p: str, s: SyntheticSpec) -> list[tuple[str, str, tuple[int, int]]]:
    out = [(f"{p}.mlp.gate.weight", "router", (s.experts, s.hidden)),
           (f"{p}.mlp.gate.e_score_correction_bias", "f32", (s.experts,))]
    si = s.moe_intermediate * s.shared
    out += [(f"{p}.mlp.shared_experts.gate_proj.weight", "linear", (si, s.hidden)),
            (f"{p}.mlp.shared_experts.up_proj.weight", "linear", (si, s.hidden)),
            (f"{p}.mlp.shared_experts.down_proj.weight", "linear", (s.hidden, si))]
    for e in range(s.experts):
        q = f"{p}.mlp.experts.{e}"
        out += [(f"{q}.gate_proj.weight", "linear", (s.moe_intermediate, s.hidden)),
                (f"{q}.up_proj.weight", "linear", (s.moe_intermediate, s.hidden)),
                (f"{q}.down_proj.weight", "linear", (s.hidden, s.moe_intermediate))]
    return out


def _layer(i: int, s: SyntheticSpec, moe: bool) -> list[tuple[str, str, tuple]]:
    p = f"model.layers.{i}"
    a = f"{p}.self_attn"
    out = [(f"{p}.input_layernorm.weight", "norm", (s.hidden,)),
           (f"{a}.q_a_proj.weight", "linear", (s.q_lora, s.hidden)),
           (f"{a}.q_a_layernorm.weight", "norm", (s.q_lora,)),
           (f"{a}.q_b_proj.weight", "linear", (s.heads * (s.nope + s.rope), s.q_lora)),
           (f"{a}.kv_a_proj_with_mqa.weight", "linear", (s.kv_lora + s.rope, s.hidden)),
           (f"{a}.kv_a_layernorm.weight", "norm", (s.kv_lora,)),
           (f"{a}.kv_b_proj.weight", "linear", (s.heads * (s.nope + s.v_head), s.kv_lora)),
           (f"{a}.o_proj.weight", "linear", (s.hidden, s.heads * s.v_head)),
           (f"{p}.post_attention_layernorm.weight", "norm", (s.hidden,))]
    if moe:
        out += _moe_layer(p, s)
    else:
        out += [(f"{p}.mlp.gate_proj.weight", "linear", (s.intermediate, s.hidden)),
                (f"{p}.mlp.up_proj.weight", "linear", (s.intermediate, s.hidden)),
                (f"{p}.mlp.down_proj.weight", "linear", (s.hidden, s.intermediate))]
    return out


def tensor_specs(s: SyntheticSpec) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """Every tensor (name, dtype, shape) of the checkpoint, in file order (scale partners after weights)."""
    raw = [("model.embed_tokens.weight", "embed", (s.vocab, s.hidden))]
    for i in range(s.layers):
        raw += _layer(i, s, moe=i >= s.first_dense)
    for j in range(s.mtp):
        i = s.layers + j
        p = f"model.layers.{i}"
        raw += [(f"{p}.embed_tokens.weight", "embed", (s.vocab, s.hidden)), (f"{p}.enorm.weight", "norm", (s.hidden,)),
                (f"{p}.hnorm.weight", "norm", (s.hidden,)), (f"{p}.eh_proj.weight", "linear", (s.hidden, 2 * s.hidden))]
        raw += _layer(i, s, moe=True)
        raw += [(f"{p}.shared_head.norm.weight", "norm", (s.hidden,)),
                (f"{p}.shared_head.head.weight", "embed", (s.vocab, s.hidden))]
    raw += [("model.norm.weight", "norm", (s.hidden,)), ("lm_head.weight", "embed", (s.vocab, s.hidden))]
    out = []
    for name, kind, shape in raw:
        if kind == "linear" and s.dtype == "fp8":
            out.append((name, _FP8, shape))
            out.append((name + "_scale_inv", _F32, (-(-shape[0] // 128), -(-shape[1] // 128))))
        else:
            out.append((name, _F32 if kind == "f32" else _BF16, shape))
    return out


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * torch.empty(0, dtype=dtype).element_size()


class _Values:
    """Tensor values: seeded per tensor (exact) or slices of a random pool (fast)."""

    def __init__(self, spec: SyntheticSpec, exact: bool):
        self.spec, self.exact = spec, exact
        self._pending_scale: dict[str, torch.Tensor] = {}
        if not exact:
            g = torch.Generator().manual_seed(spec.seed)
            n = 1 << 24
            self.pool = {_FP8: (torch.randn(n, generator=g) * 96).clamp(-448, 448).to(_FP8).view(torch.uint8),
                         _BF16: (torch.randn(n, generator=g) * 0.02).to(_BF16).view(torch.uint8)}
            self.gen = g

    def _gen(self, name: str) -> torch.Generator:
        h = int.from_bytes(hashlib.sha256(f"{self.spec.seed}:{name}".encode()).digest()[:8], "little")
        return torch.Generator().manual_seed(h)

    def make(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        if name.endswith("_scale_inv"):
            return self._pending_scale.pop(name)
        if name.endswith("e_score_correction_bias"):
            return torch.randn(shape, generator=self._gen(name)) * 0.1
        if name.endswith("norm.weight"):
            return (1 + 0.1 * torch.randn(shape, generator=self._gen(name))).to(dtype)
        if self.exact:
            w = torch.randn(shape, generator=self._gen(name)) * 0.02
            if dtype != _FP8:
                return w.to(dtype)
            return self._block_quant(name, w)
        nb = _nbytes(dtype, shape)
        pool = self.pool[dtype]
        size = torch.empty(0, dtype=dtype).element_size()
        start = int(torch.randint(0, pool.numel() // size, (1,), generator=self.gen)) * size  # whole elements
        reps = -(-(start + nb) // pool.numel())
        flat = pool.repeat(reps)[start:start + nb] if reps > 1 else pool[start:start + nb]
        t = flat.clone().view(dtype).view(shape)
        if dtype == _FP8:
            g = (shape[0] + 127) // 128, (shape[1] + 127) // 128
            self._pending_scale[name + "_scale_inv"] = torch.rand(g, generator=self.gen) * 2e-4 + 1e-5
        return t

    def _block_quant(self, name: str, w: torch.Tensor) -> torch.Tensor:
        n, k = w.shape
        pn, pk = (-n) % 128, (-k) % 128
        wp = torch.nn.functional.pad(w, (0, pk, 0, pn)).view((n + pn) // 128, 128, (k + pk) // 128, 128)
        s = wp.abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448.0
        q = (wp / s[:, None, :, None]).clamp(-448, 448).to(_FP8).view(n + pn, k + pk)[:n, :k].contiguous()
        self._pending_scale[name + "_scale_inv"] = s.to(_F32)
        return q


def _config(s: SyntheticSpec) -> dict:
    cfg = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": s.hidden,
        "intermediate_size": s.intermediate, "moe_intermediate_size": s.moe_intermediate,
        "num_hidden_layers": s.layers, "num_attention_heads": s.heads, "num_key_value_heads": s.heads,
        "n_shared_experts": s.shared, "n_routed_experts": s.experts, "num_experts_per_tok": s.topk,
        "routed_scaling_factor": 2.5, "kv_lora_rank": s.kv_lora, "q_lora_rank": s.q_lora,
        "qk_rope_head_dim": s.rope, "qk_nope_head_dim": s.nope, "v_head_dim": s.v_head, "topk_method": "noaux_tc",
        "n_group": 1, "topk_group": 1, "moe_layer_freq": 1, "first_k_dense_replace": s.first_dense,
        "norm_topk_prob": True, "scoring_func": "sigmoid", "vocab_size": s.vocab, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096, "rope_theta": 10000, "hidden_act": "silu", "torch_dtype": "bfloat16",
        "num_nextn_predict_layers": s.mtp, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1,
    }
    if s.dtype == "fp8":
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [128, 128]}
    return cfg


def write_synthetic(directory, spec: SyntheticSpec | str = "tiny", exact: bool = True, **overrides) -> dict:
    """Write the checkpoint (shards, index, config.json, a small tokenizer_config.json); returns its facts."""
    s = PRESETS[spec] if isinstance(spec, str) else spec
    s = replace(s, **overrides) if overrides else s
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    specs = tensor_specs(s)
    groups: list[list] = [[]]
    size = 0
    for name, dtype, shape in specs:
        nb = _nbytes(dtype, shape)
        partner = name.endswith("_scale_inv")
        if groups[-1] and size + nb > s.shard_bytes and not partner:
            groups.append([])
            size = 0
        groups[-1].append((name, dtype, shape))
        size += nb
    n = len(groups)
    values = _Values(s, exact)
    weight_map = {}
    for gi, group in enumerate(groups):
        fname = f"model-{gi + 1:05d}-of-{n:05d}.safetensors"
        w = StreamWriter(d / fname, group, {"format": "pt"})
        for name, dtype, shape in group:
            w.write(name, values.make(name, dtype, shape))
            weight_map[name] = fname
        w.close()
    total = sum(_nbytes(dt, sh) for _, dt, sh in specs)
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    (d / "config.json").write_text(json.dumps(_config(s), indent=2) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 4096, "synthetic": True}) + "\n")
    return {"spec": asdict(s), "shards": n, "tensors": len(specs), "bytes": total}
