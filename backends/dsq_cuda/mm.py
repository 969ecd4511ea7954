"""matmul host side: prepare a PackedWeight's device layout once, quantize the activation, launch a kernel.

Paths: weight-only schemes with bf16/fp16 x use mma_decode_kernel for M <= MMA_MAX_M[bits] (64) on weights
deep enough (MMA_MIN_K / MMA_WIDE_MIN_K), and in token blocks up to MMA_PREFILL_MAX_M (128), gemv_kernel for
M <= GEMV_MAX_M otherwise, dequantize + cuBLAS for M >= DENSE_MIN_M and qmm_kernel in between; W4A8_DYNAMIC
and W4AFP8 quantize x (act_quant: W4A8's int8 codes in the int8 MMA order for the decode kernel's int8 path,
MMA_INT8; W4AFP8's codes as bf16) and use mma_decode_kernel for M <= MMA_ACT_MAX_M (then with both as bf16 codes
up to MMA_PREFILL_MAX_M); from
EXPAND_MIN_M rows on (where the decode kernel does not take them) their int4 codes are expanded to one byte per
weight for the call and multiplied as int8 (qmm_kernel, W8A8_DYNAMIC's path) or FP8 (cuBLAS's block-scaled GEMM,
dsq_cuda.block_fp8, where available; else qmm_kernel). FP8_BLOCK uses that cuBLAS GEMM from BLOCK_FP8_MIN_M rows
on. Every other scheme quantizes x and runs qmm_kernel. A Config passed by the caller (benchmarks) forces
qmm_kernel, or gemv_kernel when its block_k is negative (-block_k = its tile width SW in words).

Device layouts: dsq_cuda.mm_layout.
"""

from __future__ import annotations

import dataclasses

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme, get_scheme
from dsq_cuda import act_quant, block_fp8, pdl
from dsq_cuda._env import deterministic, interpreting
from dsq_cuda.configs import Config, mma_stream_programs, pick, pick_mma
from dsq_cuda.dequant_kernel import dequantize_t
from dsq_cuda.expand_kernel import FP8_CODES, INT8_TWO_LEVEL, expand_int4
from dsq_cuda.fixup import fixup_slots, fixup_workspace
from dsq_cuda.gemv_kernel import launch as launch_gemv
from dsq_cuda.int4_int8_mma import SW as I8_SW
from dsq_cuda.mm_kernel import (
    ACT_FLOAT,
    ACT_FP8_GROUP,
    ACT_FP8_TOKEN,
    ACT_INT8_STATIC,
    ACT_INT8_TOKEN,
    qmm_kernel,
)
from dsq_cuda.mm_layout import group_of, kind_of, pair_tiles, prepare, row_tiles, slabs  # noqa: F401 (re-exported)
from dsq_cuda.mma_decode_kernel import mma_decode_kernel
from dsq_cuda.slab import GEMV_TILE_WORDS


def prepare_all(packed: PackedWeight, scheme: QuantScheme, device: torch.device) -> None:
    """Build every layout the default dispatch can use for this weight (before CUDA graph capture)."""
    lay = prepare(packed, scheme, device)
    if "packed" in lay:
        bits = scheme.weight_bits
        slabs(lay, bits)
        if _int8_mma(scheme):
            row_tiles(lay, bits, group_of(scheme), I8_SW)
        elif MMA_MAX_M[bits] and (scheme.weight_only or bits == 4):
            pair_tiles(lay, bits)
        if scheme.weight_only and (not MMA_MAX_M[bits] or lay["k"] < MMA_MIN_K[bits]):  # the GEMV's
            row_tiles(lay, bits, group_of(scheme), GEMV_TILE_WORDS)


