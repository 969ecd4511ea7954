"""Launch configurations for the quantized GEMM, per shape class, chosen once and cached.

A config is (BLOCK_M, BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages). The heuristic below follows the
roofline: decode shapes (M <= 16) read each weight byte once, so they want many programs in flight (split-K
until the grid covers the multiprocessors about twice) and a small BLOCK_M; prefill shapes (large M) are
tensor-core bound and want large tiles. ``TUNED`` holds measured winners from benchmarks/cuda/run_gpu.py
(keyed by kind, M bucket, N, K) and takes precedence. Results are memoised per (kind, M bucket, N, K, device).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton

from dsq_cuda._env import interpreting
from dsq_cuda.slab import GEMV_TILE_WORDS


@dataclass(frozen=True)
class Config:
    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3


#: measured winners: (kind, m_bucket, N, K) -> Config, from the H200 sweep of benchmarks/cuda/run_gpu.py
#: --sweep on the slab layout (docs/benchmarks/cuda.md, 2026-11-22; the M=1, 4 and 16 timings share the
#: bucket 16, whose entry is the best over them). Packed kinds ignore block_k (the layout fixes the tile).
TUNED: dict[tuple[str, int, int, int], Config] = {
    ("fp84", 16, 2048, 7168): Config(16, 64, 128, 8, 4, 3),
    ("fp84", 16, 7168, 18432): Config(16, 64, 128, 8, 4, 3),
    ("fp84", 16, 18432, 7168): Config(16, 128, 128, 8, 4, 3),
    ("fp84", 64, 2048, 7168): Config(64, 64, 128, 8, 4, 3),
    ("fp84", 64, 7168, 18432): Config(64, 64, 128, 8, 4, 3),
    ("fp84", 64, 18432, 7168): Config(64, 64, 128, 4, 4, 3),
    ("int84", 16, 2048, 7168): Config(16, 64, 128, 8, 4, 3),
    ("int84", 16, 7168, 18432): Config(16, 64, 128, 8, 4, 3),
    ("int84", 16, 18432, 7168): Config(16, 64, 128, 4, 4, 3),
    ("int84", 64, 2048, 7168): Config(64, 64, 128, 8, 4, 3),
    ("int84", 64, 7168, 18432): Config(64, 64, 128, 8, 4, 3),
    ("int84", 64, 18432, 7168): Config(64, 64, 128, 4, 4, 3),
    ("wonly4", 16, 2048, 7168): Config(16, 64, 128, 8, 4, 3),
    ("wonly4", 16, 7168, 18432): Config(16, 64, 128, 8, 4, 3),
    ("wonly4", 16, 18432, 7168): Config(16, 64, 128, 4, 4, 3),
    ("wonly4", 64, 2048, 7168): Config(64, 64, 128, 4, 4, 3),
    ("wonly4", 64, 7168, 18432): Config(64, 128, 128, 4, 4, 3),
    ("wonly4", 64, 18432, 7168): Config(64, 128, 128, 4, 4, 3),
    ("wonly8", 16, 2048, 7168): Config(16, 64, 128, 8, 4, 3),
    ("wonly8", 16, 7168, 18432): Config(16, 64, 128, 8, 4, 3),
    ("wonly8", 16, 18432, 7168): Config(16, 64, 128, 8, 4, 3),
    ("wonly8", 64, 2048, 7168): Config(64, 64, 128, 8, 4, 3),
    ("wonly8", 64, 7168, 18432): Config(64, 128, 128, 4, 4, 3),
    ("wonly8", 64, 18432, 7168): Config(64, 64, 128, 1, 4, 3),
}


def m_bucket(m: int) -> int:
    """Shapes whose M rounds up to the same power of two (at least 16) share a config."""
    return max(16, triton.next_power_of_2(max(1, m)))


@functools.lru_cache(maxsize=1024)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _largest_divisor_block(g: int, want: int) -> int:
    """Largest power of two <= want dividing g (tiles must not straddle a scale group)."""
    b = want
    while b > 16 and g % b:
        b //= 2
    return b


#: the tiled kernel's tile above M = 256 for one-byte codes (int8 / fp8 weights: W8A8, W8A8_DYNAMIC, W4A8's
#: expanded codes, FP8 without cuBLAS): (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages)
LARGE_M_TILE = (128, 128, 128, 8, 3)


@functools.lru_cache(maxsize=4096)
def pick(kind: str, m: int, n: int, k: int, group: int, device: str) -> Config:
    """The config for one GEMM. ``kind``: dsq_cuda.mm.kind_of ('wonly4', 'int8', 'fp84', ...) or 'gemv4' /
    'gemv8' (decode kernel); ``group``: K inputs per scale (or 0)."""
    mb = triton.next_power_of_2(max(1, m)) if kind.startswith("gemv") else m_bucket(m)
    key = (kind, mb, n, k)
    if key in TUNED and (not group or group % abs(TUNED[key].block_k) == 0):
        return TUNED[key]
    if kind.startswith("gemv"):
        return _pick_gemv(m, n, k, group, device)
    if interpreting() or device == "cpu":  # the interpreter: small tiles keep numpy fast
        bk = _largest_divisor_block(group, 32) if group else 32
        return Config(16, 32, bk, 2 if k > 2 * bk else 1, 4, 1)
    sms = _sm_count(torch.device(device).index or 0)
    if mb <= 16 and (kind.startswith("wonly") or kind in ("int84", "fp84")):  # packed decode: the sweep's winners were all BN=64, split 4-8
        k_tiles = triton.cdiv(k, 256 if kind.endswith("4") else 128)
        split = max(1, min(8, triton.cdiv(8 * sms, triton.cdiv(n, 64)), k_tiles // 2))
        return Config(16, 64, 128, split, 4, 3)
    if mb <= 16:
        bm, bn, bk, warps, stages = 16, 128, 128, 4, 3
    elif mb <= 64:
        bm, bn, bk, warps, stages = mb, 64, 128, 4, 4
    elif mb <= 256:
        bm, bn, bk, warps, stages = 64, 128, 128, 4, 4
    elif kind in ("int8", "fp8"):  # one-byte codes
        bm, bn, bk, warps, stages = LARGE_M_TILE
    else:  # weight-only needs BLOCK_K = 128: its field-wise dots are BLOCK_K / 8 deep, and MMAs need >= 16
        bm, bn, bk, warps, stages = 128, 128, 128, 8, 3
    if group:
        bk = _largest_divisor_block(group, bk)
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    k_tiles = triton.cdiv(k, bk)
    split = 1
    if tiles < 2 * sms:  # too few output tiles to keep every SM streaming weights: split K
        split = max(1, min(k_tiles // 4, triton.cdiv(2 * sms, tiles)))
    return Config(bm, bn, bk, split, warps, stages)


def _pick_gemv(m: int, n: int, k: int, group: int, device: str) -> Config:
    """Decode kernel config; block_k holds the tile width SW in words negated (the marker that selects gemv_kernel).

    From the H200 sweep of benchmarks/cuda/gemv_lab.py (2026-11-29): the kernel is latency-bound unless many
    programs stream weights at once, so every shape wanted the largest split tried (16 programs per output
    tile; a second sweep up to 32 gained 0-10% more) with SW = 16 (SW = 32 and 8 were
    slower) and BLOCK_N = 128 (64 when N is small; 256 within 1%)."""
    bm = triton.next_power_of_2(max(1, m))
    if interpreting() or device == "cpu":
        return Config(bm, 16, -GEMV_TILE_WORDS, 2 if k > 256 else 1, 4, 1)
    bn = 128 if n >= 4096 else 64
    chunks = triton.cdiv(k, max(group or 0, 128))
    return Config(bm, bn, -GEMV_TILE_WORDS, max(1, min(32, chunks)), 4, 3)


#: pipeline stages of the decode kernel at M <= 16 when a program sums at least 2 K tiles (1 tile: 2 stages).
#: With 3 stages dsq_cuda.mm leaves x to Triton's pipeliner (the kernel's X_AHEAD = False), which keeps the
#: next weight tile in flight (H200 lab and run_gpu.py --variant, 2026-11-29, docs/benchmarks/cuda.md v10)
MMA_DECODE_STAGES = 3
#: split-K at M <= 16 aims at this many programs per SM (rounded to the nearest power of two of splits), and
#: leaves each program at least 2 K tiles. H200 lab, x left to the pipeliner, 3 stages: 7168x18432 M = 1 took
#: 33.2 / 34.4 / 37.7 / 45.7 us at split 2 / 4 / 8 / 16 (4.4 / 8.7 / 17 / 35 programs per SM); 2048x7168 (8 K
#: tiles) 9.6 / 9.2 / 12.1 us at split 2 / 4 / 8, the last with one tile a program
MMA_PROGRAMS_PER_SM = 4


#: above M = 16 (BLOCK_N 128, 8 warps) large weights go stream-K (dsq_cuda.mma_decode_kernel STREAM): this many
#: programs per SM share the ``row blocks x K tiles`` evenly, when each gets at least MMA_WIDE_STREAM_MIN_TILES
#: tiles. H200 lab, M = 64, 2026-11-29 (cuda.md v10): 7168x18432 68.9 us against 94.3 for the best split-K
#: (144 row blocks: split 2 leaves a partial third wave); 18432x7168 65.4 against 66.4; on 7168x2048 and
#: 2048x7168 (3.4 tiles a program) split-K won, 20.5 vs 22.6 and 16.9 vs 23.4 us
MMA_WIDE_STREAM_PER_SM = 1
MMA_WIDE_STREAM_MIN_TILES = 16
#: pipeline stages above M = 16 (a stage holds x [64, 256] and the weight tile: 48 KB at M = 64). 2 stages
#: were slower on all 3 shapes of the H200 lab (cuda.md v10): 7168x18432 M = 64 82.4 vs 68.1 us at best
MMA_WIDE_STAGES = 3


#: above the decode sizes, up to dsq_cuda.mm.MMA_PREFILL_MAX_M tokens, the decode kernel's tiles as (BLOCK_M tokens,
#: the MMA's N side; BLOCK_N weight rows; warps; stages): MMA_PREFILL_ONE_BLOCK holds all the tokens in one block
#: under stream-K where the weight is large enough for stream-K (mma_stream_programs); else MMA_PREFILL_TOKEN_BLOCKS,
#: split-K (float32 atomics) only where row blocks x token blocks leave SMs idle. H200, M = 128 (cuda.md v18): the
#: one block won on 7168x18432 (106.5 us against 137.1 in token blocks of 64) and 18432x7168 (105.8 vs 112.0); token
#: blocks of 64 won on 7168x2048 (22.8 vs 26.0) and 2048x7168 (18.2 vs 26.7), whose row blocks x K tiles are too
#: few for stream-K. BLOCK_N 64 with 4 warps lost on all four shapes
MMA_PREFILL_ONE_BLOCK = (128, 128, 8, 2)
MMA_PREFILL_TOKEN_BLOCKS = (64, 128, 8, 3)


def mma_stream_programs(cfg: Config, n: int, k: int, bits: int, device: str, m: int = 0) -> int:
    """Programs of a stream-K launch of the decode kernel for ``cfg`` (from :func:`pick_mma`), or 0: split-K (also
    for more tokens than one block, ``m`` > BLOCK_M)."""
    if cfg.block_m <= 16 or m > cfg.block_m or interpreting() or device == "cpu":
        return 0
    programs = MMA_WIDE_STREAM_PER_SM * _sm_count(torch.device(device).index or 0)
    units = triton.cdiv(n, cfg.block_n) * triton.cdiv(k, cfg.block_k * 32 // bits)
    return programs if units >= MMA_WIDE_STREAM_MIN_TILES * programs else 0


def pick_mma(m: int, n: int, k: int, sl: int, bits: int, device: str) -> Config:
    """Config of the tensor-core decode kernel (dsq_cuda.mma_decode_kernel); block_k carries the slab length SL.

    From the H200 sweeps of benchmarks/cuda/mma_decode_lab.py (2026-11-29, W4A16/W8A16 on 7168x18432,
    18432x7168, 7168x2048): at M <= 16 BLOCK_N = 64 with 4 warps won or was within 5%, with split-K per
    MMA_PROGRAMS_PER_SM and stages per MMA_DECODE_STAGES (above); at M <= 64 a [128, 64] float32 accumulator
    needs 8 warps (4 spill), and split 2 (8 on the narrow N = 2048) won. SL = 64 won by up to 7% at M = 16
    (N = 2048) but lost by up to 32% at M = 1, so SL stays the group's slab length (32 for group 128).
    """
    bm = max(16, triton.next_power_of_2(max(1, m)))
    tiles = triton.cdiv(k, sl * 32 // bits)  # K tiles of the pair-tile layout: split-K never exceeds them
    if interpreting() or device == "cpu":  # the interpreter: small tiles keep numpy fast
        return Config(bm if m <= 64 else 32, 32, sl, 2 if tiles > 1 else 1, 4, 1)
    sms = _sm_count(torch.device(device).index or 0)
    if bm > 64:  # prefill (MMA_PREFILL_*): one block of tokens under stream-K, or token blocks
        bm, bn, warps, stages = MMA_PREFILL_ONE_BLOCK
        one = Config(bm, bn, sl, 1, warps, stages)
        if m <= bm and mma_stream_programs(one, n, k, bits, device, m):
            return one
        bm, bn, warps, stages = MMA_PREFILL_TOKEN_BLOCKS
        blocks = triton.cdiv(n, bn) * triton.cdiv(m, bm)
        return Config(bm, bn, sl, max(1, min(tiles // 4, sms // blocks)), warps, stages)
    if bm <= 16:
        bn, warps = 64, 4
        want = MMA_PROGRAMS_PER_SM * sms / triton.cdiv(n, bn)  # splits that give that many programs
        split = 1 << max(0, round(math.log2(want))) if want > 1 else 1
        split = max(1, min(16, split, tiles // 2))  # so every program sums 2+ tiles, unless there is one
        stages = MMA_DECODE_STAGES if tiles >= 2 else 2
    else:
        bn, warps, stages = 128, 8, MMA_WIDE_STAGES
        split = max(1, min(16, 2 if triton.cdiv(n, bn) >= 48 else 8, tiles))
    return Config(bm, bn, sl, split, warps, stages)
