"""One-token decode of the fused MoE with integer weights: one CUDA-core GEMV per (token, expert) pair.

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

Schemes: the weight-only ones (W4A16, W4A16_ASYM, W8A16) multiply x itself. Schemes with integer weights and
per-token or static activations (W8A8, W8A8_DYNAMIC, W4A8_DYNAMIC, W4AFP8) multiply activation codes, which are
exact in bf16, and scale the sums (gemv_kernel's X_SCALE; two-level s1 by CHANNEL_SCALE):
    dynamic  x -> (codes, s_x) per token (act_quant, the reference's formulas); the intermediate per pair
    static   codes per pair with the pair's expert's scale and zero point (moe_requant, one pair a block), then
             ``q - zp`` (|q - zp| <= 255: exact in bf16), so no zero-point correction term is needed
Every product is then an exact integer in float32, as are the partial sums of a scale group of int4 codes;
only per-channel int8 sums over a whole row (W8A8) can round in float32 (relative 2**-24 a step), where the
reference's int32 sums are exact: far inside the GEMM tolerance of the conformance suite.

Layout (cached in ``PackedWeight.device_layout["dsq_cuda_moe_gemv:<device>:<SW>"]``; the decode kernels read
it too, moe_decode DEFAULTS shared): each expert's codes in the row-tile layout of dsq_cuda.slab (``w`` int32
``[E, tiles, N, SW]``, SW = tile_width; W8A8's one-per-byte int8 codes are first packed four to a word as
offset-binary fields, ``u = q + 128``, the packed int8 format), scales float32 ``[E, N, G]`` (``ws``;
two-level: the integer s2, and s1 ``[E, N, 1]`` as ``wc``) and, for W4A16_ASYM, zero points unpacked to int8
``[E, N, G]`` (``wz``). With CANONICAL (key ``...:canonical``) the GEMV reads the canonical words instead (no
device copy of the codes; W8A8's bytes viewed as words), its activation rows in the tile order of
dsq_cuda.slab.tile_order (x reordered once a call, the intermediate stored in that order by the SwiGLU kernel).
"""

from __future__ import annotations

import dataclasses

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight, weight_tensor_name
from dsq.schemes import ActGranularity, QType, QuantScheme
from dsq_cuda import pdl
from dsq_cuda._env import check_not_capturing, deterministic
from dsq_cuda.mm import group_of
from dsq_cuda.slab import GEMV_TILE_WORDS, gemv_tile_words, tile_order, to_row_tiles
from dsq_cuda.unpack import unpack_zero_points

#: the largest token count this path serves (more tokens share experts: the tensor-core paths win). 0 before
#: Backend.prepare holds no row tiles and sends one token to the decode path.
GEMV_MAX_T = 1
#: words per row tile of packed 8-bit experts (W8A16), whose decode kernel shares the row tiles (moe_decode
#: DEFAULTS shared) and wants 32-deep slabs; the GEMV reads them PACKED8_LOAD_WORDS at a time. On the H200 (cuda-moe.md
#: v15, one run) 32 against 16: T = 8 / 64 uniform 1.70x / 1.72x bf16 against 1.59x / 1.67x, skewed 1.47x /
#: 1.04x against 1.26x / 0.92x, one token 2.18x against 2.34x. Other experts keep dsq_cuda.slab.GEMV_TILE_WORDS
#: (16): int4 (a scale group of 128 a tile, which the tensor-core decode needs) and W8A8's bytes (GEMV only).
INT8_TILE_WORDS = 32
#: read the canonical words (True) instead of row tiles: one device copy of the codes fewer (W8A8 experts then
#: hold 1x their canonical bytes instead of 2x), at a cost: on the H200 (cuda-moe.md v15, one call) one token
#: took 120 / 128 / 178 us against 103 / 115 / 121 us on row tiles (W4A16 / W4A8_DYNAMIC / W8A8)
CANONICAL = False


