#!/usr/bin/env bash
# One device call that checks and times everything the cuda backend has changed since its last GPU run.
#   bash benchmarks/cuda/gpu_session.sh            (from the repository root, on the GPU machine; $OUT set)
# Steps run in order under their own time limits, so a slow step cannot starve the ones after it; each
# writes its log under $OUT/logs (archived as one file at the end) and results under $OUT.
# Budget: at most 400 s of steps (the device's limit is 600 s a call; this session had 438 s left).
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
# 1. correctness of the new code on the GPU (tests/cuda ran on its own in the same session: 169 passed)
step pytest_moe 80 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_decode.py
# 2. dense decode timings with peers in one run
step bench_dense 170 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense --skip-correctness \
    --ms 1,16,64 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8"
# 3. conformance of matmul (the full suite took 310 s on the H200 on 2026-11-29: run it alone in a call of its
#    own, dsq conformance --backend cuda --report FILE)
step conformance 150 dsq conformance --backend cuda --op matmul --report "$OUT/cuda-h200-matmul.md"
tail -n 40 "$OUT/logs/bench_dense.log"; tail -n 5 "$OUT/logs/pytest_moe.log" "$OUT/logs/conformance.log"
# the device returns at most 8 files: the logs travel as one archive
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -r "$OUT/logs"
