"""Fused MoE on the cuda backend: ``moe(backend, x, topk_ids, topk_weights, experts, scheme, expert_range)``.

Result (the numpy reference's definition, backends/dsq_cpu_reference/gemm.py): for every pair (t, j) whose
expert ``e = topk_ids[t, j]`` is in range,
    h = matmul(x[t], gate_up[e])     rounded to x.dtype, [2I]
    a = silu(h[:I]) * h[I:]          float32, rounded to x.dtype (then quantized per the scheme)
    o = matmul(a, down[e])           rounded to x.dtype, [H]
    y[t] += topk_weights[t, j] * o   float32 here (float64 in the reference), rounded to x.dtype at the end.

One token with integer weights and no, per-token or static activation quantization runs moe_gemv.py (a
CUDA-core GEMV per pair); up to DECODE_MAX_T tokens the decode path of moe_decode.py runs instead (slab layout
or pair tiles, split-K). Tiled path
steps (no host synchronisation, so a decode step can be captured in a CUDA graph):
    1. moe_align.align_pairs: sort pairs by expert, pad each expert's run to BLOCK_M rows.
    2. dynamic activation schemes: quantize x once per token (act_quant.py, the linear kernels' quantizer);
       static ones: once per padded position with its expert's scale (moe_requant.py; PREFILL_QUANTIZE_ONCE).
    3. grouped GEMM gate+up, SwiGLU and the amax of the next quantization in the epilogue (moe_kernels.py).
    4. the intermediate quantized once (moe_requant.py; or on load in the GEMM when PREFILL_QUANTIZE_ONCE is
       False), then grouped GEMM down, routing weight in the epilogue.
    5. sum of each token's top_k rows (float32), cast to x.dtype.
Experts without pairs launch no work; programs of unused blocks exit at once.
"""

from __future__ import annotations

import dataclasses

import torch

from dsq.backend import YES, Capability
from dsq.errors import QuantInputError, UnsupportedError
from dsq.qtypes import ExpertWeights, PackedWeight, weight_tensor_name
from dsq.schemes import ActGranularity, QuantScheme
from dsq.validate import check_moe_inputs
from dsq_cuda import moe_gemv
from dsq_cuda._env import interpreting
from dsq_cuda.moe_align import align_pairs
from dsq_cuda.moe_decode import (
    DECODE_MAX_T,
    DEFAULTS,
    expert_pair_tiles,
    mma_eligible,
    run_decode,
    shares_row_tiles,
)
from dsq_cuda.moe_layout import bits_of
from dsq_cuda.moe_layout import prepare as prepare_layout
from dsq_cuda.moe_plan import (
    A_CODES,
    A_DYNAMIC,
    A_FLOAT,
    A_STATIC,
    A_STATIC_CODES,
    DOT_FP8,
    DOT_INT8,
    W_INT4,
    W_INT8_PACKED,
    BlockConfig,
    block_config,
    k_limit,
    plan,
    weight_tile_bytes,
)
from dsq_cuda.moe_requant import requantize, split_halves
from dsq_cuda.slab import row_tile_byte_order

