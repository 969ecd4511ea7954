"""matmul host side: prepare a PackedWeight's device layout once, quantize the activation, launch a kernel.

Paths: weight-only schemes use gemv_kernel for M <= GEMV_MAX_M, dequantize + cuBLAS for M >= DENSE_MIN_M and
qmm_kernel in between; every other scheme quantizes x (act_quant) and runs qmm_kernel. A Config passed by
the caller (benchmarks) forces qmm_kernel, or gemv_kernel when its block_k is negative.

Device layout (cached in ``PackedWeight.device_layout[device]``; the canonical tensors are left untouched):
    w     the canonical codes (int32 words, or int8/fp8 [N, K]) contiguous on the device
    ws    weight_scale as float32 [N, G] / [N, 1] / [N/128, K/128]
    wz    zero points unpacked to int8 [N, G] (W4A16_ASYM)
    s2    integer group scales int8 [N, G] (W4A8_DYNAMIC)
    corr  int32 [N] = sum_k q[n, k] (W8A8 static: the activation zero point's contribution, for the epilogue)
"""

from __future__ import annotations

import torch

from dsq.errors import QuantInputError
from dsq.qtypes import PackedWeight
from dsq.schemes import ActGranularity, Granularity, QType, QuantScheme
from dsq_cuda import act_quant
from dsq_cuda._env import interpreting
from dsq_cuda.configs import Config, pick
from dsq_cuda.dequant_kernel import dequantize
from dsq_cuda.gemv_kernel import gemv_kernel
from dsq_cuda.mm_kernel import (
    ACT_FLOAT,
    ACT_FP8_GROUP,
    ACT_FP8_TOKEN,
    ACT_INT8_STATIC,
    ACT_INT8_TOKEN,
    qmm_kernel,
)
from dsq_cuda.unpack import unpack_words


def kind_of(scheme: QuantScheme) -> str:
    if scheme.weight_only:
        return "wonly"
    return "fp8" if scheme.act_dtype is QType.FP8_E4M3 else "int8"


def group_of(scheme: QuantScheme) -> int:
    """K inputs per scale group the tiles must respect (0: any BLOCK_K)."""
    if scheme.weight_granularity is Granularity.BLOCK:
        return scheme.block_size[1]
    if scheme.weight_granularity is Granularity.GROUP or scheme.two_level:
        return scheme.group_size
    return 0


def prepare(packed: PackedWeight, scheme: QuantScheme, device: torch.device) -> dict:
    """The device layout of a 2-D packed weight (computed once per device, then cached)."""
    key = f"dsq_cuda:{device}"
    if key in packed.device_layout:
        return packed.device_layout[key]
    n, k = packed.shape[-2:]
    t = {name: v.to(device) for name, v in packed.tensors.items()}
    lay: dict = {"n": n, "k": k}
    w = (t["weight_packed"] if "weight_packed" in t else t["weight"]).contiguous()
    lay["w"] = w.view(torch.uint8) if w.dtype == torch.float8_e4m3fn else w
    lay["ws"] = t["weight_scale"].float().contiguous()
    if "weight_zero_point" in t:
        zpw = t["weight_zero_point"]  # [ceil(N/8), G] int32, 8 zero points per word along N
        lay["wz"] = unpack_words(zpw.transpose(0, 1).contiguous(), 4, n).transpose(0, 1).contiguous()
    if "weight_group_scale" in t:
        lay["s2"] = t["weight_group_scale"].to(torch.int8).contiguous()
    if scheme.static_activations:
        lay["corr"] = lay["w"].to(torch.int32).sum(dim=1, dtype=torch.int32).contiguous()
        lay["input_scale"], lay["input_zero_point"] = act_quant.static_params(packed, scheme, device)
    packed.device_layout[key] = lay
    return lay


#: weight-only schemes use the tensor-core-free decode kernel up to this many rows (measured on H200: at M=4
#: it was 1.4x slower than the tiled kernel with BLOCK_M=16, at M=1 1.1x faster) ...
GEMV_MAX_M = 1
#: ... and dequantize-then-cuBLAS from this many rows on (None: never). Tests lower these to reach every path.
DENSE_MIN_M: int | None = 256


