"""Instruction mix of the M = 1 decode kernel (dsq_cuda.gemv_kernel), compiled for sm_90 without a GPU.

    python benchmarks/cuda/sass_ops.py          (from the repository root, with the cuda extra installed)

Triton compiles to PTX and runs its bundled ptxas for ``GPUTarget("cuda", 90, 32)`` on any machine, and its
bundled ``cuobjdump`` disassembles the cubin, so the SASS of a kernel can be read where no GPU exists. The
kernel's main loop handles one chunk per iteration, i.e. ``BLOCK_N * CH / (32 * num_warps)`` codes per
thread; this prints the static instruction count of the whole kernel over that number (an upper bound on the
loop's instructions per code: the prologue and epilogue are counted too) and the most frequent opcodes.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "backends"))

from dsq_cuda.gemv_kernel import gemv_kernel  # noqa: E402
from dsq_cuda.slab import row_tile_chunk  # noqa: E402

SIGNATURE = {"x_ptr": "*bf16", "w_ptr": "*i32", "ws_ptr": "*fp32", "wz_ptr": "*i8", "bias_ptr": "*fp32",
             "out_ptr": "*fp32", "ids_ptr": "*i32", "N": "i32", "K": "i32", "NG": "i32", "stride_xm": "i32",
             "stride_om": "i32", "stride_we": "i64", "stride_se": "i64", "e_lo": "i32", "e_hi": "i32"}


def sass_opcodes(bits: int, group: int, mant: bool, block_n: int = 128, sw: int = 16, warps: int = 4) -> list[str]:
    """Opcodes (without modifiers) of the kernel's SASS for sm_90, as the backend launches it at M = 1."""
    chunk = row_tile_chunk(bits, group, sw)
    consts = dict(G=group or (32 // bits) * sw, BITS=bits, ASYM=False, GROUP_SCALE=bool(group), HAS_BIAS=False,
                  SPLIT_K=32, BLOCK_N=block_n, SW=sw, CH=chunk, MOE=False, X_DIV=1, MANT=mant)
    sig = dict(SIGNATURE, **{name: "constexpr" for name in consts})
    src = ASTSource(fn=gemv_kernel, signature=sig, constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=3))
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    ops = []
    for line in sass.splitlines():
        m = re.match(r"\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m and m.group(1) not in ("NOP", "EXIT", "BRA"):
            ops.append(m.group(1))
    return ops


def main() -> int:
    print(f"triton {triton.__version__}, sm_90, BLOCK_N 128, SW 16, 4 warps")
    print("| scheme | decode | codes per thread per chunk | static instructions | per code | top opcodes |")
    print("|---|---|---|---|---|---|")
    for name, bits, group in (("W4A16 (group 128)", 4, 128), ("W8A16 (per channel)", 8, 0)):
        for mant in (False, True):
            ops = sass_opcodes(bits, group, mant)
            codes = 128 * row_tile_chunk(bits, group, 16) // (32 * 4)
            top = ", ".join(f"{op} {n}" for op, n in collections.Counter(ops).most_common(6))
            print(f"| {name} | {'MANT' if mant else 'default'} | {codes} | {len(ops)} | {len(ops) / codes:.1f} | {top} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