TINY_F32 = float(torch.finfo(torch.float32).tiny)
#: the tiled (prefill) path quantizes each activation row once before a GEMM (moe_requant) instead of on every
#: load of it by the GEMM's programs (once per N block); False: on load (the benchmark's comparison)
PREFILL_QUANTIZE_ONCE = True
#: static activation schemes subtract the zero point's share ``zp * sum_k q[e, n, k]`` once in the epilogue, from
#: a per-expert sum computed once (moe_layout), instead of summing every weight tile in the K loop; False: the
#: K-loop sums (the same int32; the benchmark's comparison)
PREFILL_ZP_EPILOGUE = True
#: W4A8 two-level experts multiply each byte's two int4 fields against two contiguous activation tiles laid out
#: by moe_requant.split_halves (moe_tiles.int4_split_step), the group scale on the int32 partial sums; False:
#: the words unpacked by reshape and the codes multiplied by s2 (the same int32)
PREFILL_INT4_SPLIT = True
#: weight-only int4 experts (W4A16: bf16 / fp16 / float32 activations, float group scales) take the split path
#: too, codes converted exactly to the activations' type and the float32 partial sums scaled per group; False:
#: the reshape-unpacking path (same products, summed in another order)
PREFILL_WONLY_SPLIT = True
#: W4AFP8 experts (int4, float group scales, per-token e4m3 activations) take the split path too, with e4m3 dots
PREFILL_FP8_SPLIT = True
#: W8A16 experts (int8 codes four to a word, per-channel scales) read the words as bytes, code k in byte k, in
#: the transposed tile (moe_kernels W_BYTES), instead of unpacking words by reshape. On the H200 (cuda-moe.md
#: v15, bench_moe_v15, one run): T = 4096 uniform 0.69x bf16 against 0.45x, T = 512 0.80x against 0.53x
PREFILL_INT8_BYTES = True
#: the split int4 path and W8A16's bytes path read the experts' row tiles (the layout the decode paths share,
#: moe_decode DEFAULTS shared) instead of the canonical words, activations in slab.row_tile_byte_order: every
#: path then reads one layout, and the canonical codes need not stay on the device (moe_memory.release_canonical: 1x the
#: canonical bytes instead of 2x). On the H200 (cuda-moe.md v16, bench_rt_v15b, one run, with the byte offsets'
#: alignment stated to Triton by tl.multiple_of) it was faster than the canonical words in every cell: T = 4096
#: uniform W4A8_DYNAMIC 1.65x bf16 against 1.24x, W4A16 0.83x against 0.72x, W8A16 0.77x against 0.70x; T = 512
#: uniform W4A8_DYNAMIC 2.01x against 1.46x. (Without the alignment hints, v15, it was slower: 0.86x against 1.26x.)
PREFILL_ROW_TILES = True
#: the split path decodes four bytes per instruction sequence with inline PTX on a GPU (moe_tiles.int4_halves)
INT4_UNPACK_ASM = True
#: the split path computes the transposed tile ``W @ A^T``: the decoded weights are the MMA's first operand,
#: which Hopper's wgmma reads from registers (the second one goes through shared memory), at 3 pipeline stages.
#: H200, T = 4096 uniform (cuda-moe.md v13): 9.6 ms against 15.3 ms untransposed; False: untransposed
INT4_SWAP_AB = True
#: block-shape overrides for the tiled path (BlockConfig field -> value; benchmark sweeps), None: moe_plan's
PREFILL_BLOCKS: dict | None = None
_EMPTY: dict[tuple, torch.Tensor] = {}