def _weight_only(x, lay, scheme, bias, config: Config | None) -> torch.Tensor:
    """W4A16 / W4A16_ASYM / W8A16: GEMV kernel (small M), tiled kernel, or dequantize + cuBLAS (large M)."""
    m, n, k = x.shape[0], lay["n"], lay["k"]
    group = group_of(scheme)
    dev = x.device
    # the tiled kernel's field-wise dots are group / (32 / bits) deep; MMAs need 16: smaller groups go dense
    too_shallow = bool(group) and group // (32 // scheme.weight_bits) < 16
    if config is None and ((DENSE_MIN_M is not None and m >= DENSE_MIN_M) or (too_shallow and m > GEMV_MAX_M)):
        wd = dequantize(lay, scheme.weight_bits, group, x.dtype)
        y = x @ wd.t()
        return y if bias is None else y + bias.to(y.dtype)
    if (config is None and m <= GEMV_MAX_M) or (config is not None and config.block_k < 0):
        cfg = config or pick("gemv", m, n, k, group, str(dev))
        bk = abs(cfg.block_k)
        epw = 32 // scheme.weight_bits
        out = torch.zeros((m, n), dtype=torch.float32, device=dev) if cfg.split_k > 1 else \
            torch.empty((m, n), dtype=x.dtype, device=dev)
        grid = (-(-m // cfg.block_m), -(-n // cfg.block_n), cfg.split_k)
        ws = lay["ws"]
        gemv_kernel[grid](x, lay["w"], ws, lay.get("wz", ws), bias if bias is not None else ws, out,
                          m, n, k, lay["w"].shape[-1], ws.shape[-1], x.stride(0), out.stride(0),
                          G=group or bk, BITS=scheme.weight_bits, ASYM="wz" in lay,
                          GROUP_SCALE=scheme.weight_granularity is Granularity.GROUP, HAS_BIAS=bias is not None,
                          SPLIT_K=cfg.split_k, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_W=bk // epw,
                          num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        return out.to(x.dtype) if cfg.split_k > 1 else out
    return None


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
    n, k = lay["n"], lay["k"]
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
    else:
        qa = act_quant.quantize_activation(x, scheme)
        xq, xs = qa.values, qa.scale
    group = group_of(scheme)
    cfg = config or pick(kind_of(scheme), m, n, k, group, str(dev))
    if group and group % cfg.block_k:
        raise QuantInputError(f"config block_k={cfg.block_k} does not divide the scale group {group}")
    split = cfg.split_k
    out = torch.zeros((m, n), dtype=torch.float32, device=dev) if split > 1 else \
        torch.empty((m, n), dtype=out_dtype, device=dev)
    w = lay["w"]
    ws = lay["ws"]
    dummy = ws
    grid = (-(-m // cfg.block_m), -(-n // cfg.block_n), split)
    qmm_kernel[grid](
        xq, xs if xs is not None else dummy, xz if xz is not None else dummy, w, ws,
        lay.get("wz", dummy), lay.get("s2", dummy), lay.get("corr", dummy),
        bias if bias is not None else dummy, out,
        m, n, k, w.shape[-1], lay["s2"].shape[-1] if "s2" in lay else ws.shape[-1], xs.shape[-1] if xs is not None else 1, xq.stride(0), out.stride(0),
        G=group or cfg.block_k, GN=scheme.block_size[0], ACT=act, WBITS=scheme.weight_bits,
        WPACKED=w.dtype == torch.int32, GROUP_SCALE=scheme.weight_granularity is Granularity.GROUP and
        not scheme.two_level, BLOCK_SCALE=scheme.weight_granularity is Granularity.BLOCK,
        ASYM=not scheme.weight_symmetric, TWO_LEVEL=scheme.two_level, HAS_BIAS=bias is not None,
        IEEE=act == ACT_FLOAT and (x.dtype == torch.float32 or interpreting()), SPLIT_K=split,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out.to(out_dtype) if split > 1 else out
