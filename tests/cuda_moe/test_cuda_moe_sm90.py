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
    # and the paths that are off by default
    plans = [*ALL_SCHEMES, "W8A16+PREFILL_INT8_BYTES=0", "W4A8_DYNAMIC+PREFILL_ROW_TILES=0"]
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_moe" / "sm90_compile.py"), *plans],
                          env=env, capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ": " in ln]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert len([ln for ln in lines if ln.endswith(": compiled")]) == 2 * len(plans), proc.stdout


#: the decode and one-token paths, with their switches, as the host code launches them (sm90_launches.py)
LAUNCH_CASES = ["moe:W4A16:1", "moe:W4A16:8", "moe:W4A8_DYNAMIC:8", "moe:W4AFP8:1", "moe:W4AFP8:8", "moe:W8A16:8",
                "moe:W8A16:1:moe_gemv.INT8_TILE_WORDS=16", "moe:W8A16:8:moe_gemv.INT8_TILE_WORDS=16",
                "moe:W4A16_ASYM:8", "moe:W8A8:1", "moe:W8A8:8", "moe:W4A8_DYNAMIC:1:moe_gemv.CANONICAL=True",
                "moe:W4A16:8:moe_decode.DEFAULTS.shared=0", "moe:W8A8_DYNAMIC:96", "moe:W4A8_DYNAMIC:96", "moe:W4A16:96",
                "moe:W8A16:96", "moe:W4AFP8:96", "moe:W4A8_DYNAMIC:96:moe.PREFILL_ROW_TILES=False",
                "moe:W4A16:96:moe.PREFILL_ROW_TILES=False", "moe:W8A16:96:moe.PREFILL_ROW_TILES=False",
                "mm:W4A16:1", "mm:W8A16:1", "moe:W4A16:8:moe_decode.DEFAULTS.int8_mma=2",
                "moe:W4AFP8:64:moe_decode.DEFAULTS.int8_mma=2", "moe:W4A8_DYNAMIC:64", "moe:W4A8_DYNAMIC:1",
                "moe:W4A8_DYNAMIC:1:moe_gemv.DP4A=False", "moe:W4A16:1:moe_gemv.DP4A_SLICES=False",
                "moe:W4AFP8:1:moe_gemv.DP4A=False",
                # programmatic dependent launch (dsq_cuda.pdl) and its L2 prefetch
                "moe:W4A8_DYNAMIC:1:pdl.ENABLED=True", "moe:W4A16:8:pdl.ENABLED=True", "moe:W4A16:1:pdl.ENABLED=True",
                "moe:W4A8_DYNAMIC:8:pdl.ENABLED=True", "moe:W8A8:1:pdl.ENABLED=True", "moe:W8A8:8:pdl.ENABLED=True",
                "moe:W8A8:1:pdl.ENABLED=False", "moe:W4A8_DYNAMIC:8:pdl.ENABLED=False",
                # deterministic mode: the GEMV's and the decode GEMM's split-K in slots
                "moe:W4A16:1:_env.DETERMINISTIC=True", "moe:W8A8:1:_env.DETERMINISTIC=True",
                "mm:W4A16:16:_env.DETERMINISTIC=True"]


def test_decode_kernels_compile_for_sm90_as_launched():
    # Every kernel of these paths, with the constexprs the host code passes: a constexpr assigned twice in an
    # unrolled loop (gemv_kernel's sub-tiles) compiled in the interpreter and failed on the H200 (cuda-moe.md v15).
    pytest.importorskip("triton")
    if os.environ.get("DSQ_MOE_TEST_DEVICE", "cpu") != "cpu":
        pytest.skip("the launches run on CPU tensors (a CPU CI check); on a GPU the decode tests launch the kernels")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "backends"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_moe" / "sm90_launches.py"), *LAUNCH_CASES],
                          env=env, capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ": " in ln]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for case in LAUNCH_CASES:
        kernels = {ln.split(" ")[1].rstrip(":") for ln in lines if ln.startswith(case + " ")}
        assert kernels, f"{case}: no kernel launched"
    assert any("gemv_kernel" in ln for ln in lines) and any("mma_decode_kernel" in ln for ln in lines)
