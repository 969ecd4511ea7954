"""Compile, for sm_90 on a machine without a GPU, every Triton kernel a code path launches, exactly as launched.

    python tests/cuda_moe/sm90_launches.py moe:W4A16:8 moe:W8A16:1:moe_gemv.INT8_TILE_WORDS=32 mm:W4A16:1 ...
                                                                                    (TRITON_INTERPRET unset)

``moe:SCHEME:T`` runs the fused MoE layer (dsq_cuda.moe.run_moe, the default path for T tokens) and ``mm:SCHEME:M``
the linear kernel (dsq_cuda.mm.matmul) on small CPU tensors (after ``:module.NAME=VALUE`` switches of dsq_cuda
modules, or ``:module.DICT.KEY=VALUE`` entries, if any), with ``JITFunction.run`` replaced by a recorder:
nothing executes, each launch's arguments are kept, then every distinct launch is compiled with Triton's
ahead-of-time API (pointer types from the tensors' dtypes, constexprs as passed). The interpreter runs kernels as
Python, so code that cannot compile passes there (a constexpr assigned twice in an unrolled loop, a return after
a constexpr ``if``): this catches it in CPU CI. Shapes and configs are the CPU ones (dsq_cuda.configs picks
small blocks off the GPU); the kernel code paths are the GPU's (inline PTX on, ASM = True).
Prints one line per kernel and exits 1 if any failed.
"""

from __future__ import annotations

import re
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

POINTER = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.int32: "*i32",
           torch.int64: "*i64", torch.int8: "*i8", torch.uint8: "*u8", torch.float8_e4m3fn: "*fp8e4nv"}


def record(fn) -> list[tuple]:
    """(kernel, {param: value}, options) of every launch ``fn()`` makes; the kernels do not run."""
    launches = []

    def fake_run(self, *args, grid, warmup, **kwargs):
        names = [p.name for p in self.params]
        bound = dict(zip(names, args))
        options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound.update(kwargs)
        launches.append((self, bound, options))

    saved = JITFunction.run
    JITFunction.run = fake_run
    try:
        fn()
    finally:
        JITFunction.run = saved
    return launches


def compile_launch(kernel, bound: dict, options: dict) -> None:
    signature, consts = {}, {}
    for p in kernel.params:
        v = bound.get(p.name, p.default)
        if p.is_constexpr or v is None:
            signature[p.name] = "constexpr"
            consts[p.name] = v
        elif isinstance(v, torch.Tensor):
            signature[p.name] = POINTER[v.dtype]
        elif isinstance(v, bool):
            signature[p.name] = "i1"
        elif isinstance(v, int):
            signature[p.name] = "i64" if abs(v) >= 2**31 else "i32"
        else:
            signature[p.name] = "fp32"
    triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                   options=dict(num_warps=options.get("num_warps", 4), num_stages=options.get("num_stages", 3)))


def _moe_case(scheme_name: str, t: int):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from moe_cases import make_experts

    from dsq_cuda.moe import run_moe

    e, h, i = 4, 512, 256
    scheme, _, dev = make_experts(scheme_name, e, h, i, seed=1)
    x = torch.randn(t, h).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(e)[:2] for _ in range(t)])
    return lambda: run_moe(x, ids, torch.rand(t, 2), dev.gate_up, dev.down, scheme, e)


def _mm_case(scheme_name: str, m: int):
    import dsq
    from dsq_cuda.mm import matmul

    scheme = dsq.get_scheme(scheme_name)
    pw = dsq.get_backend("cpu-reference").quantize_weight(torch.randn(384, 1024) * 0.05, scheme)
    x = torch.randn(m, 1024).to(torch.bfloat16)
    return lambda: matmul(x, pw, scheme)


def main(cases: list[str]) -> int:
    import ast
    import importlib

    failed = 0
    for case in cases:
        kind, scheme_name, n, *switches = re.split(r":(?![^{]*})", case)  # (a dict value keeps its colons)
        saved = []
        for sw in switches:  # module.NAME=VALUE of a dsq_cuda module, or module.DICT.KEY=VALUE
            path, value = sw.split("=")
            mod_name, attr, *key = path.split(".")
            mod = importlib.import_module(f"dsq_cuda.{mod_name}")
            target, name = (getattr(mod, attr), key[0]) if key else (mod, attr)
            if isinstance(target, dict):
                saved.append((target, name, target[name], True))
                target[name] = ast.literal_eval(value)
            else:
                saved.append((target, name, getattr(target, name), False))
                setattr(target, name, ast.literal_eval(value))
        fn = (_moe_case if kind == "moe" else _mm_case)(scheme_name, int(n))
        seen = set()
        launches = record(fn)
        for target, name, value, is_dict in saved:
            if is_dict:
                target[name] = value
            else:
                setattr(target, name, value)
        for kernel, bound, options in launches:
            key = (kernel.__name__, tuple(sorted((k, v) for k, v in bound.items() if not isinstance(v, torch.Tensor)
                                                 and any(p.name == k and p.is_constexpr for p in kernel.params))))
            if key in seen:
                continue
            seen.add(key)
            try:
                compile_launch(kernel, bound, options)
                print(f"{case} {kernel.__name__}: compiled", flush=True)
            except Exception as exc:  # noqa: BLE001 - report every launch, then fail
                failed += 1
                print(f"{case} {kernel.__name__}: FAILED {' '.join(str(exc).split())[-600:]}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
