#!/usr/bin/env bash
# One device call that checks and times everything the cuda backend has changed since its last GPU run.
#   bash benchmarks/cuda/gpu_session.sh            (from the repository root, on the GPU machine; $OUT set)
# Steps run in order under their own time limits, so a slow step cannot starve the ones after it; each
# writes its log under $OUT/logs (archived as one file at the end) and results under $OUT.
# Budget: at most 535 s of steps (the device's limit is 600 s a call).
set -u
OUT=${OUT:-gpu-session}
mkdir -p "$OUT/logs"
ROOT=$(pwd)
export PYTHONPATH=$ROOT/backends:$ROOT/conformance:$ROOT:$ROOT/benchmarks/cuda_moe
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    echo "$name: rc $? in $((SECONDS - t0)) s"
}
# 1. correctness of the new code on the GPU
step pytest_cuda 120 python3 -m pytest -q tests/cuda
step pytest_moe 75 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_decode.py
# 2. dense decode timings with peers in one run
step bench_dense 80 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense --skip-correctness \
    --ms 1,16 --schemes W4A16,W4A8_DYNAMIC,W4AFP8"
# 3. MoE decode: the default path against a variant
step bench_moe 80 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
    --schemes W4A16,W4A8_DYNAMIC,W4AFP8 --variants '[{"target_programs": 4096}]' --out "$OUT/moe.json"
# 4. conformance of the ops this code touches (matmul + moe took over 180 s; the full suite took 310 s on the
#    H200 on 2026-11-29: run it alone in a call of its own, dsq conformance --backend cuda --report FILE)
step conformance 180 dsq conformance --backend cuda --op matmul --op moe --report "$OUT/cuda-h200.md"
tail -n 30 "$OUT/logs/bench_dense.log" "$OUT/logs/bench_moe.log"
# the device returns at most 8 files: the logs travel as one archive
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -r "$OUT/logs"
