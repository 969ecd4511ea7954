"""W4A8_DYNAMIC's int8 tensor-core decode (dsq_cuda.int4_int8_mma), as compiled for sm_90: the int4 -> int8 decode
is register renaming plus three integer instructions per word, with no byte shuffles (PRMT) and no trip through
shared memory, and the split-K fixup keeps its barrier.

The interpreter cannot show either (it runs the plain-op decode, not the inline PTX), so this compiles the
kernel for sm_90 in a subprocess (the interpreter must be off) and reads its SASS and PTX.
"""

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import collections, sys
sys.path.insert(0, {bench!r})
import sass_ops
c = sass_ops.mma_compile(4, 128, stages=3, x_ahead=False, fixup=True, out="*bf16", i8=True)
loop = sass_ops.main_loop_opcodes(sass_ops._sass(c))
print("ORDERED" if sass_ops.fixup_reads_before_zeroing(c.asm["ptx"]) else "RACY")
print(" ".join(loop))
"""


def test_int8_decode_loop_compiles_to_integer_mmas_without_shuffles():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "backends"), str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    run = subprocess.run([sys.executable, "-c", SCRIPT.format(bench=str(ROOT / "benchmarks" / "cuda"))],
                         capture_output=True, text=True, env=env, timeout=600)
    if run.returncode and "ptxas" in run.stderr:  # pragma: no cover - a Triton build without its ptxas
        pytest.skip(f"cannot compile for sm_90 here: {run.stderr[-300:]}")
    assert run.returncode == 0, run.stderr[-2000:]
    ordered, loop = run.stdout.strip().splitlines()[-2:]
    assert ordered == "ORDERED"
    ops = collections.Counter(loop.split())
    # a 128-input tile of 64 rows: 4 int8 MMAs of depth 32, fed from registers
    assert ops["IGMMA"] == 4 and ops["HGMMA"] == 0
    # 8 words a thread: one shift and two lop3 each decode them (the s2 group scales' sign extension may add
    # a PRMT per row); a layout shuffle would add tens of PRMT, or STS / LDS through shared memory
    assert ops["LOP3"] >= 16 and ops["PRMT"] <= 4 and ops["STS"] == 0
    assert sum(ops.values()) < 200
