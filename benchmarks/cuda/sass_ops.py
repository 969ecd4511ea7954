"""Instruction mix of the decode kernels (dsq_cuda.gemv_kernel, dsq_cuda.mma_decode_kernel, also in MOE mode),
compiled for sm_90 without a GPU.

    python benchmarks/cuda/sass_ops.py          (from the repository root, with the cuda extra installed)

Triton compiles to PTX and runs its bundled ptxas for ``GPUTarget("cuda", 90, 32)`` on any machine, and its
bundled ``cuobjdump`` disassembles the cubin, so the SASS of a kernel can be read where no GPU exists. The
kernel's main loop handles one chunk per iteration, i.e. ``BLOCK_N * CH / (32 * num_warps)`` codes per
thread; this prints the static instruction count of the whole kernel over that number (an upper bound on the
loop's instructions per code: the prologue and epilogue are counted too) and the most frequent opcodes.
"""

from __future__ import annotations

import collections
import inspect
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
from dsq_cuda.mma_decode_kernel import mma_decode_kernel  # noqa: E402
from dsq_cuda.slab import gemv_chunk  # noqa: E402

SIGNATURE = {"x_ptr": "*bf16", "w_ptr": "*i32", "ws_ptr": "*fp32", "wz_ptr": "*i8", "bias_ptr": "*fp32",
             "out_ptr": "*fp32", "ids_ptr": "*i32", "xs_ptr": "*fp32", "wc_ptr": "*fp32", "N": "i32", "K": "i32",
             "KW": "i32", "NG": "i32", "stride_xm": "i32", "stride_om": "i32", "stride_wn": "i32", "stride_wt": "i32",
             "stride_we": "i64",
             "stride_se": "i64",
             "stride_ce": "i64", "e_lo": "i32", "e_hi": "i32"}


def sass_opcodes(bits: int, group: int, mant: bool, block_n: int = 128, sw: int = 16, warps: int = 4,
                 pairs: bool = False) -> list[str]:
    """Opcodes (without modifiers) of the kernel's SASS for sm_90, as the backend launches it at M = 1."""
    chunk = gemv_chunk(bits, group, sw)
    consts = dict(G=group or (32 // bits) * sw, BITS=bits, ASYM=False, GROUP_SCALE=bool(group), HAS_BIAS=False,
                  SPLIT_K=32, BLOCK_N=block_n, SW=sw, CH=chunk, MOE=False, X_DIV=1, MANT=mant, X_SCALE=0,
                  CHANNEL_SCALE=False, PAIRS=pairs, SIGNED=False, EVEN_W=True, SLW=sw)
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


MMA_SIGNATURE = {"x_ptr": "*bf16", "xs_ptr": "*fp32", "w_ptr": "*i32", "ws_ptr": "*fp32", "wc_ptr": "*fp32",
                 "wz_ptr": "*i8", "bias_ptr": "*fp32", "out_ptr": "*fp32", "M": "i32", "N": "i32", "K": "i32",
                 "KW": "i32", "NG": "i32", "stride_xm": "i32", "stride_om": "i32", "ids_ptr": "*i32",
                 "bexp_ptr": "*i32", "stride_we": "i64", "stride_se": "i64", "stride_ce": "i64"}
#: the arguments the runtime specialises as multiples of 16 on the benchmark shapes (pointers, N, K, strides):
#: without these hints Triton neither vectorises nor pipelines the x loads, and the counts mislead
MMA_DIVISIBLE = ("x_ptr", "xs_ptr", "w_ptr", "ws_ptr", "wc_ptr", "wz_ptr", "bias_ptr", "out_ptr", "N", "K", "KW",
                 "stride_xm", "stride_om")


def _compile(fn, signature, consts, attrs, warps, stages):
    # parameters left out take the kernel's own defaults (as constants), as at run time; ASTSource alone
    # would pass None for a constexpr and fail on a pointer
    consts = {**{p.name: p.default for p in fn.params if p.name not in consts and p.name not in signature
                 and p.default is not inspect.Parameter.empty}, **consts}
    sig = dict(signature, **{name: "constexpr" for name in consts})
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))


