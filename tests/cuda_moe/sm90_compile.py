"""Compile the fused MoE's tiled kernel (dsq_cuda.moe_kernels.moe_gemm_kernel) for sm_90 on a machine without a
GPU, with the prefill plan of each scheme named on the command line (both launches: gate_up and down).

    python tests/cuda_moe/sm90_compile.py W4A16 W4A8_DYNAMIC W8A16+PREFILL_INT8_BYTES=0 ...   (TRITON_INTERPRET unset)

``NAME+SWITCH``: the scheme with a switch of dsq_cuda.moe turned on (a path that is off by default), or off
with ``NAME+SWITCH=0``.

The interpreter runs a kernel as Python, so code that Triton cannot compile still passes there: a return after
a constexpr ``if`` that returned is compiled too and failed on the H200 with mismatched shapes (cuda-moe.md
v14). Prints one line per launch and exits 1 if any failed.
"""

from __future__ import annotations

import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import dsq_cuda.moe as moe_mod
from dsq.schemes import get_scheme
from dsq_cuda.moe_kernels import moe_gemm_kernel

POINTERS = {"a_ptr": "*bf16", "as_ptr": "*fp32", "st_s_ptr": "*fp32", "st_zp_ptr": "*i8", "w_ptr": "*u8",
            "ws_ptr": "*fp32", "zp_ptr": "*i32", "gs_ptr": "*i8", "sorted_ids_ptr": "*i32",
            "block_expert_ptr": "*i32", "tw_ptr": "*fp32", "out_ptr": "*bf16", "amax_ptr": "*fp32",
            "corr_ptr": "*i32"}


def compile_launch(scheme_name: str, gate_up: bool) -> None:
    """Compile one launch of the T = 4096 plan (the tiled path's shapes) as run_moe makes it."""
    up, down, cfg, extra = moe_mod.prefill_setup(get_scheme(scheme_name), torch.bfloat16, 4096, True,
                                                 torch.device("cuda"))
    sw = dict(up if gate_up else down)
    if not gate_up and sw["A_KIND"] == 2:  # quantized once before the down GEMM (PREFILL_QUANTIZE_ONCE)
        sw["A_KIND"] = 1
    consts = dict(sw, **extra, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, UNIQUE_LOAD=True, EVEN_K=True,
                  BLOCK_N=cfg.block_n_up if gate_up else cfg.block_n_down)
    names = [p.name for p in moe_gemm_kernel.params]
    consts = {k: v for k, v in consts.items() if k in names}
    signature = {}
    for p in moe_gemm_kernel.params:
        if p.name in consts:
            signature[p.name] = "constexpr"
        elif p.is_constexpr:  # left out: the kernel's default, as at run time
            signature[p.name] = "constexpr"
            consts[p.name] = p.default
        elif p.name in POINTERS:
            t = POINTERS[p.name]
            if p.name == "a_ptr" and sw["A_KIND"] in (1, 4):
                t = "*u8" if sw["A_FP8"] else "*i8"
            if p.name == "out_ptr" and not gate_up:
                t = "*fp32"
            signature[p.name] = t
        else:
            signature[p.name] = "fp32" if p.name == "tiny" else "i32"
    triton.compile(ASTSource(fn=moe_gemm_kernel, signature=signature, constexprs=consts),
                   target=GPUTarget("cuda", 90, 32), options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))


def main(names: list[str]) -> int:
    failed = 0
    for arg in names:
        name, *switches = arg.split("+")
        pairs = [(sw.partition("=")[0], sw.partition("=")[2] != "0") for sw in switches]  # SWITCH or SWITCH=0
        saved = {sw: getattr(moe_mod, sw) for sw, _ in pairs}  # a typo fails here, not silently
        for switch, value in pairs:
            setattr(moe_mod, switch, value)
        for gate_up in (True, False):
            launch = "gate_up" if gate_up else "down"
            try:
                compile_launch(name, gate_up)
                print(f"{arg} {launch}: compiled", flush=True)
            except Exception as exc:  # noqa: BLE001 - report every launch, then fail
                failed += 1
                print(f"{arg} {launch}: FAILED {' '.join(str(exc).split())[-600:]}", flush=True)
        for switch, value in saved.items():
            setattr(moe_mod, switch, value)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