#: packed weights use the tensor-core decode kernel up to this many rows (bf16/fp16 x), per weight width. On
#: the H200 (benchmarks/cuda/run_gpu.py, 2026-11-29) it beat the CUDA-core GEMV at M = 1 for int4 (W4A16
#: 7168x18432: 42.7 vs 44.2 us) and the tiled kernel at M = 16 and 64 (49.6 vs 59.0 us; 112 vs 163 us). For
#: int8 it lost to both in v7, but with x left to the pipeliner (cuda.md v10, run_gpu.py --variant) it won or
#: tied in every cell but one (within 0.3%): W8A16 1536x24576 M = 1 20.0 vs 23.6 us, M = 16 20.2 vs 28.0 us,
#: 16384x7168 M = 64 75.5 vs 122 us
MMA_MAX_M = {4: 64, 8: 64}
#: ... on weights at least this deep, per width, at M <= 16 (its K loop must amortise its prologue): v10 timed
#: int4 on K = 512 (512x32768) at 1.64x bf16 against the GEMV's 1.19x at M = 1, 1.59x vs 1.24x at M = 16; int8
#: on K < 1024 is untimed. Above M = 16, at least MMA_WIDE_MIN_K: K = 512 lost at M = 64 (0.36x vs 0.68x), as
#: did K = 1536 (0.64x vs 0.70x; v10, and v7 before it); K = 2048 won or tied
MMA_MIN_K = {4: 512, 8: 1024}
MMA_WIDE_MIN_K = 2048
#: ... and for W4A8_DYNAMIC / W4AFP8 (x quantized first, its int8 / e4m3 codes fed to the MMA as bf16). At
#: M = 64 it beat the tiled int8 / fp8 kernel on every deep shape (H200, run_gpu.py --variant, 2026-11-29,
#: cuda.md v10): W4A8 7168x18432 115 vs 258 us, 2048x7168 26 vs 62 us, 1536x24576 54 vs 77 us; on K = 512
#: it lost (52 vs 41 us), so above M = 16 it needs MMA_ACT_WIDE_MIN_K
MMA_ACT_MAX_M = 64
#: W4A8_DYNAMIC on the decode kernel: int4 codes and int8 x on the int8 tensor cores (its I8 path, reading the
#: GEMV's row tiles; dsq_cuda.int4_int8_mma) instead of both as bf16 on the bf16 tensor cores (pair tiles)
MMA_INT8 = True
#: ... its pipeline stages at M <= 16 (a stage holds half the weight bytes of the bf16 path's 256-input tile).
#: H200 (cuda.md v13, bench_i8): 4 stages 39.9 us against 3 stages' 41.9 on W4A8 7168x18432 at M = 1
MMA_INT8_STAGES = 4
MMA_ACT_WIDE_MIN_K = 1024
#: W4A8_DYNAMIC / W4AFP8 from this many rows on, where the decode kernel does not take them: int4 codes expanded
#: to one byte per weight for the call, then an int8 / FP8 GEMM (:func:`_expanded`). On the H200 the tiled
#: kernel on packed codes ran at 0.05-0.13x bf16 at M = 256 to 4096, expanded 0.43-1.56x (cuda.md v12)
EXPAND_MIN_M = 17
#: FP8_BLOCK through cuBLAS's block-scaled FP8 GEMM from this many rows on (dsq_cuda.block_fp8; where it is
#: available). H200, one run (cuda.md v12): 1.06-1.54x bf16 at M = 4096 where qmm_kernel ran at 0.53-0.66x; from
#: M = 17 instead it lost at M = 64 on 4 of 8 shapes (e.g. 2048x7168 0.60x vs 0.92x)
BLOCK_FP8_MIN_M = 65
#: False: never use cuBLAS's block-scaled FP8 GEMM (FP8_BLOCK keeps qmm_kernel, W4AFP8's expanded codes go to it)
CUBLAS_BLOCK_FP8 = True
#: the CUDA-core GEMV (gemv_kernel) up to this many rows, for widths the decode kernel does not take
GEMV_MAX_M = 1
#: dequantize-then-cuBLAS from this many rows on (None: never). Tests lower these to reach every path. H200, M =
#: 192 on 6 shapes (cuda.md v18): W4A16 0.38-0.69x bf16 against the tiled kernel's 0.29-0.47x, W8A16 0.36-0.68x
#: against 0.32-0.51x
DENSE_MIN_M: int | None = 129
#: above MMA_MAX_M (weight-only) / MMA_ACT_MAX_M (W4A8_DYNAMIC / W4AFP8, x's codes as bf16) up to this many
#: rows: the decode kernel (one block of tokens, or token blocks: configs.MMA_PREFILL_*) on weights at least
#: MMA_WIDE_MIN_K deep, instead of the tiled kernel / the expanded codes (0: never). H200, M = 128, the 4 deep
#: shapes, against the old paths in one run (cuda.md v18): W4A16 0.71-0.90x bf16 where the tiled kernel gave
#: 0.31-0.55x (7168x18432 107.8 vs 248.9 us); W8A16 0.63-0.86x vs 0.34-0.63x; W4A8_DYNAMIC 0.69-0.77x vs
#: 0.47-0.57x, W4AFP8 0.67-0.75x vs 0.49-0.60x (x's codes as bf16). At M = 256 it lost (0.27-0.66x against
#: dequantize + cuBLAS's 0.48-0.66x): about a third of the tensor cores' rate
MMA_PREFILL_MAX_M = 128