def _sass(compiled) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, check=True).stdout


def main_loop_opcodes(sass: str) -> list[str]:
    """Opcodes of the largest loop (the instructions between a backward branch and its target)."""
    ins = [(int(m.group(1), 16), m.group(2)) for m in
           (re.match(r"\s+/\*([0-9a-f]+)\*/\s+(.*?);", line) for line in sass.splitlines()) if m]
    best: list[str] = []
    for addr, text in ins:
        m = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            body = [t for a, t in ins if int(m.group(1), 16) <= a <= addr]
            best = body if len(body) > len(best) else best
    ops = [re.match(r"(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", t).group(1) for t in best]
    return [op for op in ops if op != "NOP"]


def gemv_moe_compile(pairs: bool, bits: int = 4, group: int = 128, block_n: int = 128, sw: int = 16,
                     dp4a: int = 0):
    """gemv_kernel compiled as dsq_cuda.moe_gemv launches it (MOE mode, split-K), with the runtime's multiple-of-16
    hints on pointers, N, K and strides. ``dp4a``: 1 for W4A8_DYNAMIC's integer path (int8 x as int32 words, s2,
    s1), 3 for W4A16 with x as int8 digit slices."""
    consts = dict(G=group, BITS=bits, ASYM=False, GROUP_SCALE=bool(group), HAS_BIAS=False, SPLIT_K=32,
                  BLOCK_N=block_n, SW=sw, CH=gemv_chunk(bits, group, sw), MOE=True, X_DIV=1, MANT=False,
                  X_SCALE=1 if dp4a else 0, CHANNEL_SCALE=dp4a == 1, PAIRS=pairs and not dp4a, SIGNED=False,
                  EVEN_W=True, SLW=sw, DP4A=dp4a)
    if dp4a:
        return _compile(gemv_kernel, dict(SIGNATURE, x_ptr="*i32"), consts, _gemv_attrs(), 4, 3)
    names = list(SIGNATURE)
    attrs = {(names.index(a),): [["tt.divisibility", 16]]
             for a in ("x_ptr", "w_ptr", "ws_ptr", "out_ptr", "N", "K", "KW", "stride_xm", "stride_om", "stride_wn",
                       "stride_wt")}
    return _compile(gemv_kernel, SIGNATURE, consts, attrs, 4, 3)


def _gemv_attrs() -> dict:
    names = list(SIGNATURE)
    return {(names.index(a),): [["tt.divisibility", 16]]
            for a in ("x_ptr", "w_ptr", "ws_ptr", "out_ptr", "N", "K", "KW", "stride_xm", "stride_om", "stride_wn",
                      "stride_wt")}


def mma_compile(bits: int, group: int, block_n: int = 64, warps: int = 4, stages: int = 2, block_m: int = 16,
                moe: bool = False, x_ahead: bool = True, fixup: bool = False, dot_fields: int = 1,
                out: str = "*fp32", i8: int = 0):
    """The tensor-core decode kernel compiled as the backend launches it (MOE mode with ``moe``; with
    ``fixup`` its split-K finish in the kernel, the dense default; ``out``: the output's pointer type; M is a
    plain integer, as for a token count that is not a multiple of 16). ``i8``: W4A8_DYNAMIC on the int8 tensor
    cores (the I8 path: int8 x, row tiles, integer s2 group scales and float s1 channel scales)."""
    epw = 32 // bits
    consts = dict(G=group or epw * 32, BITS=bits, ACT=0, ASYM=False, GROUP_SCALE=bool(group),
                  CHANNEL_SCALE=not group, HAS_BIAS=False, SPLIT_K=4, BLOCK_M=block_m, BLOCK_N=block_n, SL=32,
                  F16=False, ASM=True, EVEN_K=True, MOE=moe, X_DIV=8 if moe else 1, X_AHEAD=x_ahead, FIXUP=fixup,
                  DOT_FIELDS=dot_fields)
    signature = dict(MMA_SIGNATURE, out_ptr=out, **({"sum_ptr": "*fp32", "count_ptr": "*i32"} if fixup else {}))
    if i8:  # 1: W4A8_DYNAMIC (int8 x, integer s2, channel s1); 4: W4A16 with x as int8 slices (float scales)
        consts.update(ACT=1, CHANNEL_SCALE=i8 == 1, SL=16, ROW_TILES=True, I8=int(i8), X_AHEAD=False, DOT_FIELDS=1)
        signature.update(x_ptr="*i8", ws_ptr="*i8" if i8 == 1 else "*fp32")
    names = list(signature)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in MMA_DIVISIBLE + ("sum_ptr", "count_ptr")
             if a in names}
    return _compile(mma_decode_kernel, signature, consts, attrs, warps, stages)


