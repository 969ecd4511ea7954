"""Decode path of the fused MoE (T <= DECODE_MAX_T): slab-layout weights, gate/up as one N = 2I GEMM, split-K.

Steps (no host synchronisation; capturable in a CUDA graph):
    1. align pairs by expert in 16-row blocks (moe_align.py); quantize x once per token (dynamic schemes) or
       once per padded position with the position's expert's scale (static schemes: moe_requant.py).
    2. h[P, 2I] = x[token(p)] @ gate_up[e(p)]^T in float32, scales applied (moe_slab_kernel, split-K atomics).
    3. a[P, I] = round(silu(round(h[:, :I])) * round(h[:, I:])) in x.dtype (swiglu_kernel); dynamic schemes
       then quantize ``a`` once per pair (act_quant.py: per token int8/fp8 or per 128-group fp8; static: per
       padded position, moe_requant.py) - at decode this is a few rows, cheaper than quantizing on load in
       every N tile of the down GEMM.
    4. o[P, H] = a[p] @ down[e(p)]^T in float32 (moe_slab_kernel).
    5. y[t] = sum_j round(o[t*top_k + j]) * topk_weights[t, j] (float32 sum), cast to x.dtype.
Compared with the prefill kernel (moe_kernels.py) this has no reshape-unpacking, twice the N tiles per
gate_up launch (gate and up columns are separate tiles), and split-K when the blocks alone cannot fill the
GPU. Numerics are the same formulas; only float32 summation order differs.
"""

from __future__ import annotations

import torch

from dsq.qtypes import PackedWeight
from dsq.schemes import ActGranularity, QuantScheme
from dsq_cuda import moe_gemv, pdl
from dsq_cuda._env import check_not_capturing, deterministic, interpreting
from dsq_cuda.act_quant import quantize_swiglu_per_token_int8
from dsq_cuda.moe_align import align_pairs
from dsq_cuda.moe_layout import bits_of, prepare
from dsq_cuda.moe_plan import A_CODES, A_DYNAMIC, A_FLOAT, A_STATIC, A_STATIC_CODES, k_limit, plan
from dsq_cuda.moe_requant import requantize

DECODE_MAX_T = 64
#: dynamic per-token int8 schemes (W4A8_DYNAMIC, W8A8_DYNAMIC) quantize the SwiGLU of the gate / up output in
#: the quantization kernel itself (act_quant.quantize_swiglu_per_token_int8), here and in the one-token GEMV
#: (moe_gemv): one launch a layer call fewer, the same codes. False: swiglu_kernel, then the quantization.
FUSED_SWIGLU_QUANT = True
BLOCK_M = 16
#: K inputs per slab-layout tile for packed int4 / int8-in-words weights (SL = LBK / EPW = 32 words).
LBK = {4: 256, 8: 128}
#: defaults; the benchmark overrides them (decode_cfg) to sweep.
DEFAULTS = dict(block_n=64, num_warps=4, num_stages=4, target_programs=1024, lbk4=512, lbk8=128, sl1=128, swap=0,
                mma=1, mma_block_m=16, mma_stages=3, mma_x_ahead=0, mma_dot_fields=0, block_m=BLOCK_M,
                static_codes=1, mma8=0, shared=1, int8_mma=1, int8_mma_stages=4)