#: qmm_kernel's loads of one-byte codes and x without a K mask where K is a multiple of BLOCK_K (its EVEN_K)
QMM_EVEN_K = True


#: the decode kernel's K split: "fixup" (split-K grid, or stream-K above M = 16 on large weights as
#: configs.mma_stream_programs says; the last program of a row block finishes it in the kernel, from a cached
#: self-cleaning workspace), "stream" (stream-K over MMA_STREAM_PER_SM programs per SM,
#: same fixup) or "atomic" (split-K atomics into a zeroed float32 buffer, then a cast: two more kernels a call)
MMA_SPLIT = "fixup"
MMA_STREAM_PER_SM = 4
#: the decode kernel's X_AHEAD (x loaded one field ahead by hand; False: by Triton's pipeliner, see the
#: kernel). None: by hand only at 2 stages; at 3 or more the pipeliner's schedule keeps the next weight tile in
#: flight and was faster (configs.MMA_DECODE_STAGES)
MMA_X_AHEAD: bool | None = None
#: launch the tensor-core decode GEMM with programmatic dependent launch (dsq_cuda.pdl) at M <= PDL_MAX_M, so
#: that it starts while the activation quantization before it (W4A8_DYNAMIC, W4AFP8) drains, and, with
#: ``pdl.PREFETCH["dense_int8"]`` bytes and K <= PREFETCH_MAX_K, its int8 path (W4A8_DYNAMIC) prefetches each
#: program's first weight tiles into L2 before it waits. H200, one run at M 1 / 2 / 4 / 8 / 16 (cuda.md v16):
#: at M <= 2 PDL took 1-5% off W4A8_DYNAMIC and W4AFP8 (18432x7168 M = 1: 39.4 -> 37.8 us, 43.4 -> 42.3 us); from
#: M = 4 or 8 it cost the K >= 16384 shapes up to 32% (W4A8 18432x7168 M = 16: 39.6 -> 52.1 us; not profiled).
#: The prefetch won at K <= 2048 (2048x7168 M = 1: 13.9 -> 12.6 us, 1536x24576: 16.6 -> 15.3) and lost 1-3% at
#: K >= 7168. W4A16 has no kernel before its GEMM, so nothing changes for it.
PDL = True
PDL_MAX_M = 2
PREFETCH_MAX_K = 2048
#: the decode kernel's DOT_FIELDS cap (fields per MMA chain, when x is left to the pipeliner): 0 for the
#: longest run that stays inside one scale group (:func:`mma_dot_fields`), 1 for one field per chain. H200 lab
#: (cuda.md v11): the longest run won or tied all 24 cells of 4 shapes x int4/int8 x M 1/4/16, e.g. W4A16
#: 7168x18432 M = 16 29.2 vs 37.3 us, M = 1 28.4 vs 33.0 us
MMA_DOT_FIELDS = 0
#: how the decode kernel's in-kernel split-K finish (FIXUP) adds a row block's partial sums. Slots (True): each
#: program stores its partial sum in a slot of its own and the program that completes the block adds the slots in
#: slot order, so every call gives the same bits. Atomics (False): float32 atomic adds in the order the programs
#: arrive, which can change the last bit from call to call once a row block has 3 or more float partials
#: (W4A8_DYNAMIC's integer-valued partials never do). None (default): slots exactly when the caller asked PyTorch
#: for deterministic algorithms (``torch.use_deterministic_algorithms(True)``, dsq_cuda._env.deterministic, under
#: which the GEMV keeps slots too and every other split-K launch runs unsplit). H200, one run of 128 cells
#: (cuda.md v17): slots cost a median 0.6%, nothing on the wide shapes at M <= 16, and 5-27% (0.8-5 us) on
#: N <= 2048 with K = 7168, whose 8-14 splits make the most slots; the atomics gave up to 30 distinct outputs in
#: 30 calls (benchmarks/cuda/repeat_probe.py)
FIXUP_SLOTS: bool | None = None


