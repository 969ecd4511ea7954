"""CPU emulation of every torch_npu op the ascend backend calls, written from the op documentation.

This module is the executable statement of what dsq assumes each Ascend op computes. Function names and
signatures follow torch_npu so the backend calls ``ops.npu_quant_matmul(...)`` whether ``ops`` is the
real ``torch_npu`` or this module. Sources (see /work/shared/reference/torch_npu.md): Ascend/op-plugin
``docs/zh/custom_APIs/torch_npu/torch_npu-<op>.md`` and ``op_plugin_functions.yaml``; ops-nn golden
scripts; ops-transformer ``gmm/grouped_matmul/README.md``. Where the documents leave a result undefined
(rows past the routed count, int8 requantization rounding) the emulation either raises or fills the
output with NaN / a sentinel, so a backend that depends on undefined values fails its tests here.

Shared conventions:
    * integer matmuls accumulate exactly (float64 holds every int8 x int8 sum with K <= 65535 exactly);
    * float epilogues (scales, per-token scales, bias) run in float32 and round once to the output dtype;
    * weights may be passed as :class:`NZTensor` (FRACTAL_NZ storage) wherever the op accepts NZ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsq_ascend import layouts

ACL_FORMAT_ND = 2
ACL_FORMAT_FRACTAL_NZ = 29
_POISON_I8 = -128  #: fill for int8 rows the op documents as undefined
_POISON_I32 = -(2**31)


class NZTensor:
    """A matrix held in FRACTAL_NZ storage: ``fractal`` is (..., C1, R1, 16, C0); ``shape`` the logical shape."""

    def __init__(self, nd: torch.Tensor):
        self.shape = tuple(nd.shape)
        self.dtype = nd.dtype
        self.device = nd.device
        self.fractal = layouts.nd_to_nz(nd)

    def to_nd(self) -> torch.Tensor:
        return layouts.nz_to_nd(self.fractal, self.shape[-2], self.shape[-1])


def _nd(t):
    return t.to_nd() if isinstance(t, NZTensor) else t


def npu_format_cast(t, acl_format: int):
    """``torch_npu.npu_format_cast``: 29 re-lays a matrix as FRACTAL_NZ (zero padded), 2 returns ND."""
    if acl_format == ACL_FORMAT_FRACTAL_NZ:
        return NZTensor(_nd(t))
    if acl_format == ACL_FORMAT_ND:
        return _nd(t)
    raise ValueError(f"npu_format_cast: format {acl_format} is not emulated (only ND=2 and FRACTAL_NZ=29)")


def get_npu_format(t) -> int:
    """``torch_npu.get_npu_format``: 29 for NZ storage, else 2."""
    return ACL_FORMAT_FRACTAL_NZ if isinstance(t, NZTensor) else ACL_FORMAT_ND


def npu_convert_weight_to_int4pack(weight: torch.Tensor, inner_k_tiles: int = 0) -> torch.Tensor:
    """``npu_convert_weight_to_int4pack``: int32 values in [-8, 7], 2-D, last dim % 8 -> int32 [.., n/8]."""
    if weight.dtype != torch.int32 or weight.ndim != 2:
        raise ValueError(f"npu_convert_weight_to_int4pack needs a 2-D int32 tensor, got {weight.dtype} "
                         f"{tuple(weight.shape)}")
    return layouts.pack_int4_to_int32(weight)


def npu_trans_quant_param(scale: torch.Tensor, offset: torch.Tensor | None = None, round_mode: int = 0):
    """``npu_trans_quant_param``: fp32 scale (+offset) -> int64 (FP19 + flag bit 46 + offset bits 37..45)."""
    return layouts.trans_quant_param(scale.to(torch.float32), offset, round_mode)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties away from zero (CAST_ROUND). ``v - trunc(v)`` is exact in float32."""
    t = torch.trunc(v)
    return torch.where((v - t).abs() >= 0.5, t + torch.sign(v), t)


