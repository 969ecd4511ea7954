"""Device memory of the fused MoE's experts: what they hold after ``Backend.prepare``, and freeing the
canonical codes once no path reads them.

After ``prepare`` the experts hold their canonical tensors (the checkpoint's codes and scales: the tiled prefill
path reads the codes only with moe.PREFILL_ROW_TILES off) and one device layout of the codes, the row tiles that
the one-token GEMV, the decode kernels and (moe.PREFILL_ROW_TILES, the default since cuda-moe.md v16) the
prefill kernels share: about 2x the canonical bytes for packed schemes. :func:`release_canonical` then moves
the canonical codes off the device: about 1x. ``benchmarks/cuda_moe/memory.py`` prints the table per scheme
(docs/benchmarks/cuda-moe.md v15).
"""

from __future__ import annotations

import torch

from dsq.errors import UnsupportedError
from dsq.qtypes import ExpertWeights, weight_tensor_name
from dsq.schemes import QuantScheme
from dsq_cuda import moe, moe_gemv
from dsq_cuda.moe_decode import shares_row_tiles


def device_bytes(experts: ExpertWeights) -> dict[str, int]:
    """Bytes the experts' tensors hold on their device: ``canonical`` (the packed tensors: the checkpoint's
    codes, scales, zero points) and ``layouts`` (what moe.prepare_all added: device copies of the codes in
    another layout, unpacked scales), each storage counted once, so a layout that is a view of a canonical tensor adds
    nothing (and tensors on the meta device, which hold no data, count 0). For sizing a deployment: the codes
    dominate both."""
    seen: set[int] = set()

    def total(values) -> int:
        n = 0
        for v in values:
            if isinstance(v, dict):
                n += total(v.values())
            elif isinstance(v, torch.Tensor) and not v.is_meta and v.untyped_storage().data_ptr() not in seen:
                seen.add(v.untyped_storage().data_ptr())
                n += v.untyped_storage().nbytes()
        return n

    canonical = sum(total(p.tensors.values()) for p in (experts.gate_up, experts.down))
    layouts = sum(total(p.device_layout.values()) for p in (experts.gate_up, experts.down))
    return {"canonical": canonical, "layouts": layouts}


def release_canonical(experts: ExpertWeights, scheme: QuantScheme, to: torch.device | str = "cpu") -> int:
    """Move the experts' canonical codes off the device once every path reads the row tiles instead; returns
    the bytes moved. Call after ``Backend.prepare`` (it builds the row tiles from those codes).

    With the defaults (moe.PREFILL_ROW_TILES, moe_decode DEFAULTS shared, moe.PREFILL_INT8_BYTES) the one-token
    GEMV, the decode kernels and the prefill kernels of W4A16, W4A8_DYNAMIC, W4AFP8 and W8A16 all read the row tiles, so the device then holds
    about 1x the canonical bytes instead of 2x (cuda-moe.md v15, "Device memory"). The scales stay. The codes
    stay readable where they went (checkpoints, conformance). Raises UnsupportedError naming the path that
    still reads the canonical codes for other schemes or settings.
    """
    name = weight_tensor_name(scheme)
    device = experts.gate_up[name].device
    if not shares_row_tiles(scheme):
        raise UnsupportedError(f"{scheme.name}: the decode kernels read the experts' own layout, not the row tiles "
                               "(moe_decode DEFAULTS shared, moe_gemv.CANONICAL): the canonical codes must stay")
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for t in (moe.DECODE_MAX_T + 1, 4096):
            if not moe.prefill_setup(scheme, dtype, t, True, torch.device(device))[3]["RT"]:
                raise UnsupportedError(f"{scheme.name}: the tiled path reads the canonical codes ({dtype}, {t} "
                                       "tokens; dsq_cuda.moe.PREFILL_ROW_TILES is off): they must stay on the "
                                       "device")
    moved = 0
    for p in (experts.gate_up, experts.down):
        moe_gemv.prepare(p, scheme, device)  # (built by prepare_all: a no-op then)
        codes = p.tensors[name]
        if codes.device != torch.device(to):
            moved += codes.untyped_storage().nbytes()
            p.tensors[name] = codes.to(to)
    return moved
