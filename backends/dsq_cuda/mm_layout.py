"""The device layouts of a dense packed weight for dsq_cuda.mm: made from the PackedWeight once per device, each
at its first use, and cached.

Device layout (cached in ``PackedWeight.device_layout[device]``; the canonical tensors are left untouched):
    w     packed int4/int8 words in the slab layout of dsq_cuda.slab, int32 ``[ceil(K/LBK) * SL, N]``
          (LBK = SL * 32/bits; made at the first qmm / dequantize call, :func:`slabs`), or the canonical
          int8/fp8 codes [N, K] contiguous on the device
    pt    the same codes in the pair-tile layout of mma_decode_kernel, int32 ``[N, tiles * SL]``
          (dsq_cuda.slab.to_pair_tiles; made at the first decode call, so prefill-only use never pays for it)
    wt    row tiles for gemv_kernel, int32 ``[tiles, N, SW]`` (dsq_cuda.slab.to_row_tiles; only if it runs), also
          read by mma_decode_kernel's int8 path (I8, SW = 16: W4A8_DYNAMIC's decode, instead of pair tiles)
    sl    the slab length SL of packed weights (dsq_cuda.slab.slab_length of the scale group)
    ws    weight_scale as float32 [N, G] / [N, 1] / [N/128, K/128]
    wz    zero points unpacked to int8 [N, G] (W4A16_ASYM)
    s2    integer group scales int8 [N, G] (W4A8_DYNAMIC)
    corr  int32 [N] = sum_k q[n, k] (W8A8 static: the activation zero point's contribution, for the epilogue)
"""

from __future__ import annotations

import torch

from dsq.qtypes import PackedWeight
from dsq.schemes import Granularity, QType, QuantScheme
from dsq_cuda import act_quant
from dsq_cuda._env import check_not_capturing
from dsq_cuda.slab import slab_length, to_pair_tiles, to_row_tiles, to_slabs
from dsq_cuda.unpack import unpack_zero_points


def kind_of(scheme: QuantScheme) -> str:
    """Config class: 'wonly', 'int8' or 'fp8', with the code bits appended for packed weights ('wonly4')."""
    base = "wonly" if scheme.weight_only else "fp8" if scheme.act_dtype is QType.FP8_E4M3 else "int8"
    packed = scheme.weight_only or scheme.weight_bits == 4
    return f"{base}{scheme.weight_bits}" if packed else base


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
    check_not_capturing("device layout")
    n, k = packed.shape[-2:]
    # packed codes stay where they are: each of their layouts is converted from them at its first use
    t = {name: v.to(device) for name, v in packed.tensors.items() if name != "weight_packed"}
    lay: dict = {"n": n, "k": k}
    if "weight_packed" in packed.tensors:
        # every layout of packed codes is made at its first use (slabs, pair tiles, row tiles), so a weight
        # only ever decoded holds pair tiles only
        lay["packed"] = packed.tensors["weight_packed"]
        lay["device"] = device
        # the backend supports groups that are multiples of 16 only (see backend.supports), so a slab fits
        lay["sl"] = slab_length(group_of(scheme))
    else:
        w = t["weight"].contiguous()
        lay["w"] = w.view(torch.uint8) if w.dtype == torch.float8_e4m3fn else w
    lay["ws"] = t["weight_scale"].float().contiguous()
    if "weight_zero_point" in t:
        lay["wz"] = unpack_zero_points(t["weight_zero_point"], n, scheme.weight_bits)
    if "weight_group_scale" in t:
        lay["s2"] = t["weight_group_scale"].to(torch.int8).contiguous()
    if scheme.static_activations:
        lay["corr"] = lay["w"].to(torch.int32).sum(dim=1, dtype=torch.int32).contiguous()
        lay["input_scale"], lay["input_zero_point"] = act_quant.static_params(packed, scheme, device)
    packed.device_layout[key] = lay
    return lay


def slabs(lay: dict, bits: int) -> torch.Tensor:
    """The slab-layout words of a packed weight (qmm_kernel, dequantize_t), made at their first use."""
    if "w" not in lay:
        check_not_capturing("slab layout")
        lay["w"] = to_slabs(lay["packed"].to(lay["device"]), lay["k"], bits, lay["sl"])
    return lay["w"]


def pair_tiles(lay: dict, bits: int) -> torch.Tensor:
    """The pair-tile words of a packed weight (mma_decode_kernel), made at their first use."""
    key = f"pt{lay['sl']}"
    if key not in lay:
        check_not_capturing("pair-tile layout")
        lay[key] = to_pair_tiles(lay["packed"].to(lay["device"]), lay["k"], bits, lay["sl"])
    return lay[key]


def row_tiles(lay: dict, bits: int, group: int, sw: int) -> torch.Tensor:
    """The row-tile words of a packed weight (gemv_kernel) for tile width ``sw``, made at their first use."""
    key = f"wt{sw}"
    if key not in lay:
        check_not_capturing("row-tile layout")
        lay[key] = to_row_tiles(lay["packed"].to(lay["device"]), lay["k"], bits, group, sw)
    return lay[key]