def _dummy(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    key = (str(device), dtype)
    if key not in _EMPTY:
        _EMPTY[key] = torch.zeros(1, dtype=dtype, device=device)
    return _EMPTY[key]


def _weight_args(packed: PackedWeight | torch.Tensor, scheme: QuantScheme | None, device,
                 as_bytes: bool = False, rt: int = 0) -> list:
    """Pointer and stride arguments of one stacked weight: codes, scale, zero point, group scale.

    ``as_bytes``: the codes as bytes (packed words viewed as uint8: the split int4 path, W8A16's W_BYTES);
    ``rt``: the experts' row tiles as bytes instead (moe_gemv's layout, ``[E, tiles, N, RT]``; the row stride
    is then the bytes between tiles)."""
    if isinstance(packed, torch.Tensor):  # unquantized [E, N, K] (the bf16 design)
        w = packed
        d = _dummy(device)
        return [w, w.stride(0), w.stride(1), d, 0, 0, d, 0, 0, d, 0, 0]
    name = weight_tensor_name(scheme)
    if rt:
        w = moe_gemv.prepare(packed, scheme, device)["w"].view(torch.uint8)
    else:
        if name not in packed:
            raise QuantInputError(f"packed {scheme.name} expert weight has no {name!r} (has {sorted(packed.tensors)})")
        w = packed[name]
        if w.device != device:
            raise QuantInputError(f"expert weights are on {w.device}; x is on {device}: move them with the backend")
        if w.stride(-1) != 1:
            raise QuantInputError(f"expert {name} must be contiguous along K (strides {tuple(w.stride())})")
        if w.dtype == torch.float8_e4m3fn or as_bytes:
            w = w.view(torch.uint8)  # fp8: the kernel bitcasts back (see moe_tiles.load_w)
    s = packed["weight_scale"]
    args = [w, w.stride(0), w.stride(1), s, s.stride(0), s.stride(1)]
    for opt in ("weight_zero_point", "weight_group_scale"):
        t = packed.tensors.get(opt)
        args += [t, t.stride(0), t.stride(1)] if t is not None else [_dummy(device), 0, 0]
    return args


def _slab_layout(packed: PackedWeight, scheme: QuantScheme, device) -> dict:
    """The experts' slab layout at the decode path's tile width (moe_layout.prepare; cached): its words, and
    ``corr`` for static activation schemes."""
    return prepare_layout(packed, scheme, device, DEFAULTS["lbk4"] if bits_of(scheme) == 4 else DEFAULTS["lbk8"])


def _corr_args(packed: PackedWeight | torch.Tensor, scheme: QuantScheme | None, device, needed: bool) -> list:
    """The per-expert code sums ``corr [E, N]`` int32 of a static scheme's weight and its row stride, or a dummy
    when the kernel does not read them."""
    if not needed:
        return [_dummy(device, torch.int32), 0]
    corr = _slab_layout(packed, scheme, device)["corr"]
    return [corr, corr.stride(0)]


def _static_args(packed: PackedWeight, scheme: QuantScheme, device) -> list:
    """Per-expert static input scale [E] float32 and zero point [E] int8 (zeros when symmetric)."""
    s = packed.tensors.get("input_scale")
    if s is None:
        raise QuantInputError(f"{scheme.name} expert weights need input_scale [E, 1] (static activations)")
    zp = packed.tensors.get("input_zero_point")
    zp = torch.zeros(s.shape[0], dtype=torch.int8, device=device) if zp is None else zp.reshape(-1)
    return [s.reshape(-1).float(), zp]


def prepare_all(experts: ExpertWeights, scheme: QuantScheme, device: torch.device) -> None:
    """Build every layout the default dispatch can use for these experts (before CUDA graph capture)."""
    # packed experts: the one-token GEMV's row tiles serve decode too (moe_decode.shares_row_tiles); otherwise
    # decode (T <= 64) runs symmetric int4 experts on their pair tiles (bf16 / fp16 activations assumed, as
    # served), everything else on the slab layout. The tiled prefill path reads the canonical tensors (and, for
    # static activations, the slab layout's corr)
    shared = shares_row_tiles(scheme)
    mma = DEFAULTS["mma"] and mma_eligible(scheme, torch.bfloat16, int8=bool(DEFAULTS["mma8"]) and not shared)
    for p in (experts.gate_up, experts.down):
        if shared:
            moe_gemv.prepare(p, scheme, device)
        elif mma:
            expert_pair_tiles(p, scheme, device)
        else:
            _slab_layout(p, scheme, device)
        if moe_gemv.eligible(scheme, 1):
            moe_gemv.prepare(p, scheme, device)  # T = 1


def prefill_setup(scheme: QuantScheme | None, x_dtype: torch.dtype, t: int, unique_load: bool,
                  device: torch.device) -> tuple[dict, dict, BlockConfig, dict]:
    """The tiled path's plan for one call: (gate_up switches, down switches, block shapes, the speed switches
    ``W_SPLIT`` / ``SWAP_AB`` / ``UNPACK_ASM`` / ``ZP_CORR`` / ``W_BYTES`` that this module's flags turn on)."""
    up_sw, down_sw = plan(scheme, x_dtype)
    if interpreting() and up_sw["DOT"] in (0, 3, 4):
        # Triton's interpreter multiplies bf16 tiles as raw integers; float32 products of bf16/fp16 values
        # are exact, so the float32 IEEE dot computes the same thing.
        up_sw["DOT"] = down_sw["DOT"] = 5
    cfg = block_config(t, up_sw["DOT"] in (1, 2), k_limit(scheme),
                       weight_tile_bytes(up_sw["W_KIND"], unique_load, x_dtype.itemsize))
    int4 = up_sw["W_KIND"] == W_INT4 and not up_sw["W_ZP"] and cfg.block_k >= 64
    split = int4 and (
        (PREFILL_INT4_SPLIT and PREFILL_QUANTIZE_ONCE and up_sw["DOT"] == DOT_INT8 and up_sw["W_GS"]
         and up_sw["A_KIND"] == A_CODES and not up_sw["TILE_SCALED"])
        or (PREFILL_WONLY_SPLIT and up_sw["A_KIND"] == A_FLOAT and up_sw["W_SCALE"] == 2 and not up_sw["W_GS"])
        or (PREFILL_FP8_SPLIT and PREFILL_QUANTIZE_ONCE and up_sw["DOT"] == DOT_FP8 and up_sw["A_KIND"] == A_CODES
            and up_sw["W_SCALE"] == 2 and not up_sw["W_GS"] and not up_sw["A_GROUPED"]))
    swap = split and INT4_SWAP_AB
    if swap:
        cfg = dataclasses.replace(cfg, num_stages=3)
    if PREFILL_BLOCKS:
        cfg = dataclasses.replace(cfg, **PREFILL_BLOCKS)
    w_bytes = (PREFILL_INT8_BYTES and up_sw["W_KIND"] == W_INT8_PACKED and not up_sw["W_ZP"] and not up_sw["W_GS"]
               and up_sw["A_KIND"] == A_FLOAT and up_sw["W_SCALE"] == 1)
    zp_corr = (PREFILL_ZP_EPILOGUE and up_sw["A_KIND"] == A_STATIC and up_sw["DOT"] == DOT_INT8
               and not up_sw["TILE_SCALED"])
    rt = 0  # row-tile bytes a row a tile, when the weights come as row tiles (PREFILL_ROW_TILES)
    if PREFILL_ROW_TILES and (split or w_bytes) and shares_row_tiles(scheme):
        rt = 4 * moe_gemv.tile_width(scheme)
        if (2 * rt if split else rt) % cfg.block_k:  # a K step must stay inside a tile
            rt = 0
    extra = dict(W_SPLIT=split, ZP_CORR=zp_corr, SWAP_AB=swap, W_BYTES=w_bytes, RT=rt,
                 UNPACK_ASM=split and INT4_UNPACK_ASM and device.type == "cuda" and not interpreting())
    return up_sw, down_sw, cfg, extra


def run_moe(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
            gate_up: PackedWeight | torch.Tensor, down: PackedWeight | torch.Tensor,
            scheme: QuantScheme | None, num_experts: int,
            expert_range: tuple[int, int] | None = None, unique_load: bool = True, path: str = "auto",
            decode_cfg: dict | None = None) -> torch.Tensor:
    """The fused layer for already-validated inputs; ``scheme=None`` runs float [E, N, K] weights.

    ``path``: "auto" (one GEMV per pair for weight-only schemes at T = 1, the decode kernels for
    T <= DECODE_MAX_T, else the tiled kernel), "gemv", "decode" or "tiled";
    ``decode_cfg`` overrides moe_decode.DEFAULTS (benchmark sweeps).
    """
    from dsq_cuda.act_quant import quantize_per_group_fp8, quantize_per_token_fp8, quantize_per_token_int8
    from dsq_cuda.moe_kernels import moe_gemm_kernel

    t, h = x.shape
    i = (gate_up.shape[1]) // 2
    top_k = topk_ids.shape[1]
    device = x.device
    y = torch.empty((t, h), dtype=x.dtype, device=device)
    if t == 0:
        return y
    if path == "gemv" or (path == "auto" and unique_load and moe_gemv.eligible(scheme, t)):
        return moe_gemv.run_gemv(x, topk_ids, topk_weights, gate_up, down, scheme, num_experts, expert_range)
    if path == "decode" or (path == "auto" and unique_load and t <= DECODE_MAX_T):
        return run_decode(x, topk_ids, topk_weights, gate_up, down, scheme, num_experts, expert_range,
                          lambda p: _static_args(p, scheme, device), [_dummy(device), _dummy(device, torch.int8)],
                          _dummy(device), TINY_F32, decode_cfg)
    up_sw, down_sw, cfg, extra = prefill_setup(scheme, x.dtype, t, unique_load, device)
    al = align_pairs(topk_ids, num_experts, cfg.block_m, expert_range)
    rows = al.max_blocks * cfg.block_m
    x = x if x.stride(-1) == 1 else x.contiguous()
    d32 = _dummy(device)
    split, zp_corr, rt = extra["W_SPLIT"], extra["ZP_CORR"], extra["RT"]

    def order(a: torch.Tensor) -> torch.Tensor:
        """Activation rows in the order the weight bytes of this call want (split / row-tile bytes paths; the
        rows themselves otherwise)."""
        if rt:
            return row_tile_byte_order(a, scheme.weight_bits, moe_gemv.tile_width(scheme), cfg.block_k)
        return split_halves(a, cfg.block_k) if split else a

    # Activations of the gate_up launch.
    a_ptr, stride_am, as_ptr, stride_asm = x, x.stride(0), d32, 0
    st = [d32, _dummy(device, torch.int8)]
    if up_sw["A_KIND"] == 1:
        if scheme.act_granularity is ActGranularity.TOKEN_GROUP:
            codes, scales = quantize_per_group_fp8(x, scheme.act_group_size)
        elif up_sw["A_FP8"]:
            codes, scales = quantize_per_token_fp8(x)
        else:
            codes, scales = quantize_per_token_int8(x)
        if codes.dtype == torch.float8_e4m3fn:
            codes = codes.view(torch.uint8)
        codes = order(codes)
        a_ptr, stride_am, as_ptr, stride_asm = codes, codes.stride(0), scales, scales.stride(0)
    elif split or rt:  # weight-only: x itself, reordered for the split path / the row tiles' bytes
        a_ptr = order(x)
        stride_am = a_ptr.stride(0)
    elif up_sw["A_KIND"] == 3:
        st = _static_args(gate_up, scheme, device)
        if PREFILL_QUANTIZE_ONCE:  # per padded position: each row its expert's scale
            codes, _ = requantize(x, rows, al.sorted_ids, al.block_expert, cfg.block_m, al.num_pairs, top_k,
                                  TINY_F32, gather=True, static=(st[0], st[1]), half_away=up_sw["HALF_AWAY"])
            a_ptr, stride_am = codes, codes.stride(0)
            up_sw = dict(up_sw, A_KIND=A_STATIC_CODES, A_POS=True)

    # row tiles: a K step's bytes hold inputs from all over their tile, so the GEMMs run over the reordered
    # activations' whole length (whole tiles, zeros past K); otherwise over K
    k_up = a_ptr.shape[1] if rt else h
    inter = torch.empty((rows, i), dtype=x.dtype, device=device)
    if up_sw["NEXT_AMAX"]:
        n_amax = -(-i // up_sw["NEXT_GROUP"]) if up_sw["NEXT_GROUP"] else 1
        amax = torch.zeros((rows, n_amax), dtype=torch.float32, device=device)
    else:
        amax = d32
    tw = topk_weights.reshape(-1).to(torch.float32)
    launch = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                  UNIQUE_LOAD=unique_load)
    grid = (al.max_blocks, -(-i // cfg.block_n_up))
    moe_gemm_kernel[grid](
        a_ptr, stride_am, as_ptr, stride_asm, *st, *_weight_args(gate_up, scheme, device, split or extra["W_BYTES"], rt),
        al.sorted_ids, al.block_expert, tw, inter, inter.stride(0), amax, amax.stride(0) if amax.ndim == 2 else 0,
        *_corr_args(gate_up, scheme, device, zp_corr), i, k_up, al.num_pairs, top_k, TINY_F32,
        EVEN_K=k_up % cfg.block_k == 0, BLOCK_N=cfg.block_n_up, **up_sw, **launch, **extra)

    # Down projection: the intermediate is quantized once here (PREFILL_QUANTIZE_ONCE), or on load from the
    # amax above (or static scales)
    st = _static_args(down, scheme, device) if down_sw["A_KIND"] == 3 else [d32, _dummy(device, torch.int8)]
    as_ptr, stride_asm = (amax, amax.stride(0)) if down_sw["A_KIND"] == 2 else (d32, 0)
    a_down = inter
    if PREFILL_QUANTIZE_ONCE and down_sw["A_KIND"] in (A_DYNAMIC, A_STATIC):
        static = down_sw["A_KIND"] == A_STATIC
        a_down, scales = requantize(inter, rows, al.sorted_ids, al.block_expert, cfg.block_m, al.num_pairs, top_k,
                                    TINY_F32, gather=False, static=(st[0], st[1]) if static else None,
                                    amax=None if static else amax,
                                    group=down_sw["A_GROUP"] if down_sw["A_GROUPED"] else 0, fp8=down_sw["A_FP8"],
                                    half_away=down_sw["HALF_AWAY"])
        if not static:
            as_ptr, stride_asm = scales, scales.stride(0)
        down_sw = dict(down_sw, A_KIND=A_STATIC_CODES if static else A_CODES)
    a_down = order(a_down)  # (the split / bytes paths' order; as it is otherwise)
    k_down = a_down.shape[1] if rt else i
    full = expert_range is None or tuple(expert_range) == (0, num_experts)
    out = (torch.empty if full else torch.zeros)((al.num_pairs, h), dtype=torch.float32, device=device)
    grid = (al.max_blocks, -(-h // cfg.block_n_down))
    moe_gemm_kernel[grid](
        a_down, a_down.stride(0), as_ptr, stride_asm, *st, *_weight_args(down, scheme, device, split or extra["W_BYTES"], rt),
        al.sorted_ids, al.block_expert, tw, out, out.stride(0), d32, 0, *_corr_args(down, scheme, device, zp_corr),
        h, k_down, al.num_pairs, top_k, TINY_F32, EVEN_K=k_down % cfg.block_k == 0, BLOCK_N=cfg.block_n_down,
        **down_sw, **launch, **extra)
    y.copy_(out.view(t, top_k, h).sum(dim=1))
    return y


def supports(backend, scheme: QuantScheme) -> Capability:
    """Whether the fused kernel runs ``scheme`` exactly (moe_plan says which combinations it cannot)."""
    try:
        plan(scheme, torch.bfloat16)
        k_limit(scheme)
    except UnsupportedError as exc:
        return Capability(False, str(exc))
    return YES


def moe(backend, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
        experts: ExpertWeights, scheme: QuantScheme,
        expert_range: tuple[int, int] | None = None) -> torch.Tensor:
    """Backend.moe for the cuda backend (see the module docstring). ``backend`` is the calling Backend."""
    if backend is not None:
        backend.require(scheme, "moe")
    check_moe_inputs(x, topk_ids, topk_weights, experts, scheme, expert_range)
    return run_moe(x, topk_ids, topk_weights, experts.gate_up, experts.down, scheme, experts.num_experts,
                   expert_range)


def moe_float(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, w_gate_up: torch.Tensor,
              w_down: torch.Tensor, expert_range: tuple[int, int] | None = None) -> torch.Tensor:
    """The same fused design on unquantized weights ``w_gate_up [E, 2I, H]``, ``w_down [E, H, I]`` (x.dtype)."""
    if w_gate_up.dtype != x.dtype or w_down.dtype != x.dtype:
        raise QuantInputError(f"moe_float needs weights in x's dtype {x.dtype}; got {w_gate_up.dtype}, {w_down.dtype}")
    e, two_i, h = w_gate_up.shape
    if tuple(w_down.shape) != (e, h, two_i // 2) or x.shape[1] != h:
        raise QuantInputError(f"moe_float: shapes x {tuple(x.shape)}, gate_up {tuple(w_gate_up.shape)}, down "
                              f"{tuple(w_down.shape)} do not fit [T, H], [E, 2I, H], [E, H, I]")
    return run_moe(x, topk_ids, topk_weights, w_gate_up, w_down, None, e, expert_range)
