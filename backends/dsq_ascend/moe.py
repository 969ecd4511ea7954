"""Routed-expert MoE as vllm-ascend's AllGather path runs it, on torch_npu or the emulated ops.

    1. npu_moe_init_routing_v2(x, topk_ids, active_expert_range=[lo, hi], expert_tokens_num_type=1,
       quant_mode=1 (int8 schemes: dynamic per-row quantization fused in) or -1 (weight-only))
       -> rows sorted by expert, per-row scales, per-expert counts (the group_list), src -> dst row index
    2. npu_grouped_matmul(gate_up, per_token_scale, group_list counts) -> h [rows, 2I] in x's dtype
    3. npu_swiglu(h) -> a;  npu_dynamic_quant(a) (int8 schemes)
    4. npu_grouped_matmul(down) -> o [rows, H]
    5. npu_moe_token_unpermute(o, row_idx, topk_weights) -> y [T, H]

Expert parallelism: entries routed outside [lo, hi) get row index -1 from step 1 and rows past the
routed count are undefined. Before step 5 those rows are set to zero, the -1 indices point at a zeroed
row and their weights are zeroed, so dropped entries contribute exactly 0 (0 * NaN would not).
Numerics match dsq's reference MoE: h and o are rounded to x's dtype, swiglu runs in float32.
Scales: bf16 outputs take bf16 weight scales (the grouped matmul's bf16 combination, as vllm-ascend
casts them); fp16 outputs fp32 scales; float32 activations take the int32 accumulator and apply the
scales here in float32.
"""

from __future__ import annotations

import torch

from dsq.errors import UnsupportedError
from dsq.schemes import QuantScheme

from .activations import dynamic_int8


def _gmm_int8(ops, xq, pts, counts, dl: dict, out_dtype: torch.dtype) -> torch.Tensor:
    kw = dict(split_item=2, group_type=0, group_list=counts, group_list_type=1)
    if out_dtype == torch.float32:
        acc = ops.npu_grouped_matmul([xq], [dl["weight"]], output_dtype=torch.int32, **kw)[0]
        # rows belong to experts in order; expand the per-expert scale to rows
        row_scale = torch.repeat_interleave(dl["scale"], counts, dim=0, output_size=int(counts.sum()))
        y = torch.full(acc.shape, float("nan"), dtype=torch.float32, device=acc.device)
        used = row_scale.shape[0]
        y[:used] = acc[:used].to(torch.float32) * row_scale * pts[:used].unsqueeze(-1)
        return y
    scale = dl["scale"].to(torch.bfloat16 if out_dtype == torch.bfloat16 else torch.float32)
    return ops.npu_grouped_matmul([xq], [dl["weight"]], scale=[scale], per_token_scale=[pts],
                                  output_dtype=out_dtype, **kw)[0]


def _gmm_weight_only(ops, x, counts, dl: dict, n: int) -> torch.Tensor:
    if x.dtype == torch.float32:  # antiquant gmm takes fp16/bf16: per-expert fp32 matmul on dequantized weights
        y = torch.full((x.shape[0], n), float("nan"), dtype=torch.float32, device=x.device)
        start = 0
        for e, c in enumerate(counts.tolist()):
            y[start:start + c] = x[start:start + c] @ dl["f32"][e]
            start += c
        return y
    if dl["k_pad"] != x.shape[1]:
        x = torch.nn.functional.pad(x, (0, dl["k_pad"] - x.shape[1]))
    if dl["n_pad"] != n:
        raise UnsupportedError(f"ascend moe: int4 expert weights need N % 8 == 0 for int32 packing, got N={n}")
    off = None if dl["offset"] is None else [dl["offset"].to(x.dtype)]
    return ops.npu_grouped_matmul([x], [dl["weight"]], antiquant_scale=[dl["scale"].to(x.dtype)],
                                  antiquant_offset=off, split_item=2, group_type=0, group_list=counts,
                                  group_list_type=1, output_dtype=x.dtype)[0]


def run_moe(ops, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, w13: dict, w2: dict,
            scheme: QuantScheme, lo: int, hi: int, num_experts: int) -> torch.Tensor:
    """y [T, H] in x's dtype; w13 / w2 are the prepared (E, K, N) device layouts of gate_up and down."""
    t, k = topk_ids.shape
    h_dim, inter = w13["k"], w2["k"]
    if t == 0 or k == 0 or lo == hi:
        return torch.zeros((t, h_dim), dtype=x.dtype, device=x.device)
    quantized = not scheme.weight_only
    expanded, row_idx, counts, row_scale = ops.npu_moe_init_routing_v2(
        x, topk_ids.to(torch.int32), active_num=t * k, expert_num=num_experts, expert_tokens_num_type=1,
        expert_tokens_num_flag=True, quant_mode=1 if quantized else -1, active_expert_range=[lo, hi])
    sel13, sel2 = _select(w13, lo, hi), _select(w2, lo, hi)
    if quantized:
        h = _gmm_int8(ops, expanded, row_scale, counts, sel13, x.dtype)
        a = ops.npu_swiglu(h)
        aq, apts = dynamic_int8(a, ops)
        o = _gmm_int8(ops, aq, apts, counts, sel2, x.dtype)
    else:
        h = _gmm_weight_only(ops, expanded, counts, sel13, 2 * inter)
        a = ops.npu_swiglu(h)
        o = _gmm_weight_only(ops, a, counts, sel2, h_dim)
    rows = t * k
    valid_rows = torch.arange(rows, device=o.device) < counts.sum()
    o = torch.where(valid_rows.unsqueeze(-1), o, torch.zeros((), dtype=o.dtype, device=o.device))
    dropped = row_idx < 0
    idx = torch.where(dropped, torch.full_like(row_idx, rows - 1), row_idx).to(torch.int32)
    probs = torch.where(dropped.reshape(t, k), torch.zeros((), device=x.device),
                        topk_weights.to(torch.float32))
    y = ops.npu_moe_token_unpermute(o.to(torch.float32), idx, probs)
    return y.to(x.dtype)


def _select(dl: dict, lo: int, hi: int) -> dict:
    """The prepared layout restricted to experts lo..hi-1 (what the grouped matmul sees)."""
    out = dict(dl)
    for key in ("weight", "scale", "offset", "f32"):
        if out.get(key) is not None:
            out[key] = _experts(out[key], lo, hi)
    return out


def _experts(w, lo: int, hi: int):
    """Experts lo..hi-1 of a stacked weight (a torch tensor or an emulated NZ tensor)."""
    if isinstance(w, torch.Tensor):
        return w[lo:hi]
    from .emulated_ops import NZTensor

    if isinstance(w, NZTensor):
        out = NZTensor.__new__(NZTensor)
        out.shape, out.dtype, out.device = (hi - lo,) + w.shape[1:], w.dtype, w.device
        out.fractal = w.fractal[lo:hi]
        return out
    return w[lo:hi]