#: ``shared``: packed experts (int4, int8 in words) run both decode kernels on the one-token GEMV's row tiles
#: (dsq_cuda.moe_gemv; tiles of 16 words, 32 for W8A16; x reordered by dsq_cuda.slab.pair_order for the
#: tensor-core kernel)
#: instead of a layout of their own (pair tiles, the slab layout): one device copy of the codes fewer, 2x the
#: canonical bytes in all instead of 3x (cuda-moe.md v15). 0: the own layouts.
#: ``int8_mma``: with ``shared``, W4A8_DYNAMIC's experts (int4 x per-token int8) run that kernel's I8 path, the
#: int8 tensor cores on the row tiles (dsq_cuda.int4_int8_mma; x quantized into slab.int8_mma_order, at
#: ``int8_mma_stages`` stages), as the dense decode does (dsq_cuda.mm.MMA_INT8); 0: codes as bf16, bf16 MMAs.
#: 2: W4A16's and W4AFP8's experts too, x as int8 slices (act_quant.int8_slices; I8 = 4).
#: ``block_m``: pairs per M-block of moe_slab_kernel (16 or 32). An expert with more pairs than a block reads
#: its weights once per block, so skewed routing (32 pairs per expert at T = 64) reads them twice at 16.
#: ``mma8``: W8A16's experts (int8 codes in words, per-channel scales) on that kernel too, as the dense W8A16
#: path runs at M <= 64; 0 keeps them on moe_slab_kernel.
#: ``static_codes``: static activation schemes (W8A8) quantize x and the intermediate once per padded position
#: (moe_requant, the prefill path's pass) and the GEMMs read int8 codes, as the dynamic schemes do; 0 quantizes
#: on load, in every N tile, with a correctly rounded division per element.
#: ``mma=1`` runs symmetric int4 experts (W4A16, W4A8_DYNAMIC, W4AFP8 with per-token activations) through the
#: dense decode GEMM's kernel (dsq_cuda.mma_decode_kernel, MOE mode) on pair tiles instead of moe_slab_kernel
#: (``mma=0``). On the H200 (bench_moe.py --tokens 8,64 --variants '[{"mma": 1}]', 2026-11-29, one run) it won
#: all 12 cells (3 schemes x T 8/64 x uniform/skewed routing): 1.26-1.70x faster, e.g. W4A16 T = 64 uniform
#: 1916 vs 3183 us, W4A8_DYNAMIC T = 8 uniform 717 vs 1168 us.
#: ``mma_block_m`` (16, 32 or 64): pairs per block of that kernel. Each block reads its expert's whole weight,
#: so an expert with more pairs than a block reads it once per block (skewed T = 64: 32 pairs per expert, read
#: twice at 16); wider blocks read it fewer times but make each MMA wider (the dense kernel at M = 64 ran at
#: 0.66-0.95x bf16 against 1.56-1.70x at M = 16). It stays 16: on the H200 (bench_moe.py --variants
#: '[{"mma_block_m": 32}]', 2026-11-29, cuda-moe.md v10) 32 was slower in all 12 cells, 0.74-1.09x bf16 where
#: 16 ran 1.10-2.36x (W4AFP8 T = 64 uniform 4547 vs 1937 us).
MMA_BLOCK_MS = (16, 32, 64)
SLAB_BLOCK_MS = (16, 32)
#: ``mma_stages`` / ``mma_x_ahead``: that kernel's pipeline stages and X_AHEAD (x loaded a field ahead by hand,
#: 1, or by Triton's pipeliner, 0). 3 / 0 keeps the next weight tile in flight, as in the dense path: on the
#: H200 (bench_moe.py --variants '[{"mma_stages": 3, "mma_x_ahead": 0}]', 2026-11-29, cuda-moe.md v10) it won
#: 10 of 12 cells against 2 / 1, by up to 15% (W4A8_DYNAMIC T = 64 uniform 1754 vs 2015 us), and lost 4-5% on
#: skewed T = 64 for W4A16 and W4AFP8.
#: ``mma_dot_fields``: that kernel's DOT_FIELDS cap (fields per MMA chain; 0: as many as one scale group holds,
#: see dsq_cuda.mm.mma_dot_fields). 0 won all 12 cells against 1 on the H200 (bench_moe.py --variants
#: '[{"mma_dot_fields": 1}]', 2026-11-29, cuda-moe.md v11), by 4-17%: W4A16 T = 64 uniform 1552 vs 1809 us.
#: Measured and left out: the int4 offset folded into each scale group's epilogue (the codes into the MMA as
#: decoded, ``B + q + 8``, and ``(B + 8) * sum x`` subtracted per group, sum x from the x tiles): on the H200
#: (cuda-moe.md v18, results-h200-v18d-fold-offset.json) 10-17% slower in all 8 W4A16 / W4AFP8 cells at T = 8 /
#: 64 (W4A16 T = 64 uniform 1790 vs 1603 us): the per-column sums of x cost more than the subtraction they save.