#: split-K cap: the dense GEMV's configs (dsq_cuda.configs) split K up to 32 ways to keep one row's weights
#: streaming; here top_k pairs already multiply the programs
MAX_SPLIT = 32
#: quantized-activation schemes take this path too (see the module docstring); False leaves them on the
#: decode path (moe_decode), for benchmarks
QUANTIZED_ACTS = True
#: W4A8_DYNAMIC multiplies its int8 activation codes by the int4 codes with ``dp4a`` in int32 (gemv_kernel DP4A:
#: a shift, two ``lop3`` and two ``dp4a`` per 8 codes, the reference's integer sums exactly) instead of as
#: floats; x and the intermediate are quantized into dsq_cuda.slab.int8_mma_order
DP4A = True
#: static-activation experts (W8A8) quantize the SwiGLU of the gate / up output in the requantization kernel
#: (moe_requant swiglu_kind) instead of a SwiGLU kernel writing it first: one launch fewer, the same bits
#: (W4A8_DYNAMIC's per-token quantization does the same under moe_decode.FUSED_SWIGLU_QUANT). On the H200
#: (cuda-moe.md v18) W8A8 at T = 1 took 115.2 vs 119.1 us. Measured and left out: W8A16's down GEMV computing the
#: SwiGLU as it loads x (every program of the split-K GEMV repeats it): 138 vs 117 us
FUSE_SWIGLU = True
#: W4A16 and W4AFP8 too: x (bf16, or W4AFP8's e4m3 codes) as three int8 digit slices (act_quant.int8_slices:
#: exact for e4m3 codes, and for bf16 wherever an element is at least 2**-14 of its row's amax), three exact
#: dp4a sums per word combined in float32 (gemv_kernel DP4A = 3)
DP4A_SLICES = True

#: words one GEMV load takes of 8-bit row tiles that are INT8_TILE_WORDS wide (W8A16): 32 reads each layout tile
#: whole, 16 as two sub-tiles (the dense GEMV sweep's width, cuda.md). On the H200 (cuda-moe.md v19, one run,
#: gpu_session.sh step bench_v19) W8A16 at T = 1: 111.3 vs 117.8 us
PACKED8_LOAD_WORDS = 32


def _dp4a(scheme: QuantScheme, lay: dict) -> int:
    """gemv_kernel's DP4A mode for these experts: 1 (int8 x), 3 (x as digit slices) or 0 (floats)."""
    from dsq_cuda.mm import int8_mma_mode

    if not (DP4A and lay["row_tiles"] and lay["w"].shape[-1] == 16):
        return 0
    mode = int8_mma_mode(scheme)
    if mode == 4 and DP4A_SLICES and group_of(scheme):
        return 3
    return 1 if mode == 1 else 0


def _acts_ok(scheme: QuantScheme) -> bool:
    """Activations this path multiplies exactly: none (weight-only), per token, or static per expert."""
    if scheme.weight_only:
        return True
    if not QUANTIZED_ACTS or scheme.weight_dtype not in (QType.INT4, QType.INT8) or not scheme.weight_symmetric:
        return False
    return scheme.act_granularity is ActGranularity.TOKEN or scheme.static_activations


def eligible(scheme: QuantScheme | None, t: int) -> bool:
    """Whether a step of ``t`` tokens with this scheme takes this path (integer weights, see _acts_ok)."""
    return scheme is not None and scheme.weight_bits in (4, 8) and _acts_ok(scheme) and 1 <= t <= GEMV_MAX_T


def tile_width(scheme: QuantScheme) -> int:
    """Words per row tile of these experts (INT8_TILE_WORDS for packed 8-bit codes)."""
    packed8 = scheme.weight_bits == 8 and weight_tensor_name(scheme) == "weight_packed"
    return INT8_TILE_WORDS if packed8 else GEMV_TILE_WORDS


def _canonical_words(packed: PackedWeight, device: torch.device) -> tuple[torch.Tensor, bool]:
    """The experts' canonical words ``[E, N, KW]`` int32 on the device, and whether they are W8A8's signed
    bytes viewed as words. Codes one per byte whose rows are not whole words (K % 4) are packed into words
    here (offset binary): then a device copy."""
    if "weight_packed" in packed:
        return packed["weight_packed"].to(device).contiguous(), False
    q = packed["weight"].to(device).contiguous()  # int8 [E, N, K], one code a byte
    if q.shape[-1] % 4 == 0:
        return q.view(torch.int32), True
    u = torch.nn.functional.pad(q.view(torch.uint8) ^ 0x80, (0, -q.shape[-1] % 4), value=0x80)  # offset binary
    return u.contiguous().view(torch.int32), False