def fixup_reads_before_zeroing(ptx: str) -> bool:
    """Whether the split-K fixup's loads of the summed partials (``ld.global.cg``) all come before a CTA barrier
    that precedes its first global store after them (the zeroing of the sums). Without the barrier, a thread
    can zero an element that another thread has not loaded yet when Triton lays the loads and the stores out
    differently (it does at M not a multiple of 16 with a bf16 output: cuda.md v11)."""
    lines = ptx.splitlines()
    loads = [i for i, line in enumerate(lines) if "ld.global.cg" in line]
    if not loads:
        return False
    after = lines[loads[-1] + 1:]
    first_store = next((i for i, line in enumerate(after) if "st.global" in line), len(after))
    return any("bar.sync" in line for line in after[:first_store])


def registers(compiled) -> int:
    """Registers per thread of a compiled kernel (cuobjdump's resource usage)."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"REG:(\d+)", out).group(1))


def mma_loop(bits: int, group: int, block_n: int = 64, warps: int = 4, stages: int = 2, block_m: int = 16,
             moe: bool = False, fixup: bool = False, x_ahead: bool = True,
             dot_fields: int = 1, i8: int = 0) -> tuple[list[str], int, int, int]:
    """Main-loop opcodes of the tensor-core decode kernel, the codes one thread decodes per iteration (one
    tile: BLOCK_N rows x 256 int4 / 128 int8 inputs; 128 int4 with ``i8``), the kernel's local-memory stores
    (register spills) and its registers per thread."""
    compiled = mma_compile(bits, group, block_n, warps, stages, block_m, moe, x_ahead=x_ahead, fixup=fixup,
                           dot_fields=dot_fields, i8=i8)
    sass = _sass(compiled)
    spills = len(re.findall(r"\bSTL(?:\.\w+)*\s", sass))
    inputs = 128 if i8 else 32 * (32 // bits)
    return main_loop_opcodes(sass), block_n * inputs // (32 * warps), spills, registers(compiled)


def main() -> int:
    print(f"triton {triton.__version__}, sm_90, BLOCK_N 128, SW 16, 4 warps")
    print("| scheme | decode | codes per thread per chunk | static instructions | per code | top opcodes |")
    print("|---|---|---|---|---|---|")
    for name, bits, group in (("W4A16 (group 128)", 4, 128), ("W8A16 (per channel)", 8, 0)):
        # decode variants: one field at a time, int4 fields in pairs (gemv_kernel.PAIR_DECODE, the default for
        # int4 since cuda-moe.md v14), codes in the mantissa (MANT)
        for label, mant, pairs in (("one field", False, False), ("pairs", False, True), ("MANT", True, False)):
            if pairs and bits != 4:
                continue
            ops = sass_opcodes(bits, group, mant, pairs=pairs)
            codes = 128 * gemv_chunk(bits, group, 16) // (32 * 4)
            top = ", ".join(f"{op} {n}" for op, n in collections.Counter(ops).most_common(6))
            print(f"| {name} | {label} | {codes} | {len(ops)} | {len(ops) / codes:.1f} | {top} |")
    print()
    print("The same kernel in MOE mode (dsq_cuda.moe_gemv, one token), W4A16 group 128: main loop")
    print("| decode | loop instructions per 128 codes | SHFL | top opcodes |")
    print("|---|---|---|---|")
    for label, pairs, dp4a in (("one field", False, 0), ("pairs (W4A16 with DP4A_SLICES off)", True, 0),
                               ("W4A8_DYNAMIC, dp4a (DP4A 1)", False, 1), ("x as int8 slices, dp4a (DP4A 3)", False, 3)):
        ops = main_loop_opcodes(_sass(gemv_moe_compile(pairs, dp4a=dp4a)))
        top = ", ".join(f"{op} {n}" for op, n in collections.Counter(ops).most_common(6))
        print(f"| {label} | {len(ops)} | {ops.count('SHFL')} | {top} |")
    print()
    print("Tensor-core decode kernel (dsq_cuda.mma_decode_kernel), M <= 16, BLOCK_N 64, 4 warps: main loop")
    print("| scheme | stages, x | codes per thread per tile | loop instructions | per code | registers | top opcodes |")
    print("|---|---|---|---|---|---|---|")
    for name, bits, group, fixup, stages, x_ahead, dot in (
            ("W4A16 (group 128), a group's 4 fields in one MMA chain (the default since v11)", 4, 128, True, 3, False, 4),
            ("W4A16 (group 128), one field a chain (v10)", 4, 128, True, 3, False, 1),
            ("W4A16 (group 128), split-K fixup (v9)", 4, 128, True, 2, True, 1),
            ("W8A16 (per channel), a tile's 4 fields in one chain (v11)", 8, 0, True, 3, False, 4),
            ("W4A8_DYNAMIC (group 128), int8 tensor cores (I8)", 4, 128, True, 3, False, 0)):
        ops, codes, _, regs = mma_loop(bits, group, stages=stages, fixup=fixup, x_ahead=x_ahead, dot_fields=dot,
                                       i8=dot == 0)
        top = ", ".join(f"{op} {n}" for op, n in collections.Counter(ops).most_common(6))
        how = f"{stages}, {'by hand' if x_ahead else 'pipelined'}"
        print(f"| {name} | {how} | {codes} | {len(ops)} | {len(ops) / codes:.2f} | {regs} | {top} |")
    print()
    print("The same kernel in MOE mode (dsq_cuda.moe_decode._launch_mma: 3 stages, x pipelined, a group's fields in one")
    print("chain), W4A16 group 128,")
    print("per decode_cfg mma_block_m")
    print("| mma_block_m | BLOCK_N, warps | loop instructions per code | spill stores |")
    print("|---|---|---|---|")
    for block_m in (16, 32, 64):
        block_n, warps = (128, 8) if block_m > 32 else (64, 4)  # as _launch_mma picks them
        ops, codes, spills, _ = mma_loop(4, 128, block_n, warps, 3, block_m=block_m, moe=True, x_ahead=False,
                                         dot_fields=4)
        print(f"| {block_m} | {block_n}, {warps} | {len(ops) / codes:.2f} | {spills} |")
    print()
    print("The copy groups the K loop waits for at its top (W4A16, BLOCK_N 64, 4 warps): at most N still in flight.")
    print("A tile issues 1 weight group and 8 x groups; the weight tile after the current one stays in flight only")
    print("if N counts all 9 of the next tile's groups.")
    print("| X_AHEAD | stages | wait at the loop top | shared memory |")
    print("|---|---|---|---|")
    for x_ahead in (True, False):
        for stages in (2, 3):
            compiled = mma_compile(4, 128, stages=stages, x_ahead=x_ahead, fixup=True)
            waits = re.findall(r"DEPBAR\.LE SB0, (0x[0-9a-f]+)", _sass(compiled))
            print(f"| {x_ahead} | {stages} | DEPBAR.LE {int(waits[0], 16) if waits else '-'} | "
                  f"{compiled.metadata.shared / 1024:.1f} KB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