def npu_quantize(input: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor | None,
                 dtype, axis: int = 1, div_mode: bool = True) -> torch.Tensor:
    """``npu_quantize`` to int8: ``q = sat_int8(round(x / scales + zp))`` (``x * scales + zp`` if not div_mode).

    Arithmetic in float32 (x is widened first), rounding half AWAY from zero (op-plugin passes roundMode
    "round" = CAST_ROUND), saturation to [-128, 127]. ``scales``/``zero_points`` have shape (1,) or
    (x.shape[axis],) and broadcast along ``axis``. Only qint8/int8 output is emulated.
    """
    if dtype not in (torch.qint8, torch.int8):
        raise ValueError(f"npu_quantize: only qint8 output is emulated, got {dtype}")
    axis = axis % input.ndim
    view = [1] * input.ndim
    view[axis] = -1

    def along(t: torch.Tensor) -> torch.Tensor:
        if t.numel() not in (1, input.shape[axis]):
            raise ValueError(f"npu_quantize: {tuple(t.shape)} does not match dim {axis} of {tuple(input.shape)}")
        return t.to(torch.float32).reshape(view)

    x = input.to(torch.float32)
    v = x / along(scales) if div_mode else x * along(scales)
    if zero_points is not None:
        v = v + along(zero_points)
    return _round_half_away(v).clamp(-128, 127).to(torch.int8)


def _dynamic_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: scale = rowmax|x| / 127 (fp32), q = sat(round_half_even(x / scale)).

    The ops-nn golden uses ``torch.round`` (ties to even) on float32. An all-zero row is undefined in the
    documents (0/0); the emulation returns scale 0 and codes 0 for it.
    """
    xf = x.to(torch.float32)
    scale = xf.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(xf / safe.unsqueeze(-1)).clamp(-128, 127)
    return q.to(torch.int8), scale


def npu_dynamic_quant(x: torch.Tensor, *, smooth_scales=None, group_index=None, dst_type=None):
    """``npu_dynamic_quant`` -> (int8 codes, fp32 scale of shape x.shape[:-1]); see :func:`_dynamic_int8`."""
    if smooth_scales is not None or group_index is not None:
        raise ValueError("npu_dynamic_quant: smooth_scales/group_index are not emulated (dsq does not call them)")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"npu_dynamic_quant: x must be float16 or bfloat16, got {x.dtype}")
    if dst_type not in (None, torch.int8):
        raise ValueError(f"npu_dynamic_quant: only int8 output is emulated, got {dst_type}")
    return _dynamic_int8(x)


def _scale_as_f32(scale: torch.Tensor) -> torch.Tensor:
    """fp32/bf16 scales as float32; int64 scales decoded from the npu_trans_quant_param form (FP19)."""
    if scale.dtype == torch.int64:
        return layouts.decode_deq_scale(scale)[0]
    return scale.to(torch.float32)


def _int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact integer matmul of int8-range operands (float64 accumulation is exact below 2^53)."""
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int64)


# (scale dtype, has per-token scale) -> output dtypes A2/A3 accept (torch_npu.md, npu_quant_matmul)
_QMM_OUT = {
    (torch.int64, False): {torch.float16},
    (torch.float32, False): {torch.float16, torch.bfloat16, torch.int32},
    (torch.bfloat16, False): {torch.bfloat16, torch.int32},
    (torch.float32, True): {torch.bfloat16, torch.float16},
    (torch.bfloat16, True): {torch.bfloat16},
}