def prepare(packed: PackedWeight, scheme: QuantScheme, device: torch.device) -> dict:
    """The GEMV's weights of stacked experts ``[E, N, K]`` (made once per device; see the module docstring)."""
    key = f"dsq_cuda_moe_gemv:{device}:{'canonical' if CANONICAL else tile_width(scheme)}"
    if key in packed.device_layout:
        return packed.device_layout[key]
    check_not_capturing("MoE GEMV weights")
    e, n, k = packed.shape
    w, signed = _canonical_words(packed, device)
    lay = {"row_tiles": not CANONICAL, "signed": signed and CANONICAL,
           "ws": packed["weight_scale"].to(device).float().contiguous()}
    if CANONICAL:
        lay["w"] = w
    else:  # one expert at a time: the int64 temporaries of a whole stack would not fit next to the weights
        if signed:  # two's complement bytes -> offset binary, the packed int8 fields
            w = (w.view(torch.uint8) ^ 0x80).view(torch.int32)
        bits, group = scheme.weight_bits, group_of(scheme)
        sw = tile_width(scheme)
        lay["w"] = torch.stack([to_row_tiles(w[i], k, bits, group, sw) for i in range(e)]).contiguous()
    if scheme.two_level:  # group scales are the integer s2 (exact in float32), s1 per channel
        lay["wc"] = lay["ws"]
        lay["ws"] = packed["weight_group_scale"].to(device).float().contiguous()
    if "weight_zero_point" in packed:
        lay["wz"] = unpack_zero_points(packed["weight_zero_point"].to(device), n, scheme.weight_bits)
    packed.device_layout[key] = lay
    return lay


def tile_words(scheme: QuantScheme, n: int, k: int, device: torch.device) -> int:
    """The GEMV's tile width in words for an expert projection ``[N, K]`` read in canonical order (CANONICAL):
    the activation rows go in its tile order."""
    from dsq_cuda.configs import pick

    group = group_of(scheme)
    return gemv_tile_words(scheme.weight_bits, group, -pick(f"gemv{scheme.weight_bits}", 1, n, k, group,
                                                             str(device)).block_k)


def _gemv(a, a_scale, lay, scheme, out, pair_ids, n, k, x_div, expert_range, num_experts):
    from dsq_cuda.configs import pick
    from dsq_cuda.gemv_kernel import launch

    group = group_of(scheme)
    cfg = pick(f"gemv{scheme.weight_bits}", 1, n, k, group, str(a.device))  # its SW: words a load
    if cfg.split_k > MAX_SPLIT:
        cfg = dataclasses.replace(cfg, split_k=MAX_SPLIT)
    w, ws = lay["w"], lay["ws"]
    if scheme.weight_bits == 8 and lay["row_tiles"] and w.shape[-1] == INT8_TILE_WORDS and cfg.block_k < 0:
        cfg = dataclasses.replace(cfg, block_k=-PACKED8_LOAD_WORDS)
    e_lo, e_hi = expert_range if expert_range is not None else (0, num_experts)
    dp4a = _dp4a(scheme, lay)
    launch(a, w, ws, lay.get("wz"), None, out, scheme, pair_ids.shape[0], n, cfg, group, row_tiles=lay["row_tiles"],
           moe=(pair_ids, w[0].numel(), ws[0].numel(), e_lo, e_hi, x_div), xs=a_scale, wc=lay.get("wc"),
           xs_per_expert=scheme.static_activations, signed=lay["signed"], dp4a=dp4a, pdl=pdl.flag(a.device),
           prefetch=pdl.prefetch_tiles(a.device, "gemv_dp4a" if dp4a == 1 else "gemv", cfg.block_n * w.shape[-1] * 4),
           slots=deterministic())  # (deterministic: split-K partials added in slot order, not arrival order)


def _codes(v: torch.Tensor, scheme: QuantScheme, packed: PackedWeight, ids: torch.Tensor, top_k: int,
           dp4a: int = 0, swiglu_kind: int | None = None):
    """(activation codes as bf16, float32 scales, pairs per code row) of ``v`` for the GEMV, or ``(v, None,
    top_k)`` for weight-only schemes. ``top_k``: pairs per row of ``v`` (1 when rows are pairs). Scales are per
    code row (dynamic) or per expert (static: the codes are per pair). ``dp4a``: int8 codes in
    slab.int8_mma_order (the GEMV's DP4A 1), or v as int8 digit slices (DP4A 3)."""
    from dsq_cuda.act_quant import quantize_per_token_as_bf16, quantize_per_token_int8, scheme_int8_slices
    from dsq_cuda.moe_requant import requantize

    if dp4a == 3:
        codes, scales = scheme_int8_slices(v, scheme)
        return codes, scales, top_k
    if scheme.weight_only:
        return v, None, top_k
    if dp4a:
        codes, scales = quantize_per_token_int8(v, mma_order=True)
        return codes, scales.reshape(-1).contiguous(), top_k
    if not scheme.static_activations:
        codes, scales = quantize_per_token_as_bf16(v, scheme.act_dtype is QType.FP8_E4M3)
        return codes, scales.reshape(-1).contiguous(), top_k
    # static: each pair's codes q - zp with its expert's scale and zero point (one pair a block of moe_requant,
    # one kernel); the GEMV multiplies the expert's scale in (X_SCALE 2)
    s = packed.tensors.get("input_scale")
    if s is None:
        raise QuantInputError(f"{scheme.name} expert weights need input_scale [E, 1] (static activations)")
    s = s.reshape(-1).float().contiguous()
    zp = packed.tensors.get("input_zero_point")
    zp = torch.zeros_like(s, dtype=torch.int8) if zp is None else zp.reshape(-1)
    p = ids.shape[0]
    q, _ = requantize(v, p, None, ids, 1, p, top_k, 0.0, gather=True, static=(s, zp),
                      half_away=scheme.act_rounding.value == "half_away", centered=True, swiglu_kind=swiglu_kind)
    return q, s, 1


