"""How a scheme maps onto the fused-MoE kernel's compile-time switches, and the block shapes per token count.

``plan(scheme, x_dtype)`` returns the constexpr dict of each of the two launches (moe_kernels.py explains
the switches); ``None`` as the scheme means the unquantized bf16/fp16/fp32 design the benchmark compares
with. Combinations the kernel cannot run exactly (fp8 weights with int8 activations, int8 weights with fp8
activations, groups smaller than 16 or not powers of two) raise UnsupportedError.

Block shapes: decode (at most 64 tokens, so a few pairs per expert) uses BLOCK_M = 16, the smallest
tensor-core tile, and narrow N tiles so that 8 active experts still spread over every SM; prefill uses
64-row blocks. BLOCK_K never crosses a weight group, block or activation group, so scales are per K-tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsq.errors import UnsupportedError
from dsq.qtypes import weight_tensor_name
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme

W_FLOAT, W_INT4, W_INT8_PACKED, W_INT8, W_FP8 = 0, 1, 2, 3, 4
A_FLOAT, A_CODES, A_DYNAMIC, A_STATIC, A_STATIC_CODES = 0, 1, 2, 3, 4
DOT_NATIVE, DOT_INT8, DOT_FP8, DOT_BF16, DOT_FP16, DOT_FP32 = 0, 1, 2, 3, 4, 5
OUT_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_FLOAT_DOT = {torch.bfloat16: DOT_BF16, torch.float16: DOT_FP16, torch.float32: DOT_FP32}


@dataclass(frozen=True)
class BlockConfig:
    block_m: int
    block_n_up: int  # per half (gate and up each) of the gate_up launch
    block_n_down: int
    block_k: int
    num_warps: int
    num_stages: int


def block_config(num_tokens: int, eight_bit_dot: bool, k_limit: int, w_tile_bytes: float = 2.0) -> BlockConfig:
    """Block shapes for a layer call with ``num_tokens`` tokens; BLOCK_K capped at ``k_limit`` (a group).

    ``w_tile_bytes`` is what one weight element costs in shared memory once loaded (2 for bf16, 0.5 for int4
    words loaded once, 4 when each int4 is loaded as its whole word): the pipeline depth is chosen so that
    the two weight tiles of a gate_up stage stay within about 112 KB.
    """
    if num_tokens <= 64:
        bm, bn_up, bn_down, bk, warps = 16, 64, 64, 128, 4
    else:
        bm, bn_up, bn_down, bk, warps = 64, 64, 128, (128 if eight_bit_dot else 64), 4
    bk = min(bk, k_limit)
    stage_bytes = 2 * bk * bn_up * w_tile_bytes + bm * bk * 2
    stages = int(max(2, min(4, (112 * 1024) // stage_bytes)))
    return BlockConfig(bm, bn_up, bn_down, bk, warps, stages)


def weight_tile_bytes(w_kind: int, unique_load: bool, x_bytes: int) -> float:
    """Shared-memory bytes per loaded weight element (see block_config)."""
    if w_kind == W_FLOAT:
        return float(x_bytes)
    if w_kind in (W_INT4, W_INT8_PACKED):
        return (0.5 if w_kind == W_INT4 else 1.0) if unique_load else 4.0
    return 1.0


def _w_switches(scheme: QuantScheme | None) -> dict:
    if scheme is None:
        return dict(W_KIND=W_FLOAT, W_ZP=False, W_GS=False, W_SCALE=0, GROUP=128, BLOCK_N_W=128, BLOCK_K_W=128)
    name = weight_tensor_name(scheme)
    if name == "weight_packed":
        kind = W_INT4 if scheme.weight_dtype is QType.INT4 else W_INT8_PACKED
    else:
        kind = W_FP8 if scheme.weight_dtype is QType.FP8_E4M3 else W_INT8
    if scheme.two_level:
        w_scale = 1
    else:
        w_scale = {Granularity.CHANNEL: 1, Granularity.GROUP: 2, Granularity.BLOCK: 3}[scheme.weight_granularity]
    group = scheme.group_size if (w_scale == 2 or scheme.two_level) else 128
    bn, bk = scheme.block_size
    return dict(W_KIND=kind, W_ZP=not scheme.weight_symmetric, W_GS=scheme.two_level, W_SCALE=w_scale,
                GROUP=group, BLOCK_N_W=bn, BLOCK_K_W=bk)


def _dot(scheme: QuantScheme | None, x_dtype: torch.dtype) -> int:
    if scheme is None:
        return DOT_FP32 if x_dtype == torch.float32 else DOT_NATIVE
    if scheme.weight_only:
        return _FLOAT_DOT[x_dtype]
    if scheme.act_dtype is QType.INT8:
        if scheme.weight_dtype is QType.FP8_E4M3:
            raise UnsupportedError(f"{scheme.name}: fp8 weights with int8 activations have no exact MMA")
        return DOT_INT8
    if scheme.weight_dtype is QType.INT8:
        raise UnsupportedError(f"{scheme.name}: int8 weight codes are not exact in fp8 activations' MMA")
    return DOT_FP8


def k_limit(scheme: QuantScheme | None) -> int:
    """The largest BLOCK_K that stays inside every group along K (weights and activations)."""
    limits = [128]
    if scheme is not None:
        sw = _w_switches(scheme)
        if sw["W_SCALE"] == 2 or sw["W_ZP"] or sw["W_GS"]:
            limits.append(sw["GROUP"])
        if sw["W_SCALE"] == 3:
            limits.append(sw["BLOCK_K_W"])
        if scheme.act_granularity is ActGranularity.TOKEN_GROUP:
            limits.append(scheme.act_group_size)
    bk = min(limits)
    if bk < 16 or bk & (bk - 1) or any(g % bk for g in limits):
        raise UnsupportedError(f"{scheme.name if scheme else 'bf16'}: groups along K {sorted(set(limits))} must "
                               "be multiples of one power of two >= 16 for the fused MoE kernel")
    return bk


def plan(scheme: QuantScheme | None, x_dtype: torch.dtype) -> tuple[dict, dict]:
    """(gate_up switches, down switches) for moe_gemm_kernel, excluding block shapes."""
    w = _w_switches(scheme)
    dot = _dot(scheme, x_dtype)
    common = dict(w, DOT=dot, OUT_KIND=OUT_KIND[x_dtype], HALF_AWAY=False, A_FP8=False, A_GROUPED=False,
                  A_GROUP=128)
    if scheme is not None and not scheme.weight_only:
        common["A_FP8"] = scheme.act_dtype is QType.FP8_E4M3
        common["A_GROUPED"] = scheme.act_granularity is ActGranularity.TOKEN_GROUP
        common["A_GROUP"] = scheme.act_group_size
        common["HALF_AWAY"] = scheme.act_rounding.value == "half_away"
    if scheme is None or scheme.weight_only:
        up_a = down_a = A_FLOAT
    elif scheme.static_activations:
        up_a = down_a = A_STATIC
    else:
        up_a, down_a = A_CODES, A_DYNAMIC
    tile_scaled = common["W_SCALE"] in (2, 3) or common["A_GROUPED"]
    up = dict(common, A_KIND=up_a, GATE_UP=True, NEXT_AMAX=down_a == A_DYNAMIC,
              NEXT_GROUP=common["A_GROUP"] if common["A_GROUPED"] else 0, TILE_SCALED=tile_scaled)
    down = dict(common, A_KIND=down_a, GATE_UP=False, NEXT_AMAX=False, NEXT_GROUP=0, TILE_SCALED=tile_scaled)
    return up, down