def deterministic_split() -> bool:
    """Whether the decode kernel's split-K finish adds its partial sums in a fixed order (FIXUP_SLOTS)."""
    return deterministic() if FIXUP_SLOTS is None else FIXUP_SLOTS


def mma_dot_fields(bits: int, group: int, sl: int, x_ahead: bool, cap: int | None = None) -> int:
    """Fields of the pair-tile layout the decode kernel multiplies in one MMA chain (its DOT_FIELDS): a run of
    consecutive fields inside one scale group (a whole tile when per channel or the group spans tiles), capped
    by ``cap`` (default MMA_DOT_FIELDS; 0: no cap); 1 when x is loaded ahead by hand."""
    epw = 32 // bits
    if x_ahead:
        return 1
    if not group or group % (epw * sl) == 0:
        longest = epw
    else:
        longest = group // sl if (epw * sl) % group == 0 else 1
    cap = MMA_DOT_FIELDS if cap is None else cap
    return min(cap or longest, longest)


def _out_buffer(m: int, n: int, dtype: torch.dtype, split_k: int, device) -> torch.Tensor:
    """The output a decode kernel writes: zeroed float32 for split-K atomics, and in the interpreter (whose
    float32 -> bf16 cast truncates); the caller casts it to ``dtype``."""
    if split_k > 1 or interpreting():
        return torch.zeros((m, n), dtype=torch.float32, device=device)
    return torch.empty((m, n), dtype=dtype, device=device)


def int8_mma_mode(scheme: QuantScheme) -> int:
    """The decode kernel's I8 path for this scheme (its I8 value): 1 for int8 per-token x (W4A8_DYNAMIC), 4 for
    float or per-token e4m3 x as int8 slices (W4A16, W4AFP8; dsq_cuda.act_quant.int8_slices), 0 where it does not
    apply. It needs symmetric int4 weights with scale groups of whole 128-input tiles (or per channel)."""
    if scheme.weight_bits != 4 or not scheme.weight_symmetric or group_of(scheme) % (8 * I8_SW):
        return 0
    if scheme.act_dtype is None:
        return 4
    if scheme.act_granularity is not ActGranularity.TOKEN:
        return 0
    return 1 if scheme.act_dtype is QType.INT8 else 4


def int8_mma_serves(scheme: QuantScheme) -> bool:
    """Whether the dense decode's I8 path (int8 x, mode 1) can run this scheme."""
    return int8_mma_mode(scheme) == 1


def _int8_mma(scheme: QuantScheme) -> bool:
    """Whether the dense decode takes the I8 path (MMA_INT8 and the scheme fits it)."""
    return MMA_INT8 and int8_mma_serves(scheme)


