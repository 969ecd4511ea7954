"""One-token decode of the fused MoE for weight-only schemes (W4A16, W4A16_ASYM, W8A16): one GEMV per pair.

When a step routes a single token (T = 1, the latency-bound case of single-stream decoding), every touched
expert sees exactly one row, so the layer is ``top_k`` matrix-vector products per projection, bound by the
bytes of the touched experts. Tensor-core tiles would waste 15 of 16 rows; this path instead runs the M = 1
CUDA-core kernel of dsq_cuda.gemv_kernel on every (token, expert) pair at once (MOE mode: the program row
is the pair, the expert comes from ``topk_ids``):

    1. h[p, :] = x[p // top_k] @ gate_up[e(p)]^T      float32, scales applied (split-K atomics)
    2. a[p, :] = round(silu(round(h[p, :I])) * round(h[p, I:]))   (moe_decode_kernels.swiglu_kernel)
    3. o[p, :] = a[p] @ down[e(p)]^T                 float32
    4. y[t] = round(sum_j round(o[t*top_k + j]) * topk_weights[t, j])   (moe_decode.combine, one kernel)
the reference's formulas and rounding points (dsq_cuda.moe); only float32 summation order differs.

Layout (cached in ``PackedWeight.device_layout["dsq_cuda_moe_gemv:<device>"]``): each expert's codes in
the row-tile layout of dsq_cuda.slab (``w`` int32 ``[E, tiles, N, SW]``), scales float32 ``[E, N, G]``
(``ws``) and, for W4A16_ASYM, zero points unpacked to int8 ``[E, N, G]`` (``wz``).
"""

from __future__ import annotations

import torch

from dsq.qtypes import PackedWeight
from dsq.schemes import QuantScheme
from dsq_cuda._env import check_not_capturing
from dsq_cuda.mm import group_of
from dsq_cuda.slab import to_row_tiles
from dsq_cuda.unpack import unpack_zero_points

#: the largest token count this path serves (more tokens share experts: the tensor-core paths win)
GEMV_MAX_T = 1


def eligible(scheme: QuantScheme | None, t: int) -> bool:
    """Whether a step of ``t`` tokens with a weight-only packed scheme takes this path."""
    return scheme is not None and scheme.weight_only and scheme.weight_bits in (4, 8) and 1 <= t <= GEMV_MAX_T


def prepare(packed: PackedWeight, scheme: QuantScheme, device: torch.device) -> dict:
    """Row-tile layout of stacked experts ``[E, N, K]`` (made once per device, one expert at a time)."""
    key = f"dsq_cuda_moe_gemv:{device}"
    if key in packed.device_layout:
        return packed.device_layout[key]
    check_not_capturing("MoE row-tile layout")
    e, n, k = packed.shape
    bits, group = scheme.weight_bits, group_of(scheme)
    words = packed["weight_packed"]
    lay = {"w": torch.stack([to_row_tiles(words[i].to(device), k, bits, group) for i in range(e)]).contiguous(),
           "ws": packed["weight_scale"].to(device).float().contiguous()}
    if "weight_zero_point" in packed:
        lay["wz"] = unpack_zero_points(packed["weight_zero_point"].to(device), n)
    packed.device_layout[key] = lay
    return lay


def _gemv(a, lay, scheme, out, pair_ids, n, k, x_div, expert_range, num_experts):
    from dsq_cuda.configs import pick
    from dsq_cuda.gemv_kernel import launch

    group = group_of(scheme)
    cfg = pick(f"gemv{scheme.weight_bits}", 1, n, k, group, str(a.device))
    w, ws = lay["w"], lay["ws"]
    if w.shape[-1] != -cfg.block_k:  # prepare() builds dsq_cuda.slab.ROW_TILE_WORDS, which the configs pick
        raise RuntimeError(f"moe_gemv: layout width {w.shape[-1]} != config width {-cfg.block_k}")
    e_lo, e_hi = expert_range if expert_range is not None else (0, num_experts)
    launch(a, w, ws, lay.get("wz"), None, out, scheme, pair_ids.shape[0], n, k, cfg, group,
           moe=(pair_ids, w[0].numel(), ws[0].numel(), e_lo, e_hi, x_div))


def run_gemv(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, gate_up: PackedWeight,
             down: PackedWeight, scheme: QuantScheme, num_experts: int,
             expert_range: tuple[int, int] | None) -> torch.Tensor:
    """y [T, H] for already-validated inputs (see the module docstring)."""
    from dsq_cuda.moe_decode import combine
    from dsq_cuda.moe_decode_kernels import swiglu_kernel
    from dsq_cuda.moe_plan import OUT_KIND

    t, h = x.shape
    i = gate_up.shape[1] // 2
    top_k = topk_ids.shape[1]
    device = x.device
    up, dn = prepare(gate_up, scheme, device), prepare(down, scheme, device)
    ids = topk_ids.reshape(-1).to(torch.int32).contiguous()
    p = ids.shape[0]
    x = x if x.stride(-1) == 1 else x.contiguous()
    hbuf = torch.zeros((p, 2 * i), dtype=torch.float32, device=device)
    _gemv(x, up, scheme, hbuf, ids, 2 * i, h, top_k, expert_range, num_experts)
    inter = torch.empty((p, i), dtype=x.dtype, device=device)
    block = min(1024, max(16, 1 << (i - 1).bit_length()))
    swiglu_kernel[(p, -(-i // block))](hbuf, inter, i, hbuf.stride(0), inter.stride(0),
                                       OUT_KIND=OUT_KIND[x.dtype], BLOCK=block, num_warps=4)
    out = torch.zeros((p, h), dtype=torch.float32, device=device)
    _gemv(inter, dn, scheme, out, ids, h, i, 1, expert_range, num_experts)
    return combine(out, topk_weights, x.dtype)
