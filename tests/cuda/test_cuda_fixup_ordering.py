"""The decode kernel's split-K fixup, as compiled for sm_90: every load of the summed partials is done before
any of them is zeroed for the next call.

The H200 showed why this matters (docs/benchmarks/cuda.md v11): with a token count that is not a multiple of
16, Triton lays the fixup's loads and its zeroing stores out in different threads, and without a CTA barrier
between them a thread zeroed sums that another thread had not read yet (wrong outputs in 1-13 calls of 15-25).
A race does not show in the interpreter, so this reads the PTX instead. Triton compiles for sm_90 on a machine
without a GPU; the interpreter must be off for that, hence a subprocess.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
sys.path.insert(0, {bench!r})
import sass_ops
c = sass_ops.mma_compile(4, 128, stages=3, x_ahead=False, fixup=True, dot_fields={dot}, out="*bf16")
print("ORDERED" if sass_ops.fixup_reads_before_zeroing(c.asm["ptx"]) else "RACY")
"""


def _sass_ops():
    sys.path.insert(0, str(ROOT / "benchmarks" / "cuda"))
    try:
        import sass_ops
    finally:
        sys.path.pop(0)
    return sass_ops


@pytest.mark.parametrize("dot", [1, 4])
def test_fixup_loads_the_sums_before_zeroing_them(dot):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "backends"), str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run([sys.executable, "-c", SCRIPT.format(bench=str(ROOT / "benchmarks" / "cuda"), dot=dot)],
                         capture_output=True, text=True, env=env, timeout=600)
    if run.returncode and "ptxas" in run.stderr:  # pragma: no cover - a Triton build without its ptxas
        pytest.skip(f"cannot compile for sm_90 here: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "ORDERED"


def test_the_ordering_check_sees_a_missing_barrier():
    pytest.importorskip("triton")
    check = _sass_ops().fixup_reads_before_zeroing
    racy = "ld.global.cg.v4.b32 {%r1, %r2, %r3, %r4}, [%rd1];\n\tst.global.v4.b32 [%rd2], {%r9, %r9, %r9, %r9};"
    ordered = racy.replace("\n", "\n\tbar.sync \t0;\n", 1)
    assert not check(racy)
    assert check(ordered)
    assert not check("st.global.v4.b32 [%rd2], {%r9, %r9, %r9, %r9};")  # no fixup loads at all