def run_gemv(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, gate_up: PackedWeight,
             down: PackedWeight, scheme: QuantScheme, num_experts: int,
             expert_range: tuple[int, int] | None) -> torch.Tensor:
    """y [T, H] for already-validated inputs (see the module docstring)."""
    from dsq_cuda import moe_decode
    from dsq_cuda.act_quant import quantize_swiglu_per_token_int8
    from dsq_cuda.moe_decode import combine
    from dsq_cuda.moe_decode_kernels import swiglu_kernel
    from dsq_cuda.moe_plan import OUT_KIND

    t, h = x.shape
    i = gate_up.shape[1] // 2
    top_k = topk_ids.shape[1]
    device = x.device
    up, dn = prepare(gate_up, scheme, device), prepare(down, scheme, device)
    ids = topk_ids.reshape(-1)  # int32 or int64, read as they are (no conversion kernel)
    if ids.dtype not in (torch.int32, torch.int64):
        ids = ids.to(torch.int32)
    ids = ids.contiguous()
    p = ids.shape[0]
    bits = scheme.weight_bits
    canonical = not up["row_tiles"]
    # both split-K outputs in one allocation, zeroed by one torch fill before the chain's first Triton kernel, so
    # the chain runs uninterrupted under programmatic dependent launch (dsq_cuda.pdl)
    buf = torch.zeros(p * (2 * i + h), dtype=torch.float32, device=device)
    hbuf, out = buf[: p * 2 * i].view(p, 2 * i), buf[p * 2 * i:].view(p, h)
    a = tile_order(x, bits, tile_words(scheme, 2 * i, h, device)) if canonical else x.contiguous()
    a, a_scale, x_div = _codes(a, scheme, gate_up, ids, top_k, _dp4a(scheme, up))
    _gemv(a, a_scale, up, scheme, hbuf, ids, 2 * i, h, x_div, expert_range, num_experts)
    # canonical words: the intermediate is stored in the down projection's tile order (zeros past I)
    sw = tile_words(scheme, h, i, device) if canonical else 0
    lbk = (32 // bits) * sw
    ip = -(-i // lbk) * lbk if canonical else i
    dp4a = _dp4a(scheme, dn)
    if dp4a == 1 and not canonical and moe_decode.FUSED_SWIGLU_QUANT:  # int8 codes straight from h
        a, a_scale = quantize_swiglu_per_token_int8(hbuf, OUT_KIND[x.dtype], mma_order=True)
        a_scale = a_scale.reshape(-1).contiguous()
    elif FUSE_SWIGLU and scheme.static_activations and not canonical:  # static codes straight from h
        a, a_scale, _ = _codes(hbuf, scheme, down, ids, 1, dp4a, swiglu_kind=OUT_KIND[x.dtype])
    else:
        inter = (torch.zeros if ip != i else torch.empty)((p, ip), dtype=x.dtype, device=device)
        block = min(1024, max(16, 1 << (i - 1).bit_length()))
        swiglu_kernel[(p, -(-i // block))](hbuf, inter, i, hbuf.stride(0), inter.stride(0),
                                           OUT_KIND=OUT_KIND[x.dtype], BLOCK=block, TILE_EPW=32 // bits, TILE_SW=sw,
                                           num_warps=4, **pdl.launch_args(device))
        a, a_scale, _ = _codes(inter, scheme, down, ids, 1, dp4a)
    _gemv(a, a_scale, dn, scheme, out, ids, h, i, 1, expert_range, num_experts)
    return combine(out, topk_weights, x.dtype)