def tuned(up_sw: dict) -> dict:
    """Per-kind launch defaults, from the H200 sweep in docs/benchmarks/cuda-moe.md (bench_moe --variants).

    Swapping the operands (weights as the MMA's A operand) won for bf16/fp8 dots on int4/int8-in-words and
    for int8/fp8 one-per-byte weights; the static W8A8 path (activation quantized on load) prefers wide N
    tiles and 8 warps; int4 with int8 dots (W4A8) was fastest unswapped; fp8 weights (FP8_BLOCK) stay
    unswapped because the swapped form (wgmma) lost accuracy there, for no measurable gain.
    """
    kind, dot, act = up_sw["W_KIND"], up_sw["DOT"], up_sw["A_KIND"]
    if act == A_STATIC:
        return dict(block_n=128, num_warps=8)
    if kind == 1 and dot == 1:
        return {}
    if kind == 4:  # swapped fp8 dots on fp8 weights missed the test tolerance on the H200 (0.46% vs 0.4%)
        return {}
    if kind in (1, 2, 3):
        return dict(swap=1)
    return {}


def _split(blocks: int, n_tiles: int, k_tiles: int, target: int) -> int:
    """Split K so that about ``target`` programs run, each keeping at least two K tiles; never under
    torch.use_deterministic_algorithms (the splits would meet in float32 atomics in arrival order)."""
    base = blocks * n_tiles
    if base >= target or k_tiles < 4 or deterministic():
        return 1
    return int(max(1, min(-(-target // base), k_tiles // 2)))


def mma_eligible(scheme: QuantScheme | None, x_dtype: torch.dtype, int8: bool = False) -> bool:
    """Whether the MOE mode of mma_decode_kernel serves this layer (see DEFAULTS['mma']): symmetric int4
    experts, and with ``int8`` (DEFAULTS['mma8']) W8A16's int8-in-words experts too."""
    if scheme is None or not scheme.weight_symmetric:
        return False
    if bits_of(scheme) != 4 and not (int8 and bits_of(scheme) == 8 and scheme.weight_only):
        return False
    if scheme.act_dtype is None:
        return x_dtype in (torch.bfloat16, torch.float16)
    return scheme.act_granularity is ActGranularity.TOKEN


def shares_row_tiles(scheme: QuantScheme | None, decode_cfg: dict | None = None) -> bool:
    """Whether the decode kernels read the one-token GEMV's row tiles (DEFAULTS['shared']): packed experts whose
    scale groups hold whole 16-word tiles (the tensor-core kernel's field decode spans a tile), while the GEMV
    reads row tiles (not moe_gemv.CANONICAL)."""
    from dsq_cuda.mm import group_of

    if not {**DEFAULTS, **(decode_cfg or {})}["shared"] or scheme is None or moe_gemv.CANONICAL:
        return False
    bits = bits_of(scheme)
    group = group_of(scheme)
    return bits in (4, 8) and (not group or group % ((32 // bits) * moe_gemv.tile_width(scheme)) == 0)


def expert_pair_tiles(packed: PackedWeight, scheme: QuantScheme, device: torch.device) -> torch.Tensor:
    """Stacked pair tiles ``[E, N, tiles * SL]`` of int4 experts (made once per device)."""
    from dsq_cuda.mm import group_of
    from dsq_cuda.slab import slab_length, to_pair_tiles

    sl = slab_length(group_of(scheme))
    key = f"dsq_cuda_moe_pt:{device}:{sl}"
    if key not in packed.device_layout:
        check_not_capturing("MoE pair-tile layout")
        e, n, k = packed.shape
        canon = packed["weight_packed"].to(device)
        packed.device_layout[key] = to_pair_tiles(canon.reshape(e * n, -1), k, bits_of(scheme), sl).view(e, n, -1)
    return packed.device_layout[key]


def _launch_mma(a, a_scale, packed: PackedWeight, scheme: QuantScheme, al, out, n, k, top_k, gate_up, cfg):
    """One grouped GEMM of the layer with mma_decode_kernel (MOE mode) on the experts' row tiles (cfg shared:
    moe_gemv's, x in pair order) or pair tiles."""
    from dsq_cuda.mm import group_of, mma_dot_fields
    from dsq_cuda.mma_decode_kernel import mma_decode_kernel
    from dsq_cuda.slab import pair_order, slab_length

    group = group_of(scheme)  # 0: per-channel scales (W8A16)
    bits = bits_of(scheme)
    epw = 32 // bits
    row_tiles = cfg["shared"]
    i8 = _int8_mma(scheme, cfg)
    if row_tiles:  # [E, tiles, N, SL] row tiles, x reordered to match (see mma_decode_kernel ROW_TILES)
        w = moe_gemv.prepare(packed, scheme, out.device)["w"]
        sl = w.shape[-1]
        if not i8:  # (I8: the codes came in int8 MMA order from the quantization)
            a = pair_order(a, sl)
        k, kw, stride_we = a.shape[1] // (4 if i8 == 4 else 1), w.shape[1] * sl, w.stride(0)
    else:
        w = expert_pair_tiles(packed, scheme, out.device)
        sl = slab_length(group)
        kw, stride_we = w.shape[-1], w.stride(0)
    two_level = scheme.two_level
    ws = packed["weight_group_scale" if two_level else "weight_scale"].to(out.device).contiguous()
    wc = packed["weight_scale"].to(out.device).contiguous() if two_level else ws
    # quantized activations: bf16 codes (ACT 1 reads any exact codes), else int8 codes (1) or e4m3 bits (3)
    act = 1 if i8 == 4 else 0 if scheme.act_dtype is None else 1 if a.dtype in (torch.bfloat16, torch.int8) else 3
    xs = a_scale.reshape(-1).float().contiguous() if act else ws
    # a [64, 32] float32 accumulator fits 4 warps; [*, 64] takes 8 warps and 128 rows, as in the dense kernel
    block_n, warps = (128, 8) if al.block_m > 32 else (64, 4)
    k_tiles = -(-k // (epw * sl))
    split = _split(al.max_blocks, -(-n // block_n), k_tiles, cfg["target_programs"])
    if split > 1:
        out.zero_()
    mma_decode_kernel[(-(-n // block_n), split, al.max_blocks)](
        a, xs, w, ws, wc, ws, ws, out, al.num_pairs, n, k, kw, ws.shape[-1], a.stride(0), out.stride(0),
        al.sorted_ids, al.block_expert, stride_we, ws.stride(0), wc.stride(0),
        G=group or epw * sl, BITS=bits, ACT=act, ASYM=False, GROUP_SCALE=bool(group),
        CHANNEL_SCALE=two_level or not group, HAS_BIAS=False, SPLIT_K=split, BLOCK_M=al.block_m, BLOCK_N=block_n, SL=sl, F16=act == 0 and a.dtype == torch.float16,
        ASM=not interpreting(), EVEN_K=k % (epw * sl) == 0, MOE=True, X_DIV=top_k if gate_up else 1,
        X_AHEAD=bool(cfg["mma_x_ahead"]) and not i8, num_warps=warps,
        num_stages=cfg["int8_mma_stages"] if i8 and al.block_m <= 16 else cfg["mma_stages"],
        DOT_FIELDS=1 if i8 else mma_dot_fields(bits, group, sl, bool(cfg["mma_x_ahead"]), cfg["mma_dot_fields"]),
        ROW_TILES=bool(row_tiles), I8=i8, **pdl.launch_args(out.device),
        PREFETCH=pdl.prefetch_tiles(out.device, "mma_int8" if i8 else "mma", block_n * sl * 4) if row_tiles else 0)


def _int8_mma(scheme: QuantScheme | None, cfg: dict) -> int:
    """The I8 mode of the tensor-core decode for this scheme's experts (decode_cfg int8_mma): 1 (int8 x), 4 (x as
    int8 slices; with int8_mma = 2 only) or 0 (bf16 tensor cores)."""
    from dsq_cuda.mm import int8_mma_mode

    mode = int8_mma_mode(scheme) if cfg["int8_mma"] and cfg["shared"] and scheme is not None else 0
    return mode if mode == 1 or cfg["int8_mma"] >= 2 else 0


def _launch(a, a_scale, static, lay, packed, scheme, al, out, n, k, top_k, gate_up, sw, cfg, tiny, dummy, mma,
            prepped: bool = True):
    """One grouped GEMM of the layer. ``prepped``: a kernel ran between the pair alignment and this one (x was
    quantized, reordered or copied), so that with PDL it may read the block table before its wait."""
    from dsq_cuda.moe_decode_kernels import moe_slab_kernel

    if mma:
        _launch_mma(a, a_scale, packed, scheme, al, out, n, k, top_k, gate_up, cfg)
        return

    bits = bits_of(scheme) if scheme is not None else 0
    epw = 32 // bits if bits else 1
    row_tiles = bits and lay.get("row_tiles", False)  # moe_gemv.prepare's dict: [E, tiles, N, SL]
    if row_tiles:
        sl = lay["w"].shape[-1]
    elif bits:
        sl = lay["lbk"] // epw
    else:
        sl = min(cfg["sl1"], k_limit(scheme))
    bk = sl * epw
    k_tiles = -(-k // bk)
    n_tiles = -(-n // cfg["block_n"])
    split = _split(al.max_blocks, n_tiles, k_tiles, cfg["target_programs"])
    if isinstance(packed, torch.Tensor):
        w, ws, zp, gs = packed, dummy, dummy, dummy
    else:
        w = lay["w"]
        if w.dtype == torch.float8_e4m3fn:
            w = w.view(torch.uint8)
        ws = packed["weight_scale"]
        zp = packed.tensors.get("weight_zero_point", dummy)
        gs = packed.tensors.get("weight_group_scale", dummy)
    corr = lay.get("corr", dummy) if lay else dummy

    def st(t):
        return (t.stride(0), t.stride(1)) if t.ndim >= 2 else (0, 0)

    # fp8 dots with the weight as the A operand lower to wgmma, whose fp8 accumulation is imprecise over
    # long K: measured 0.8% error at 128-wide slabs on the H200 (fine at 32-wide int4 slabs, scaled per slab).
    swap = bool(cfg["swap"]) and not (sw["DOT"] == 2 and sl > 32)
    if split > 1:
        out.zero_()
    grid = (al.max_blocks, n_tiles, split)
    prefetch = 0
    if not gate_up or prepped or split > 1:  # (zero_ is a kernel between the alignment and this one)
        if row_tiles:
            prefetch = pdl.prefetch_tiles(out.device, "slab", cfg["block_n"] * sl * 4)
        elif epw == 1 and sl * w.element_size() == pdl.ROW_PIECE and (k * w.element_size()) % 16 == 0:  # aligned
            prefetch = pdl.prefetch_tiles(out.device, "slab", cfg["block_n"] * pdl.ROW_PIECE)
    moe_slab_kernel[grid](
        a, a.stride(0), a_scale, a_scale.stride(0) if a_scale.ndim else 0, *static, corr,
        corr.stride(0) if corr.ndim == 2 else 0, w, w.stride(0), w.stride(-2 if row_tiles else 1), ws, *st(ws),
        zp, *st(zp), gs, *st(gs),
        al.sorted_ids, al.block_expert, out, out.stride(0), n, k, al.num_pairs, top_k, tiny,
        GATE_UP=gate_up, W_KIND=sw["W_KIND"], W_ZP=sw["W_ZP"], W_GS=sw["W_GS"], W_SCALE=sw["W_SCALE"],
        GROUP=sw["GROUP"], BLOCK_N_W=sw["BLOCK_N_W"], BLOCK_K_W=sw["BLOCK_K_W"], A_KIND=sw["A_KIND"],
        A_FP8=sw["A_FP8"], A_GROUPED=sw["A_GROUPED"], A_GROUP=sw["A_GROUP"], HALF_AWAY=sw["HALF_AWAY"],
        DOT=sw["DOT"], TILE_SCALED=sw["TILE_SCALED"], EVEN_K=k % bk == 0, EPW=epw, SWAP=swap, SPLIT_K=split,
        BLOCK_M=al.block_m, BLOCK_N=cfg["block_n"], SL=sl, ROW_TILES=bool(row_tiles), num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"], PREFETCH=prefetch, **pdl.launch_args(out.device))


def _quantize(v: torch.Tensor, scheme: QuantScheme, fp8: bool, as_bf16: bool = False, mma_order: bool = False,
              slices: bool = False):
    """Per-token (or per-token-group) codes of v and their scales; ``as_bf16``: per-token codes stored as bf16
    (exact), for the tensor-core decode kernel, which multiplies them in bf16; ``mma_order``: per-token int8 codes
    in slab.int8_mma_order, for its int8 path; ``slices``: x as int8 slices (act_quant.int8_slices), for its
    four-slice int8 path."""
    from dsq_cuda.act_quant import (
        quantize_per_group_fp8,
        quantize_per_token_as_bf16,
        quantize_per_token_fp8,
        quantize_per_token_int8,
        scheme_int8_slices,
    )

    if mma_order:
        return quantize_per_token_int8(v, mma_order=True)
    if slices:
        return scheme_int8_slices(v, scheme)
    if as_bf16 and scheme.act_granularity is ActGranularity.TOKEN:
        return quantize_per_token_as_bf16(v, fp8)
    if scheme.act_granularity is ActGranularity.TOKEN_GROUP:
        codes, scales = quantize_per_group_fp8(v, scheme.act_group_size)
    elif fp8:
        codes, scales = quantize_per_token_fp8(v)
    else:
        codes, scales = quantize_per_token_int8(v)
    return (codes.view(torch.uint8) if codes.dtype == torch.float8_e4m3fn else codes), scales


def run_decode(x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
               gate_up: PackedWeight | torch.Tensor, down: PackedWeight | torch.Tensor,
               scheme: QuantScheme | None, num_experts: int, expert_range: tuple[int, int] | None,
               static_args, no_static: list, dummy: torch.Tensor, tiny: float, decode_cfg: dict | None = None) -> torch.Tensor:
    """The decode path for already-validated inputs (see the module docstring); returns y [T, H]."""
    from dsq_cuda.moe_decode_kernels import swiglu_kernel

    t, h = x.shape
    i = gate_up.shape[1] // 2
    top_k = topk_ids.shape[1]
    device = x.device
    up_sw, down_sw = plan(scheme, x.dtype)
    static_codes = up_sw["A_KIND"] == A_STATIC and {**DEFAULTS, **(decode_cfg or {})}["static_codes"]
    if static_codes:
        up_sw["A_KIND"] = down_sw["A_KIND"] = A_STATIC_CODES
    cfg = {**DEFAULTS, **tuned(up_sw), **(decode_cfg or {})}
    if interpreting() and up_sw["DOT"] in (0, 3, 4):
        # Triton's interpreter multiplies bf16 tiles as raw integers; float32 products of bf16/fp16 codes
        # are exact, so the float32 IEEE dot computes the same thing.
        up_sw["DOT"] = down_sw["DOT"] = 5
    if down_sw["A_KIND"] == A_DYNAMIC:  # quantized once per pair after the SwiGLU pass (step 3)
        down_sw["A_KIND"] = A_CODES
    # the tensor-core decode kernel takes symmetric int4 experts (on the shared row tiles or their pair tiles;
    # the slab layout is then not built); it reads per-token codes as bf16
    cfg["shared"] = shares_row_tiles(scheme, cfg)
    mma = bool(cfg["mma"]) and mma_eligible(scheme, x.dtype if up_sw["A_KIND"] == A_FLOAT else torch.bfloat16,
                                            int8=bool(cfg["mma8"]) and not cfg["shared"])
    if cfg["shared"] and not mma and up_sw["DOT"] in (1, 2) and moe_gemv.tile_width(scheme) < 32:
        cfg["shared"] = False  # int8 / fp8 dots are at least 32 deep: the slab kernel keeps its own layout
    i8 = _int8_mma(scheme, cfg) if mma else 0
    lays = [None, None]
    if scheme is not None and not mma:
        for idx, p in enumerate((gate_up, down)):
            bits = bits_of(scheme)
            if cfg["shared"]:
                lays[idx] = moe_gemv.prepare(p, scheme, device)
            else:
                lays[idx] = prepare(p, scheme, device, cfg["lbk4"] if bits == 4 else cfg["lbk8"])
    if cfg["mma_block_m"] not in MMA_BLOCK_MS:
        raise ValueError(f"decode_cfg mma_block_m={cfg['mma_block_m']!r}: expected one of {MMA_BLOCK_MS}")
    if cfg["block_m"] not in SLAB_BLOCK_MS:
        raise ValueError(f"decode_cfg block_m={cfg['block_m']!r}: expected one of {SLAB_BLOCK_MS}")
    al = align_pairs(topk_ids, num_experts, cfg["mma_block_m"] if mma else cfg["block_m"], expert_range)
    rows = al.max_blocks * al.block_m
    p = al.num_pairs
    full = expert_range is None or tuple(expert_range) == (0, num_experts)
    alloc = torch.empty if full else torch.zeros

    a, a_scale = (x if x.stride(-1) == 1 else x.contiguous()), dummy
    if i8 == 4 or up_sw["A_KIND"] == A_CODES:
        a, a_scale = _quantize(a, scheme, up_sw["A_FP8"], as_bf16=mma, mma_order=i8 == 1, slices=i8 == 4)
    st = static_args(gate_up) if up_sw["A_KIND"] in (A_STATIC, A_STATIC_CODES) else no_static
    if static_codes:  # codes per padded position, of token pair // top_k, with the block's expert's scale
        a, _ = requantize(a, rows, al.sorted_ids, al.block_expert, al.block_m, p, top_k, tiny, gather=True,
                          static=(st[0], st[1]), half_away=up_sw["HALF_AWAY"])
    hbuf = alloc((p, 2 * i), dtype=torch.float32, device=device)
    _launch(a, a_scale, st, lays[0], gate_up, scheme, al, hbuf, 2 * i, h, top_k, True, up_sw, cfg, tiny, dummy, mma,
            prepped=a is not x)

    int8_codes = (down_sw["A_KIND"] == A_CODES and not down_sw["A_FP8"]
                  and scheme.act_granularity is ActGranularity.TOKEN and (i8 == 1 or not mma))
    if FUSED_SWIGLU_QUANT and int8_codes:  # the intermediate's int8 codes straight from h
        a, a_scale = quantize_swiglu_per_token_int8(hbuf, up_sw["OUT_KIND"], mma_order=i8 == 1)
    else:
        inter = torch.empty((p, i), dtype=x.dtype, device=device)
        block = min(1024, max(16, 1 << (i - 1).bit_length()))
        swiglu_kernel[(p, -(-i // block))](hbuf, inter, i, hbuf.stride(0), inter.stride(0),
                                           OUT_KIND=up_sw["OUT_KIND"], BLOCK=block, num_warps=4,
                                           **pdl.launch_args(device))
        a, a_scale = inter, dummy
        if i8 == 4 or down_sw["A_KIND"] == A_CODES:
            a, a_scale = _quantize(inter, scheme, down_sw["A_FP8"], as_bf16=mma, mma_order=i8 == 1,
                                   slices=i8 == 4)
    st = static_args(down) if down_sw["A_KIND"] in (A_STATIC, A_STATIC_CODES) else no_static
    if static_codes:  # the intermediate's rows are pairs: gather row pair // 1
        a, _ = requantize(inter, rows, al.sorted_ids, al.block_expert, al.block_m, p, 1, tiny, gather=True,
                          static=(st[0], st[1]), half_away=down_sw["HALF_AWAY"])
    out = alloc((p, h), dtype=torch.float32, device=device)
    _launch(a, a_scale, st, lays[1], down, scheme, al, out, h, i, top_k, False, down_sw, cfg, tiny, dummy, mma)
    return combine(out, topk_weights, x.dtype)


def combine(out: torch.Tensor, topk_weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """y [T, H] in ``dtype`` from the float32 expert outputs ``out`` [T * top_k, H] (pair t * top_k + j is
    token t's j-th expert): each output rounded to ``dtype`` before its routing weight (the reference's
    order), summed in float32, rounded (moe_decode_kernels.combine_kernel)."""
    from dsq_cuda.moe_decode_kernels import combine_kernel
    from dsq_cuda.moe_plan import OUT_KIND

    t, top_k = topk_weights.shape
    h = out.shape[1]
    y = torch.empty((t, h), dtype=dtype, device=out.device)
    block = min(1024, max(16, 1 << (h - 1).bit_length()))
    combine_kernel[(t, -(-h // block))](out, topk_weights.contiguous(), y, h, out.stride(0), y.stride(0),
                                        TOP_K=top_k, OUT_KIND=OUT_KIND[dtype], BLOCK=block, num_warps=4,
                                        **pdl.launch_args(out.device))
    return y