def npu_quant_matmul(x1: torch.Tensor, x2, scale: torch.Tensor, *, offset=None, pertoken_scale=None,
                     bias=None, output_dtype=None) -> torch.Tensor:
    """``npu_quant_matmul`` for int8 x1 (m, k) and int8 x2 (k, n) (ND or NZ).

    acc = x1 @ x2 (exact int32). int32 bias: ``(acc + bias) * scale [* pts]``; float bias:
    ``acc * scale [* pts] + bias``; output_dtype int32 returns ``acc (+ int32 bias)``. scale (1,)/(n,)
    fp32, bf16 or int64 (FP19-encoded); pertoken_scale fp32 (m,). The (scale, pts) -> output dtype
    combinations are those documented for A2/A3; int8 output (output_dtype=None) is not emulated because
    its requantization rounding is not documented.
    """
    w = _nd(x2)
    if x1.dtype != torch.int8 or w.dtype != torch.int8:
        raise ValueError(f"npu_quant_matmul: emulated for int8 x int8 only, got {x1.dtype} x {w.dtype}")
    if x1.shape[-1] != w.shape[0]:
        raise ValueError(f"npu_quant_matmul: x1 {tuple(x1.shape)} and x2 {tuple(w.shape)} do not chain")
    if output_dtype is None or output_dtype == torch.int8:
        raise ValueError("npu_quant_matmul: int8 output is not emulated (undocumented requantization rounding)")
    allowed = _QMM_OUT.get((scale.dtype, pertoken_scale is not None), set())
    if output_dtype not in allowed:
        raise ValueError(f"npu_quant_matmul: scale {scale.dtype} with pertoken_scale={pertoken_scale is not None} "
                         f"cannot produce {output_dtype} on A2/A3 (allowed: {sorted(map(str, allowed))})")
    acc = _int_mm(x1, w)
    int_bias = bias is not None and bias.dtype == torch.int32
    if int_bias:
        acc = acc + bias.to(torch.int64)
    if output_dtype == torch.int32:
        if bias is not None and not int_bias:
            raise ValueError("npu_quant_matmul: int32 output takes an int32 bias only")
        return acc.to(torch.int32)
    y = acc.to(torch.float32) * _scale_as_f32(scale)
    if pertoken_scale is not None:
        y = y * pertoken_scale.to(torch.float32).unsqueeze(-1)
    if bias is not None and not int_bias:
        y = y + bias.to(torch.float32)
    if offset is not None:
        raise ValueError("npu_quant_matmul: offset is only valid with int8 output")
    return y.to(output_dtype)


def _antiquant_weight(w, scale: torch.Tensor, offset, group_size: int, dtype: torch.dtype) -> torch.Tensor:
    """((w + offset) * scale) in ``dtype``: w (k, n) int8, or int32 (k, n/8) packed int4.

    scale/offset: (1,), (n,), (1, n) or per group (ceil(k/gs), n). The weight is rebuilt in float32 and
    rounded once to the activation dtype, as the antiquant step does in the activation dtype.
    """
    w = _nd(w)
    codes = layouts.unpack_int32_to_int4(w) if w.dtype == torch.int32 else w
    k, n = codes.shape[-2:]
    wf = codes.to(torch.float32)
    s = scale.to(torch.float32)
    o = None if offset is None else offset.to(torch.float32)
    if s.ndim >= 2 and s.shape[-2] > 1:  # per group along k
        if group_size <= 0 or group_size % 32 or not (32 <= group_size <= k - 1):
            raise ValueError(f"antiquant_group_size must be a multiple of 32 in [32, K-1={k - 1}], got {group_size}")
        if s.shape[-2] != -(-k // group_size):
            raise ValueError(f"per-group scale {tuple(s.shape)} does not match K={k}, group {group_size}")
        s = s.repeat_interleave(group_size, dim=-2)[..., :k, :]
        o = None if o is None else o.repeat_interleave(group_size, dim=-2)[..., :k, :]
    else:
        s = s.reshape(*s.shape[:-2], 1, s.shape[-1]) if s.ndim >= 2 else s.reshape(1, -1)
        o = None if o is None else o.reshape(s.shape)
    if s.shape[-1] not in (1, n):
        raise ValueError(f"antiquant scale {tuple(scale.shape)} does not match N={n}")
    return ((wf if o is None else wf + o) * s).to(dtype)


def npu_weight_quant_batchmatmul(x: torch.Tensor, weight, antiquant_scale: torch.Tensor, antiquant_offset=None,
                                 quant_scale=None, quant_offset=None, bias=None, antiquant_group_size: int = 0,
                                 inner_precise: int = 0) -> torch.Tensor:
    """``npu_weight_quant_batchmatmul``: ``y = x @ ((w + antiquant_offset) * antiquant_scale) + bias``.

    The offset is ADDED (msModelSlim stores ``(w - off) * s``, so callers negate it). x fp16/bf16 (m, k);
    the scale and offset have x's dtype; bias fp16 for fp16 x, fp32 for bf16 x. Float32 accumulation,
    one rounding to x's dtype. quant_scale (int8 output) is not emulated.
    """
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"npu_weight_quant_batchmatmul: x must be fp16/bf16, got {x.dtype}")
    if antiquant_scale.dtype != x.dtype or (antiquant_offset is not None and antiquant_offset.dtype != x.dtype):
        raise ValueError("npu_weight_quant_batchmatmul: antiquant_scale/offset must have x's dtype")
    if quant_scale is not None or quant_offset is not None:
        raise ValueError("npu_weight_quant_batchmatmul: quant_scale/quant_offset are not emulated")
    if bias is not None and bias.dtype != (torch.float16 if x.dtype == torch.float16 else torch.float32):
        raise ValueError(f"npu_weight_quant_batchmatmul: bias must be fp16 for fp16 x, fp32 for bf16 x, "
                         f"got {bias.dtype}")
    wq = _antiquant_weight(weight, antiquant_scale, antiquant_offset, antiquant_group_size, x.dtype)
    if x.shape[-1] != wq.shape[0]:
        raise ValueError(f"npu_weight_quant_batchmatmul: x {tuple(x.shape)} and weight K={wq.shape[0]} differ")
    y = x.to(torch.float32) @ wq.to(torch.float32)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype)


