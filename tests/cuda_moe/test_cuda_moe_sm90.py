"""The tiled MoE kernel compiles for sm_90 with every scheme's prefill plan (tests/cuda_moe/sm90_compile.py).

The interpreter does not compile kernels, so a kernel can pass every interpreter test and still fail to build
on a GPU. Triton compiles for sm_90 on a machine without one; the interpreter must be off for that, hence a
subprocess.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from moe_cases import ALL_SCHEMES

ROOT = Path(__file__).resolve().parents[2]


def test_tiled_kernel_compiles_for_sm90_with_every_prefill_plan():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends"), env.get("PYTHONPATH", "")])
    plans = [*ALL_SCHEMES, "W8A16+PREFILL_INT8_BYTES"]  # and the paths that are off by default
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_moe" / "sm90_compile.py"), *plans],
                          env=env, capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ": " in ln]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert len([ln for ln in lines if ln.endswith(": compiled")]) == 2 * len(plans), proc.stdout