def _mma_decode(xq, lay, scheme, bias, act: int, out_dtype: torch.dtype, xs=None, i8: bool = False) -> torch.Tensor:
    """mma_decode_kernel on the pair-tile layout, or with ``i8`` on the row tiles; ``xq``: x itself (act 0) or
    its int8 / fp8 codes with float32 per-token scales ``xs`` [M] (``i8``: int8 codes in
    dsq_cuda.slab.int8_mma_order). Returns y [M, N] in ``out_dtype``."""
    m, n, k = xq.shape[0], lay["n"], lay["k"]
    group = group_of(scheme)
    dev = xq.device
    if i8:
        sl = I8_SW
        w = row_tiles(lay, scheme.weight_bits, group, sl)
        kw = w.shape[0] * sl
    else:
        sl = lay["sl"]
        w = pair_tiles(lay, scheme.weight_bits)
        kw = w.shape[1]
    cfg = pick_mma(m, n, k, sl, scheme.weight_bits, str(dev))
    if i8 and cfg.block_m <= 16 and cfg.num_stages > 2:
        cfg = dataclasses.replace(cfg, num_stages=MMA_INT8_STAGES)
    if m > cfg.block_m and cfg.split_k > 1 and deterministic():  # (token blocks' split-K meets in atomics)
        cfg = dataclasses.replace(cfg, split_k=1)
    epw = 32 // scheme.weight_bits
    blocks, tiles = -(-n // cfg.block_n), kw // sl
    programs = 0
    if MMA_SPLIT == "stream":  # (the interpreter: as if 2 SMs, so programs share row blocks)
        sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 2
        programs = min(blocks * tiles, MMA_STREAM_PER_SM * sms)
    elif MMA_SPLIT == "fixup":  # large weights above M = 16 go stream-K (configs.MMA_WIDE_STREAM_PER_SM)
        programs = mma_stream_programs(cfg, n, k, scheme.weight_bits, str(dev), m)
    tblocks = -(-m // cfg.block_m)  # token blocks: more than one at prefill sizes, then no in-kernel finish
    ws_fix, slots = None, 0  # (slots: the kernel's SLOTS, 0 for atomics)
    if MMA_SPLIT != "atomic" and (cfg.split_k > 1 or programs) and tblocks == 1:
        slots = fixup_slots(cfg.split_k, programs, tiles, blocks) if deterministic_split() else 0
        ws_fix = fixup_workspace(dev, cfg.block_m, n, max(1, slots))
    if ws_fix is None:
        out = _out_buffer(m, n, out_dtype, cfg.split_k, dev)
    else:  # the kernel writes out in its dtype (float32 in the interpreter, whose bf16 cast truncates)
        out = torch.empty((m, n), dtype=torch.float32 if interpreting() else out_dtype, device=dev)
    two_level = scheme.two_level
    grouped = scheme.weight_granularity is Granularity.GROUP or two_level
    ws = lay["s2"] if two_level else lay["ws"]  # per-group scales (two-level: the integer s2)
    wc = lay["ws"]  # per-channel scales (two-level: s1), read only when CHANNEL_SCALE
    if xq.dtype == torch.float8_e4m3fn:
        xq = xq.view(torch.uint8)  # the kernel reinterprets the bits (masked lanes read as +0.0)
    # (token blocks of more than 64: x by the pipeliner, fields chained, whatever the stages)
    x_ahead = cfg.num_stages < 3 and cfg.block_m <= 64 if MMA_X_AHEAD is None else MMA_X_AHEAD
    on = PDL and m <= PDL_MAX_M and pdl.flag(dev)
    prefetch = 0
    if on and i8 and not programs and k <= PREFETCH_MAX_K:
        prefetch = pdl.prefetch_tiles(dev, "dense_int8", cfg.block_n * sl * 4)
    mma_decode_kernel[(programs,) if programs else (blocks, cfg.split_k, tblocks)](
        xq, ws if xs is None else xs, w, ws, wc, lay.get("wz", ws), ws if bias is None else bias, out,
        m, n, k, kw, ws.shape[-1], xq.stride(0), out.stride(0), ws, ws, 0, 0, 0,
        G=group or epw * sl, BITS=scheme.weight_bits, ACT=act, ASYM="wz" in lay, GROUP_SCALE=grouped,
        CHANNEL_SCALE=not grouped or two_level, HAS_BIAS=bias is not None, SPLIT_K=1 if programs else cfg.split_k,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, SL=sl, F16=act == ACT_FLOAT and xq.dtype == torch.float16,
        ASM=not interpreting(), EVEN_K=i8 or k % (epw * sl) == 0, STREAM=programs > 0, FIXUP=ws_fix is not None,
        sum_ptr=None if ws_fix is None else ws_fix[0], count_ptr=None if ws_fix is None else ws_fix[1],
        X_AHEAD=x_ahead and not i8, DOT_FIELDS=1 if i8 else mma_dot_fields(scheme.weight_bits, group, sl, x_ahead),
        ROW_TILES=i8, I8=int(i8), PDL=on, PREFETCH=prefetch, SLOTS=slots,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **pdl.launch_kwargs(on))
    return out.to(out_dtype)


def _weight_only(x, lay, scheme, bias, config: Config | None) -> torch.Tensor | None:
    """W4A16 / W4A16_ASYM / W8A16: GEMV kernel (small M) or dequantize + cuBLAS (large M); None: tiled kernel."""
    m, n, k = x.shape[0], lay["n"], lay["k"]
    group = group_of(scheme)
    dev = x.device
    wide = config is None and MMA_MAX_M[scheme.weight_bits] < m <= MMA_PREFILL_MAX_M and k >= MMA_WIDE_MIN_K
    if wide and x.dtype in (torch.bfloat16, torch.float16):  # prefill on the decode kernel, in token blocks
        return _mma_decode(x, lay, scheme, bias, ACT_FLOAT, x.dtype)
    if config is None and DENSE_MIN_M is not None and m >= DENSE_MIN_M:
        slabs(lay, scheme.weight_bits)
        wd = dequantize_t(lay, scheme.weight_bits, group, x.dtype)
        y = x @ wd
        return y if bias is None else y + bias.to(y.dtype)
    deep = k >= MMA_MIN_K[scheme.weight_bits] and (m <= 16 or k >= MMA_WIDE_MIN_K)
    if config is None and deep and m <= MMA_MAX_M[scheme.weight_bits] and x.dtype in (torch.bfloat16, torch.float16):
        return _mma_decode(x, lay, scheme, bias, ACT_FLOAT, x.dtype)
    if (config is None and m <= GEMV_MAX_M) or (config is not None and config.block_k < 0):
        cfg = config or pick(f"gemv{scheme.weight_bits}", m, n, k, group, str(dev))
        words = row_tiles(lay, scheme.weight_bits, group, -cfg.block_k)  # the configs carry the width negated
        # (with slots the kernel writes every output once, in x's dtype: no zeroed float32 buffer to add into)
        out = _out_buffer(m, n, x.dtype, 1 if deterministic() else cfg.split_k, dev)
        launch_gemv(x, words, lay["ws"], lay.get("wz"), bias, out, scheme, m, n, cfg, group,
                    slots=deterministic())  # (split-K partials added in slot order: the same bits every call)
        return out.to(x.dtype)
    return None


def _act_on_mma(m: int, k: int) -> bool:
    """Whether W4A8_DYNAMIC / W4AFP8 with M rows and K inputs take the decode kernel (decode sizes, or prefill
    up to MMA_PREFILL_MAX_M rows on weights at least MMA_WIDE_MIN_K deep)."""
    if m <= 16:
        return k >= MMA_MIN_K[4]
    if m <= MMA_ACT_MAX_M:
        return k >= MMA_ACT_WIDE_MIN_K
    return m <= MMA_PREFILL_MAX_M and k >= MMA_WIDE_MIN_K


def _act_mode(scheme: QuantScheme) -> int:
    if scheme.act_dtype is None:
        return ACT_FLOAT
    if scheme.act_dtype is QType.INT8:
        return ACT_INT8_STATIC if scheme.act_granularity is ActGranularity.TENSOR else ACT_INT8_TOKEN
    return ACT_FP8_GROUP if scheme.act_granularity is ActGranularity.TOKEN_GROUP else ACT_FP8_TOKEN


def matmul(x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme, bias: torch.Tensor | None = None,
           config: Config | None = None) -> torch.Tensor:
    """y [M, N] in x.dtype. ``config`` overrides the heuristic (benchmarks sweep it)."""
    dev = x.device
    lay = prepare(packed, scheme, dev)
    n = lay["n"]
    m = x.shape[0]
    out_dtype = x.dtype
    if m == 0:
        return torch.empty((0, n), dtype=out_dtype, device=dev)
    if bias is not None:
        if bias.shape != (n,):
            raise QuantInputError(f"bias has shape {tuple(bias.shape)}; expected [N] = [{n}]")
        bias = bias.to(dev).contiguous()
    act = _act_mode(scheme)
    xs = xz = None
    if act == ACT_FLOAT:
        xq = x.contiguous()
        y = _weight_only(xq, lay, scheme, bias, config)
        if y is not None:
            return y
    elif act == ACT_INT8_STATIC:
        xs, xz = lay["input_scale"], lay["input_zero_point"]
        xq = act_quant.quantize_static_int8(x, xs, xz, half_away=scheme.act_rounding.value == "half_away")
    elif config is None and "packed" in lay and act in (ACT_INT8_TOKEN, ACT_FP8_TOKEN) and \
            _act_on_mma(m, lay["k"]):
        if _int8_mma(scheme) and m <= MMA_ACT_MAX_M:
            xq, xs = act_quant.quantize_per_token_int8(x, mma_order=True)
            return _mma_decode(xq, lay, scheme, bias, ACT_INT8_TOKEN, out_dtype, xs=xs.reshape(-1), i8=True)
        # the decode kernel multiplies codes in bf16: quantize straight to bf16 codes (exact), so its inner
        # loop loads them as they are instead of converting int8 / e4m3 to bf16 once per program and field
        xq, xs = act_quant.quantize_per_token_as_bf16(x, fp8=act == ACT_FP8_TOKEN)
        return _mma_decode(xq, lay, scheme, bias, ACT_INT8_TOKEN, out_dtype, xs=xs.reshape(-1))
    elif act == ACT_FP8_GROUP and config is None and m >= BLOCK_FP8_MIN_M and CUBLAS_BLOCK_FP8 and \
            block_fp8.serves(scheme, n, lay["k"], dev):
        xq, xs = act_quant.quantize_per_group_fp8(x, scheme.act_group_size)
        return block_fp8.block_scaled_mm(xq, xs, lay["w"].view(torch.float8_e4m3fn), lay["ws"], bias, out_dtype)
    elif config is None and "packed" in lay and m >= EXPAND_MIN_M and act in (ACT_INT8_TOKEN, ACT_FP8_TOKEN):
        return _expanded(x, lay, scheme, bias, out_dtype)
    else:
        qa = act_quant.quantize_activation(x, scheme)
        xq, xs = qa.values, qa.scale
    return _qmm(xq, xs, xz, lay, scheme, bias, config, out_dtype)


def _expanded(x: torch.Tensor, lay: dict, scheme: QuantScheme, bias, out_dtype: torch.dtype) -> torch.Tensor:
    """W4A8_DYNAMIC / W4AFP8 above the decode kernel's M: the int4 codes expanded to one byte per weight for
    this call (dsq_cuda.expand_kernel), then a GEMM on the int8 / FP8 tensor cores:
        W4A8_DYNAMIC  int8 ``q4 * s2`` -> qmm_kernel as W8A8_DYNAMIC with the channel scales s1 (exact int32 sums)
        W4AFP8        e4m3 ``q4`` -> cuBLAS block-scaled FP8 (dsq_cuda.block_fp8) where available, else
                      qmm_kernel on one-byte FP8 weights with the group scales"""
    n, k = lay["n"], lay["k"]
    words = slabs(lay, 4)
    if scheme.two_level:
        codes = expand_int4(words, n, k, lay["sl"], INT8_TWO_LEVEL, lay["s2"], scheme.group_size)
        xq, xs = act_quant.quantize_per_token_int8(x)
        return _qmm(xq, xs, None, {"n": n, "k": k, "w": codes, "ws": lay["ws"]}, get_scheme("W8A8_DYNAMIC"),
                    bias, None, out_dtype)
    codes = expand_int4(words, n, k, lay["sl"], FP8_CODES)
    xq, xs = act_quant.quantize_per_token_fp8(x)
    if CUBLAS_BLOCK_FP8 and block_fp8.serves(scheme, n, k, x.device):
        return block_fp8.w4afp8_mm(xq, xs, codes, lay["ws"], bias, out_dtype)
    one_byte = dataclasses.replace(scheme, name=f"{scheme.name} (expanded)", weight_dtype=QType.FP8_E4M3)
    return _qmm(xq, xs, None, {"n": n, "k": k, "w": codes.view(torch.uint8), "ws": lay["ws"]}, one_byte, bias,
                None, out_dtype)


def _qmm(xq, xs, xz, lay: dict, scheme: QuantScheme, bias, config: Config | None, out_dtype: torch.dtype):
    """qmm_kernel on quantized x (or x itself for weight-only schemes) and the weight's layout ``lay``."""
    m, n, k = xq.shape[0], lay["n"], lay["k"]
    dev = xq.device
    act = _act_mode(scheme)
    group = group_of(scheme)
    cfg = config or pick(kind_of(scheme), m, n, k, group, str(dev))
    sl = lay.get("sl", 16)
    packed_w = "sl" in lay
    # packed weights: the tile is the layout's (EPW slabs); cfg.block_k applies to one-per-byte weights
    block_k = sl * 32 // scheme.weight_bits if packed_w else abs(cfg.block_k)
    if not packed_w and group and group % block_k:
        raise QuantInputError(f"config block_k={cfg.block_k} does not divide the scale group {group}")
    split = 1 if deterministic() else cfg.split_k  # (split-K partials meet in float32 atomics)
    out = torch.zeros((m, n), dtype=torch.float32, device=dev) if split > 1 else \
        torch.empty((m, n), dtype=out_dtype, device=dev)
    w = slabs(lay, scheme.weight_bits) if packed_w else lay["w"]
    ws = lay["ws"]
    dummy = ws
    grid = (-(-m // cfg.block_m), -(-n // cfg.block_n), split)
    qmm_kernel[grid](
        xq, xs if xs is not None else dummy, xz if xz is not None else dummy, w, ws,
        lay.get("wz", dummy), lay.get("s2", dummy), lay.get("corr", dummy),
        bias if bias is not None else dummy, out,
        m, n, k, lay["s2"].shape[-1] if "s2" in lay else ws.shape[-1], xs.shape[-1] if xs is not None else 1, xq.stride(0), out.stride(0),
        G=group or block_k, GN=scheme.block_size[0], ACT=act, WBITS=scheme.weight_bits,
        WPACKED=packed_w, GROUP_SCALE=scheme.weight_granularity is Granularity.GROUP and
        not scheme.two_level, BLOCK_SCALE=scheme.weight_granularity is Granularity.BLOCK,
        ASYM=not scheme.weight_symmetric, TWO_LEVEL=scheme.two_level, HAS_BIAS=bias is not None,
        IEEE=act == ACT_FLOAT and (xq.dtype == torch.float32 or interpreting()), SPLIT_K=split,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=block_k, SL=sl, EVEN_K=QMM_EVEN_K and k % block_k == 0,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out.to(out_dtype) if split > 1 else out