# -- MoE -----------------------------------------------------------------------------------------------
def npu_moe_init_routing_v2(x: torch.Tensor, expert_idx: torch.Tensor, *, scale=None, offset=None,
                            active_num: int = -1, expert_capacity: int = -1, expert_num: int = -1,
                            drop_pad_mode: int = 0, expert_tokens_num_type: int = 0,
                            expert_tokens_num_flag: bool = False, quant_mode: int = 0,
                            active_expert_range=(), row_idx_type: int = 0):
    """``npu_moe_init_routing_v2`` (dropless, count mode, gather-index form) -> 4 tensors.

    With flat index f = t*K + j over expert_idx (T, K) int32 and [lo, hi) = active_expert_range, the
    in-range entries are stably sorted by expert id; entry i of that order is routed row ``src[i]``:
      expanded_x[i] = x[src[i] // K]  (rows past the in-range count are undefined: NaN / -128 here)
      expanded_row_idx[src[i]] = i, and -1 for out-of-range entries (int32, (T*K,))
      expert_tokens[e - lo] = number of entries routed to expert e (int64, (hi - lo,))
      quant_mode 1 quantizes each expanded row like npu_dynamic_quant; expanded_scale (T*K,) fp32 holds
      the row scales (undefined rows NaN). quant_mode -1 leaves x's dtype; expanded_scale is then unused.
    """
    t, k = expert_idx.shape
    if expert_idx.dtype != torch.int32:
        raise ValueError(f"npu_moe_init_routing_v2: expert_idx must be int32, got {expert_idx.dtype}")
    if drop_pad_mode != 0 or expert_tokens_num_type != 1 or not expert_tokens_num_flag or row_idx_type != 0:
        raise ValueError("npu_moe_init_routing_v2: emulated for drop_pad_mode=0, expert_tokens_num_type=1 "
                         "(counts), expert_tokens_num_flag=True, row_idx_type=0")
    if quant_mode not in (-1, 1) or scale is not None or offset is not None:
        raise ValueError("npu_moe_init_routing_v2: quant_mode must be -1 or 1 without scale/offset")
    if active_num != t * k:
        raise ValueError(f"npu_moe_init_routing_v2: active_num must equal NUM_ROWS*K={t * k}, got {active_num}")
    lo, hi = active_expert_range if len(active_expert_range) else (0, expert_num)
    if not (0 <= lo <= hi <= expert_num):
        raise ValueError(f"npu_moe_init_routing_v2: active_expert_range {active_expert_range} outside [0, {expert_num}]")
    flat = expert_idx.reshape(-1).to(torch.int64)
    in_range = (flat >= lo) & (flat < hi)
    key = torch.where(in_range, flat, torch.full_like(flat, hi))  # out-of-range entries sort last
    order = torch.sort(key, stable=True).indices
    n_valid = int(in_range.sum())
    src = order[:n_valid]
    row_idx = torch.full((t * k,), -1, dtype=torch.int32)
    row_idx[src] = torch.arange(n_valid, dtype=torch.int32)
    counts = torch.bincount(flat[in_range] - lo, minlength=hi - lo).to(torch.int64)
    gathered = x[src // k]
    expanded_scale = torch.full((t * k,), float("nan"), dtype=torch.float32)
    if quant_mode == 1:
        q, s = _dynamic_int8(gathered)
        expanded = torch.full((t * k, x.shape[1]), _POISON_I8, dtype=torch.int8)
        expanded[:n_valid] = q
        expanded_scale[:n_valid] = s
    else:
        expanded = torch.full((t * k, x.shape[1]), float("nan"), dtype=x.dtype)
        expanded[:n_valid] = gathered
    return expanded, row_idx, counts, expanded_scale


def _group_bounds(group_list: torch.Tensor, group_list_type: int, groups: int) -> list[int]:
    counts = group_list.to(torch.int64).tolist()
    if group_list_type == 0:  # cumulative ends
        counts = [b - a for a, b in zip([0] + counts[:-1], counts)]
    elif group_list_type != 1:
        raise ValueError(f"npu_grouped_matmul: group_list_type {group_list_type} is not emulated (0 or 1)")
    if len(counts) != groups or min(counts, default=0) < 0:
        raise ValueError(f"npu_grouped_matmul: group_list {counts} does not give {groups} non-negative counts")
    return counts


_GMM_OUT = {torch.bfloat16: torch.bfloat16, torch.float32: torch.float16}  #: int8 x int8 scale -> output


def npu_grouped_matmul(x: list, weight: list, *, bias=None, scale=None, offset=None, antiquant_scale=None,
                       antiquant_offset=None, per_token_scale=None, group_list=None, activation_input=None,
                       activation_quant_scale=None, activation_quant_offset=None, split_item: int = 0,
                       group_type=None, group_list_type: int = 0, act_type: int = 0, output_dtype=None,
                       tuning_config=None) -> list:
    """``npu_grouped_matmul``, m-axis grouping with one x (M, K) and one stacked weight (E, K, N) -> [y].

    Rows of x are split into E consecutive groups by group_list (type 1 counts, type 0 cumulative ends);
    group e uses weight[e]. Rows past the last group are undefined (NaN / INT32_MIN here). Modes:
      * int8 x, int8 w: ``(acc + bias_i32) * scale[e]`` or ``acc * scale[e] * pts + bias``; scale fp32/bf16
        (or int64 FP19); output_dtype int32 returns the raw accumulator.
      * A8W4: int8 x, int32 w (int4 packed along N, (E, K, N/8)), int64 raw-bits scale (E, N), float32
        bias (E, N) required: ``y = ((x - 8) @ w * scale + bias) * pts``.
      * antiquant: float x, int8/int4 w: ``x @ ((w + antiquant_offset) * antiquant_scale) + bias``.
    """
    if len(x) != 1 or len(weight) != 1 or group_type != 0 or split_item not in (2, 3) or act_type != 0:
        raise ValueError("npu_grouped_matmul: emulated for one x, one stacked weight, group_type=0, "
                         "split_item 2/3, act_type 0")
    xs, w = x[0], weight[0]
    wnd = _nd(w)
    e = wnd.shape[0]
    counts = _group_bounds(group_list, group_list_type, e)
    m, used = xs.shape[0], sum(counts)
    if used > m:
        raise ValueError(f"npu_grouped_matmul: group_list covers {used} rows, x has {m}")

    def pick(lst, i):
        return None if lst is None else lst[0][i]

    quantized = xs.dtype == torch.int8
    out_dtype = output_dtype or (torch.float16 if quantized else xs.dtype)
    n = wnd.shape[-1] * (8 if wnd.dtype == torch.int32 else 1)
    y = torch.full((m, n), _POISON_I32 if out_dtype == torch.int32 else float("nan"), dtype=torch.float64)
    start = 0
    for i, c in enumerate(counts):
        rows = slice(start, start + c)
        start += c
        if c == 0:
            continue
        if not quantized:  # antiquant; a per-group scale (E, G, N) implies groups of K / G
            s_i = pick(antiquant_scale, i)
            k_i = xs.shape[1]
            gs = 0
            if s_i.ndim == 2 and s_i.shape[0] > 1:
                if k_i % s_i.shape[0]:
                    raise ValueError(f"npu_grouped_matmul: K={k_i} is not a multiple of {s_i.shape[0]} groups")
                gs = k_i // s_i.shape[0]
            wq = _antiquant_weight(wnd[i], s_i, pick(antiquant_offset, i), gs, xs.dtype)
            yi = xs[rows].to(torch.float32) @ wq.to(torch.float32)
            if bias is not None:
                yi = yi + bias[0][i].to(torch.float32)
        elif wnd.dtype == torch.int32:  # A8W4
            codes = layouts.unpack_int32_to_int4(wnd[i])
            if bias is None or scale is None or scale[0].dtype != torch.int64:
                raise ValueError("npu_grouped_matmul A8W4: needs an int64 raw-bits scale and the scale_bias bias")
            acc = _int_mm(xs[rows].to(torch.int64) - 8, codes)
            yi = acc.to(torch.float32) * layouts.int64_bits_to_scale(scale[0][i]) + bias[0][i].to(torch.float32)
            if per_token_scale is not None:
                yi = yi * per_token_scale[0][rows].to(torch.float32).unsqueeze(-1)
        else:  # int8 x int8
            if out_dtype != torch.int32 and (scale is None or out_dtype != _GMM_OUT.get(scale[0].dtype)):
                raise ValueError(f"npu_grouped_matmul: int8 x int8 with scale {None if scale is None else scale[0].dtype}"
                                 f" cannot produce {out_dtype} (bf16 scale -> bf16, fp32 scale -> fp16)")
            acc = _int_mm(xs[rows], wnd[i])
            b = pick(bias, i)
            if b is not None and b.dtype == torch.int32:
                acc = acc + b.to(torch.int64)
                b = None
            if out_dtype == torch.int32:
                y[rows] = acc.to(torch.float64)
                continue
            yi = acc.to(torch.float32) * _scale_as_f32(scale[0][i])
            if per_token_scale is not None:
                yi = yi * per_token_scale[0][rows].to(torch.float32).unsqueeze(-1)
            if b is not None:
                yi = yi + b.to(torch.float32)
        y[rows] = yi.to(out_dtype).to(torch.float64)
    return [y.to(out_dtype)]


def npu_swiglu(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``npu_swiglu``: ``silu(A) * B`` with A the first half of ``dim``; float32 math, one rounding to x's dtype."""
    a, b = x.to(torch.float32).chunk(2, dim=dim)
    return (F.silu(a) * b).to(x.dtype)


def npu_moe_token_unpermute(permuted_tokens: torch.Tensor, sorted_indices: torch.Tensor, probs=None,
                            padded_mode: bool = False, restore_shape=None) -> torch.Tensor:
    """``npu_moe_token_unpermute``: ``out[i] = sum_j probs[i, j] * permuted[sorted_indices[i*topk + j]]``.

    sorted_indices int32 (T*topk,) with values in [0, rows); probs (T, topk). Float32 accumulation, one
    rounding to permuted_tokens' dtype. padded_mode is not emulated.
    """
    if padded_mode or restore_shape is not None:
        raise ValueError("npu_moe_token_unpermute: padded_mode/restore_shape are not emulated")
    if sorted_indices.dtype != torch.int32:
        raise ValueError(f"npu_moe_token_unpermute: sorted_indices must be int32, got {sorted_indices.dtype}")
    idx = sorted_indices.to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= permuted_tokens.shape[0]):
        raise ValueError("npu_moe_token_unpermute: sorted_indices out of range (the result would be undefined)")
    topk = 1 if probs is None else probs.shape[-1]
    rows = permuted_tokens.index_select(0, idx).to(torch.float32).reshape(-1, topk, permuted_tokens.shape[-1])
    if probs is not None:
        rows = rows * probs.to(torch.float32).unsqueeze(-1)
    return rows.sum(dim=1).to(permuted_tokens.dtype)
