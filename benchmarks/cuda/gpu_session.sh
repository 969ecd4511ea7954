#!/usr/bin/env bash
# One device call that checks and times what the cuda backend has changed since its last GPU run.
#   bash benchmarks/cuda/gpu_session.sh                       (from the repository root, on the GPU machine; $OUT set)
#   STEPS="pytest_cuda lab_x_ahead bench_dense" bash benchmarks/cuda/gpu_session.sh     (a chosen list of steps)
# Steps run in order under their own time limits, so a slow step cannot starve the ones after it; each
# writes its log under $OUT/logs (archived as one file at the end) and results under $OUT. The device's limit
# is 600 s a call: pick steps whose limits add up to less. The default list re-checks the decode chain on the GPU
# (programmatic dependent launch, the L2 prefetch, the fused SwiGLU; cuda-moe.md v18-v19), MoE conformance, and the
# issue's whole MoE table with each L2 flush.
# v17's timings: pytest_align 14 s, bench_align 20 s, profile_moe 20 s, read_roofline 19 s, bench_moe_v17 49 s,
# bench_moe_v17_clean 26 s, dense_dirty / dense_clean about 60 s each, conformance_moe 126 s, pytest_moe_all 277 s.
set -u
OUT=${OUT:-gpu-session}
STEPS=${STEPS:-pytest_moe_chain conformance_moe bench_moe_v19 bench_moe_v19_clean}
mkdir -p "$OUT/logs"
ROOT=$(pwd)
export PYTHONPATH=$ROOT/backends:$ROOT/conformance:$ROOT:$ROOT/benchmarks/cuda_moe
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    echo "$name: rc $? in $((SECONDS - t0)) s"
    tail -n 25 "$OUT/logs/$name.log"
}
LAB="python3 benchmarks/cuda/mma_decode_lab.py --no-check --bn-warps 64:4 --splits 4,8,16 --sls 32 --ms 1,16 \
    --shapes 7168x18432,18432x7168,7168x2048,2048x7168"
for s in $STEPS; do
    case $s in
    # v19 / stop 26: the final code, checked and timed for the closing notes of issues 5 and 6. Call 1:
    # conformance_full pytest_cuda; call 2: pytest_moe bench_final19 bench_moe_final19
    conformance_full) step conformance_full 400 dsq conformance --backend cuda --report "$OUT/cuda-h200.md" ;;
    bench_final19) step bench_final19 260 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/final19 \
        --skip-correctness --ms 1,4,16,64,128,256,1024,4096" ;;
    bench_moe_final19) step bench_moe_final19 240 python3 benchmarks/cuda_moe/bench_moe.py --out "$OUT/moe_final19.json" ;;
    # v19 (dense) lab: dequantize + cuBLAS with the weight in N chunks, dequantize beside the GEMM on a side stream.
    # (v19's other lab, int4's code offset skipped in the decode, used a kernel switch of commit 7cf2b23, since removed)
    overlap_lab) step overlap_lab 240 python3 benchmarks/cuda/overlap_lab.py --out "$OUT/overlap" ;;
    # correctness on the GPU (tests/cuda: about 95 s on the H200; the MoE decode tests about 60 s)
    pytest_cuda) step pytest_cuda 280 python3 -m pytest -q tests/cuda ;;
    pytest_moe) step pytest_moe 150 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_decode.py ;;
    # the decode kernel's split and stages with x left to the pipeliner (the default since cuda.md v10)
    lab_decode) step lab_decode 150 $LAB --bits 4 --modes fixup --splits 2,4,8,16 --stages 3,4 --x-ahead 0 \
        --out "$OUT/lab_decode" ;;
    # v10's first question, in one run: x left to the pipeliner (0) or loaded ahead by hand (1), at 2 / 3 stages
    lab_x_ahead) step lab_x_ahead 150 $LAB --bits 4 --modes fixup --splits 2,4,8,16 --stages 2,3 --x-ahead 1,0 \
        --out "$OUT/lab" ;;
    # the decode kernel at M = 64 (below the 0.9x floor in v9): split-K fixup against stream-K, BLOCK_N 64/128
    lab_m64) step lab_m64 120 python3 benchmarks/cuda/mma_decode_lab.py --no-check --bits 4 --ms 64 --sls 32 \
        --shapes 7168x18432,18432x7168,7168x2048,2048x7168 --bn-warps 128:8,64:4 --splits 1,2,4 --stages 3,4 \
        --x-ahead 0 --modes fixup,stream --per-sm 1,2 --out "$OUT/lab_m64" ;;
    # dense decode timings with peers in one run (about 100 s), with v9's decode settings as variants
    # (run_gpu.py --variant): 2 stages, x loaded ahead by hand, split-K for about 8 programs per SM, no stream-K
    # above M = 16 (W4A16, W4A8); W8A16 on the GEMV / tiled kernels
    bench_dense) step bench_dense 230 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense \
        --skip-correctness --ms 1,16,64 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 \
        --variant 'v9:W4A16+W4A8_DYNAMIC:mm.MMA_X_AHEAD=True,configs.MMA_DECODE_STAGES=2,configs.MMA_PROGRAMS_PER_SM=8,configs.MMA_WIDE_STREAM_MIN_TILES=1000000000' \
        --variant 'v9:W8A16:mm.MMA_MAX_M={4: 64, 8: 0}'" ;;
    # the MoE layer at decode T against v9's settings of the experts' kernel (about 60 s)
    bench_moe) step bench_moe 130 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8 --variants '[{"mma_stages": 2, "mma_x_ahead": 1}]' --out "$OUT/moe.json" ;;
    # v10's second call: M = 64 at 2 stages (2 programs per SM fit), and untried dispatch: W8A16 through the
    # decode kernel, and the decode kernel on shallow weights (K 512 / 1536)
    lab_m64b) step lab_m64b 100 python3 benchmarks/cuda/mma_decode_lab.py --no-check --bits 4 --ms 64 --sls 32 \
        --shapes 7168x18432,2048x7168,7168x2048 --bn-warps 128:8,64:4 --splits 1,2,4 --stages 2,3 \
        --x-ahead 0 --modes fixup,stream --per-sm 1,2 --out "$OUT/lab_m64b" ;;
    bench_dispatch) step bench_dispatch 150 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dispatch \
        --skip-correctness --ms 1,16,64 --schemes W4A16,W8A16,W4A8_DYNAMIC \
        --variant 'w8mma:W8A16:mm.MMA_MAX_M={4: 64, 8: 64}' \
        --variant 'shallow:W4A16+W4A8_DYNAMIC:mm.MMA_MIN_K=512,mm.MMA_WIDE_MIN_K=512'" ;;
    # counters of the default decode kernel (W4A16 7168x18432, M = 1): per-instruction stalls (read them with
    # benchmarks/cuda/ncu_stalls.py) and speed of light / occupancy / scheduler
    ncu) NCU="ncu --clock-control none --kernel-name regex:mma_decode --launch-skip 2 --launch-count 1"
        PROF="python3 benchmarks/cuda/profile_decode.py --shape 7168x18432 --m 1 --scheme W4A16"
        step ncu_source 150 bash -c "$NCU --section SourceCounters --section WarpStateStats --page source \
            --print-source sass --csv $PROF > $OUT/ncu_source.csv && gzip $OUT/ncu_source.csv"
        step ncu_sol 120 bash -c "$NCU --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
            --section Occupancy --section MemoryWorkloadAnalysis $PROF > $OUT/ncu_sol.txt" ;;
    # conformance of matmul (about 110 s; the full suite took 310 s: run it alone in a call of its own,
    # dsq conformance --backend cuda --report FILE)
    conformance) step conformance 150 dsq conformance --backend cuda --op matmul --report "$OUT/cuda-h200-matmul.md" ;;
    conformance_moe) step conformance_moe 200 dsq conformance --backend cuda --op moe --report "$OUT/cuda-h200-moe.md" ;;
    # v11: a run of fields of one scale group in one MMA chain (DOT_FIELDS 4) against one field per chain
    lab_chain) step lab_chain 240 $LAB --bits 4,8 --modes fixup --splits 2,4,8 --stages 3 --x-ahead 0 \
        --dot-fields 1,4 --bn-warps 64:4,128:4 --out "$OUT/lab_chain" ;;
    lab_chain64) step lab_chain64 120 python3 benchmarks/cuda/mma_decode_lab.py --no-check --bits 4 --ms 64 --sls 32 \
        --shapes 7168x18432,18432x7168,7168x2048,2048x7168 --bn-warps 128:8 --splits 2,4 --stages 3 \
        --x-ahead 0 --dot-fields 1,4 --modes fixup,stream --per-sm 1 --out "$OUT/lab_chain64" ;;
    pytest_chain) step pytest_chain 100 python3 -m pytest -q tests/cuda/test_cuda_matmul.py -k \
        "chained or x_left or split_modes or matches_reference" ;;
    # the final kernel at token counts that are not multiples of 16 (where the fixup's read-back went wrong)
    race_check) step race_check 120 python3 benchmarks/cuda/mma_decode_lab.py --no-check --bn-warps 64:4 --splits 1,2,4,8 \
        --sls 32 --ms 2,3,5,7,12 --shapes 7168x18432,18432x7168 --bits 4,8 --modes fixup --stages 3 --x-ahead 0 \
        --dot-fields 4 --stress 10 --out "$OUT/race_check" ;;
    bench_v11) step bench_v11 280 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense \
        --skip-correctness --ms 1,4,16,64 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 \
        --variant 'one:W4A16+W8A16+W4A8_DYNAMIC:mm.MMA_DOT_FIELDS=1'" ;;
    # the MoE layer at decode T with chained fields (the default since v11) against one field per chain
    bench_moe_chain) step bench_moe_chain 130 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8 --variants '[{"mma_dot_fields": 1}]' --out "$OUT/moe.json" ;;
    # the GPU-only race test of the split-K fixup (written in v11 after the device time was spent)
    race_test) step race_test 60 python3 -m pytest -q tests/cuda -k fixup_repeats ;;
    # prefill: cuBLAS's block-scaled FP8 GEMM for FP8_BLOCK / W4AFP8 against bf16, and every scheme at M >= 256
    probe_prefill) step probe_prefill 150 python3 benchmarks/cuda/prefill_probe.py --out "$OUT/probe" ;;
    bench_prefill) step bench_prefill 300 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/prefill \
        --skip-correctness --ms 256,4096" ;;
    # v12: the expanded int4 paths and cuBLAS block-scaled FP8 against the paths they replace, decode to prefill
    pytest_prefill) step pytest_prefill 150 python3 -m pytest -q tests/cuda/test_cuda_prefill.py tests/cuda/test_cuda_matmul.py ;;
    bench_v12) step bench_v12 330 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/v12 \
        --skip-correctness --ms 16,64,256,1024,4096 --schemes W4A8_DYNAMIC,W4AFP8,FP8_BLOCK \
        --variant 'packed:W4A8_DYNAMIC+W4AFP8:mm.EXPAND_MIN_M=1000000000' \
        --variant 'triton:W4AFP8+FP8_BLOCK:mm.CUBLAS_BLOCK_FP8=False' --variant 'blk17:FP8_BLOCK:mm.BLOCK_FP8_MIN_M=17'" ;;
    expand_time) step expand_time 60 python3 benchmarks/cuda/prefill_probe.py --expand-only --out "$OUT/expand" ;;
    pytest_block) step pytest_block 60 python3 -m pytest -q tests/cuda/test_cuda_prefill.py ;;
    bench_v12b) step bench_v12b 250 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/v12b \
        --skip-correctness --ms 16,64,256,1024,4096 --schemes W4AFP8,FP8_BLOCK \
        --variant 'triton:W4AFP8+FP8_BLOCK:mm.CUBLAS_BLOCK_FP8=False' --variant 'blk17:FP8_BLOCK:mm.BLOCK_FP8_MIN_M=17'" ;;
    pytest_v12) step pytest_v12 90 python3 -m pytest -q tests/cuda/test_cuda_prefill.py tests/cuda/test_cuda_quant_exact.py ;;
    # v12: the MoE prefill with activations quantized once per row (moe_requant) against on load
    pytest_moe_prefill) step pytest_moe_prefill 80 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py -k prefill ;;
    bench_moe_prefill) step bench_moe_prefill 230 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W8A8,W4A8_DYNAMIC,W8A8_DYNAMIC --on-load --out "$OUT/moe_prefill.json" ;;
    # v13: static zero point in the epilogue, W4A8 int4 fields split against reordered codes (+ PTX decode)
    pytest_moe_v13) step pytest_moe_v13 150 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py ;;
    bench_moe_v13) step bench_moe_v13 300 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W8A8,W4A8_DYNAMIC --out "$OUT/moe_v13.json" \
        --prefill-variants '[{"PREFILL_ZP_EPILOGUE":false,"PREFILL_INT4_SPLIT":false},{"INT4_UNPACK_ASM":false}]' ;;
    bench_moe_v13b) step bench_moe_v13b 300 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W8A8,W4A8_DYNAMIC,W8A8_DYNAMIC --out "$OUT/moe_v13b.json" \
        --prefill-variants '[{"PREFILL_BLOCKS":{"block_m":128}},{"PREFILL_BLOCKS":{"block_n_up":128,"num_warps":8}}]' ;;
    pytest_moe_v13d) step pytest_moe_v13d 150 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py -k "same_bits or int4_halves or prefill_path" ;;
    bench_moe_v13d) step bench_moe_v13d 300 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W4A8_DYNAMIC --out "$OUT/moe_v13d.json" --prefill-variants '[{"INT4_SWAP_AB":true},
        {"INT4_SWAP_AB":true,"PREFILL_BLOCKS":{"block_m":128}},{"INT4_SWAP_AB":true,"PREFILL_BLOCKS":{"num_stages":3}}]' ;;
    bench_moe_v13e) step bench_moe_v13e 300 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W4A8_DYNAMIC --out "$OUT/moe_v13e.json" --prefill-variants '[{"INT4_SWAP_AB":true,
        "PREFILL_BLOCKS":{"num_stages":3}},{"INT4_SWAP_AB":true,"PREFILL_BLOCKS":{"num_stages":2}},
        {"INT4_SWAP_AB":true,"PREFILL_BLOCKS":{"num_stages":3,"block_n_down":64}},
        {"INT4_SWAP_AB":true,"PREFILL_BLOCKS":{"num_stages":3,"block_n_up":128,"num_warps":8}},
        {"INT4_SWAP_AB":true,"PREFILL_BLOCKS":{"num_stages":3,"block_m":32}}]' ;;
    # v13: the defaults against each replaced path, in one run (results-h200-v13g-final.json ran at commit
    # 27eda2a with a third variant, {"INT4_S2_IN_CODES":false}, of a path since removed)
    bench_moe_v13g) step bench_moe_v13g 300 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W8A8,W4A8_DYNAMIC,W8A8_DYNAMIC --out "$OUT/moe_v13g.json" \
        --prefill-variants '[{"PREFILL_INT4_SPLIT":false,"PREFILL_ZP_EPILOGUE":false},{"INT4_SWAP_AB":false}]' ;;
    # v13h: the byte loads fill masked lanes with 0 again (0x88 in v13g)
    bench_moe_v13h) step bench_moe_v13h 120 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W4A8_DYNAMIC --out "$OUT/moe_v13h.json" --prefill-variants '[{"INT4_SWAP_AB":false}]' ;;
    pytest_moe_v13h) step pytest_moe_v13h 100 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py -k "same_bits and W4A8" ;;
    # v14: static W8A8 decode reads codes quantized once per position; the slab kernel at 32-pair blocks
    pytest_moe_v14) step pytest_moe_v14 120 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py ;;
    bench_moe_v14) step bench_moe_v14 300 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8,64 --no-loop \
        --schemes W8A8,W8A16,W8A8_DYNAMIC,FP8_BLOCK --out "$OUT/moe_v14.json" \
        --variants '[{"static_codes":0},{"block_m":32}]' ;;
    # v14: one token through the GEMV for quantized-activation schemes, against the decode path they took before
    bench_moe_v14b) step bench_moe_v14b 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --schemes W8A8,W8A8_DYNAMIC,W4A8_DYNAMIC,W4AFP8,W4A16,W8A16 --out "$OUT/moe_v14b.json" \
        --switch-variants '[{"moe_gemv.QUANTIZED_ACTS":false}]' ;;
    # v14: one token, the GEMV against the decode path (pair tiles for int4) at the final code
    bench_moe_v14c) step bench_moe_v14c 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --schemes W8A8,W4A16,W4A8_DYNAMIC,W4AFP8 --out "$OUT/moe_v14c.json" \
        --switch-variants '[{"moe_gemv.GEMV_MAX_T":0}]' ;;
    # v14: the 8-bit schemes' decode launch settings (more programs, wider N tiles)
    bench_moe_v14d) step bench_moe_v14d 250 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W8A8,W8A16 --out "$OUT/moe_v14d.json" \
        --variants '[{"target_programs":4096},{"block_n":128,"num_warps":8},{"block_n":32},{"num_stages":6}]' ;;
    # v14: W8A16's experts on the tensor-core decode kernel (decode_cfg mma8)
    pytest_moe_v14e) step pytest_moe_v14e 100 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py -k "mma or gemv or static" ;;
    bench_moe_v14e) step bench_moe_v14e 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W8A16 --out "$OUT/moe_v14e.json" --variants '[{"mma8":1},{"mma8":1,"mma_block_m":32}]' ;;
    # v14: one token on the tensor-core decode kernel with more split-K programs, against the GEMV
    bench_moe_v14f) step bench_moe_v14f 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC --out "$OUT/moe_v14f.json" --variants '[{"path":"decode"},
        {"path":"decode","target_programs":4096},{"path":"decode","target_programs":16384}]' ;;
    # v14: the GEMV's int4 fields two at a time and its group sums kept per lane
    pytest_gemv_v14) step pytest_gemv_v14 150 bash -c "python3 -m pytest -q tests/cuda/test_cuda_matmul.py \
        -k 'gemv or weight_only or small_group' && DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py -k 'gemv or static'" ;;
    bench_moe_v14g) step bench_moe_v14g 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8,W8A8,W8A16 --out "$OUT/moe_v14g.json" \
        --switch-variants '[{"gemv_kernel.PAIR_DECODE":false}]' ;;
    # v14: the one-token GEMV's split-K cap (8 pairs already multiply the programs)
    bench_moe_v14h) step bench_moe_v14h 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W8A8 --out "$OUT/moe_v14h.json" \
        --switch-variants '[{"moe_gemv.MAX_SPLIT":4},{"moe_gemv.MAX_SPLIT":8},{"moe_gemv.MAX_SPLIT":16}]' ;;
    # v14: the whole table at the final code: every scheme, T = 1 .. 4096, bf16 fused and the torch loop
    bench_moe_v14_full) step bench_moe_v14_full 400 python3 benchmarks/cuda_moe/bench_moe.py \
        --out "$OUT/moe_v14_full.json" ;;
    # v14: W4A16 and W4AFP8 prefill on the split, transposed int4 path (as W4A8), against the unpacking path
    pytest_moe_v14i) step pytest_moe_v14i 240 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py ;;
    bench_moe_v14i) step bench_moe_v14i 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W4A16,W4AFP8 --out "$OUT/moe_v14i.json" \
        --prefill-variants '[{"PREFILL_WONLY_SPLIT":false,"PREFILL_FP8_SPLIT":false}]' ;;
    # v15: W8A16 prefill, words read as bytes in the transposed tile, against the reshape-unpacking path; and the
    # int4 decode cells at T = 8 / 64 again (v14's full run had them 5-6% slower than v11)
    bench_moe_v15) step bench_moe_v15 150 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64,512,4096 --no-loop \
        --schemes W8A16,W4A16,W4A8_DYNAMIC --out "$OUT/moe_v15.json" --prefill-variants '[{"PREFILL_INT8_BYTES":true}]' ;;
    # v15: the one-token GEMV on the canonical words (activations in tile order) against the row-tile copy it
    # replaced: the same benchmarks run on this tree and on the tree of b8e54e7 (exported to _old/ and carried:
    # git archive b8e54e7 backends | tar -x -C _old), in one device call
    pytest_gemv_v15) step pytest_gemv_v15 150 bash -c "python3 -m pytest -q tests/cuda/test_cuda_matmul.py \
        -k 'gemv or weight_only or small_group or tile' && DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py -k 'gemv or static or canonical'" ;;
    bench_gemv_v15) for tree in new old; do
        pp=$PYTHONPATH; [ $tree = old ] && pp=$ROOT/_old/backends:$PYTHONPATH
        step bench_gemv_v15_$tree 150 env PYTHONPATH=$pp python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 \
            --no-loop --schemes W4A16,W4A8_DYNAMIC,W4AFP8,W8A8,W8A16 --out "$OUT/moe_v15_gemv_$tree.json"
    done ;;
    bench_gemv_v15_dense) for tree in new old; do
        pp=$PYTHONPATH; [ $tree = old ] && pp=$ROOT/_old/backends:$PYTHONPATH
        step bench_gemv_v15_dense_$tree 200 env PYTHONPATH=$pp bash -c "cd benchmarks/cuda && python3 run_gpu.py \
            --out $OUT/dense_$tree --skip-correctness --ms 1 --schemes W4A16,W8A16 \
            --shapes 7168x18432,2048x7168,512x32768,1536x24576 --variant 'gemv:W4A16+W8A16:mm.MMA_MAX_M={4: 0, 8: 0}'"
    done ;;
    # v15: the decode kernels on the GEMV's row tiles (decode_cfg shared=1, one device copy of the codes) against
    # their own layouts (pair tiles, slabs: shared=0)
    pytest_shared_v15) step pytest_shared_v15 200 bash -c "DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py; python3 -m pytest -q tests/cuda/test_cuda_matmul.py -k 'mma or gemv'" ;;
    bench_shared_v15) step bench_shared_v15 330 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8,W8A16 --variants '[{"shared":0}]' --out "$OUT/moe_v15_shared.json" ;;
    # v15b: 8-bit row tiles 32 words wide (the slab kernel's depth before sharing) for W8A16, and the int4 decode
    # kernel's stages on 16-word row tiles at T = 8 (where sharing lost 3-4% in v15)
    bench_w8_v15) step bench_w8_v15 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8,64 --no-loop \
        --schemes W8A16 --variants '[{"shared":0}]' --switch-variants '[{"moe_gemv.INT8_TILE_WORDS":32}]' \
        --out "$OUT/moe_v15_w8.json" ;;
    bench_int4_stages_v15) step bench_int4_stages_v15 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8 \
        --no-loop --schemes W4A16,W4A8_DYNAMIC --variants '[{"mma_stages":4},{"mma_stages":2},{"shared":0}]' \
        --out "$OUT/moe_v15_stages.json" ;;
    # v15c: the GEMV reads 32-word int8 row tiles as two 16-word sub-tiles (SLW), so W8A16's decode can share
    # 32-word tiles without slowing one token; every integer scheme at T = 1, 8, 64 on the final defaults
    bench_v15c) step bench_v15c 330 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8,64 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8,W8A16,W8A8 --switch-variants '[{"moe_gemv.INT8_TILE_WORDS":32}]' \
        --out "$OUT/moe_v15c.json" ;;
    # v15: the whole table on the shared row tiles (every scheme, T = 1 .. 4096, bf16 fused and the loop)
    bench_moe_v15_full) step bench_moe_v15_full 330 python3 benchmarks/cuda_moe/bench_moe.py \
        --out "$OUT/moe_v15_full.json" ;;
    # v15: W8A16 prefill on its bytes path, now the default (the kernel tests that name it, then conformance)
    pytest_moe_w8_v15) step pytest_moe_w8_v15 150 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py -k "W8A16 or bytes" ;;
    # v15d: prefill on the shared row tiles (PREFILL_ROW_TILES) against the canonical words; release_canonical.
    # Run when row tiles were the default (variant false); the variant is now true, the same comparison
    pytest_rt_v15) step pytest_rt_v15 150 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py tests/cuda_moe/test_cuda_moe_decode.py \
        -k "row_tiles_and_canonical or release or prefill_path or byte_order" ;;
    bench_rt_v15) step bench_rt_v15 150 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8,W8A16 --prefill-variants '[{"PREFILL_ROW_TILES":true}]' \
        --out "$OUT/moe_v15d_rt.json" ;;
    # v15e (not run yet: the device time was spent): prefill on the row tiles with the steps' alignment stated to
    # Triton (tl.multiple_of), against the canonical words (the default)
    pytest_rt_v15b) step pytest_rt_v15b 60 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py -k "row_tiles_and_canonical" ;;
    bench_rt_v15b) step bench_rt_v15b 80 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W8A16 --prefill-variants '[{"PREFILL_ROW_TILES":true}]' \
        --out "$OUT/moe_v15e_rt.json" ;;
    # v13 (cuda.md): W4A8_DYNAMIC's decode on the int8 tensor cores (mm.MMA_INT8, dsq_cuda.int4_int8_mma): its
    # GPU tests, then the dense table against the bf16-MMA path in the same run, with two launch variants
    pytest_i8) step pytest_i8 150 python3 -m pytest -q tests/cuda/test_cuda_matmul.py tests/cuda/test_cuda_quant_exact.py \
        -k "W4A8 or int8" ;;
    bench_i8) step bench_i8 260 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/i8 \
        --skip-correctness --ms 1,4,16,64 --schemes W4A16,W4A8_DYNAMIC \
        --variant 'bf16mma:W4A8_DYNAMIC:mm.MMA_INT8=False' \
        --variant 'i8s4:W4A8_DYNAMIC:configs.MMA_DECODE_STAGES=4' \
        --variant 'i8pps8:W4A8_DYNAMIC:configs.MMA_PROGRAMS_PER_SM=8'" ;;
    # v13b: the I8 path with its codes reordered inside the quantization kernel and 4 stages (MMA_INT8_STAGES)
    bench_i8b) step bench_i8b 200 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/i8b \
        --skip-correctness --ms 1,4,16,64 --schemes W4A16,W4A8_DYNAMIC \
        --variant 'bf16mma:W4A8_DYNAMIC:mm.MMA_INT8=False' \
        --variant 'i8s3:W4A8_DYNAMIC:mm.MMA_INT8_STAGES=3' \
        --variant 'i8s6:W4A8_DYNAMIC:mm.MMA_INT8_STAGES=6'" ;;
    # cuda-moe.md v16: prefill on the row tiles is the default (PREFILL_ROW_TILES): W4AFP8 against the canonical
    # words (the one scheme bench_rt_v15b left out), and the kernel tests on the new default
    bench_rt_fp8) step bench_rt_fp8 80 python3 benchmarks/cuda_moe/bench_moe.py --tokens 512,4096 --no-loop \
        --schemes W4AFP8 --prefill-variants '[{"PREFILL_ROW_TILES":false}]' --out "$OUT/moe_v16_rt_fp8.json" ;;
    pytest_moe_kernels) step pytest_moe_kernels 220 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_kernels.py ;;
    # cuda-moe.md v16: W4A8_DYNAMIC's experts on the int8 tensor cores (decode_cfg int8_mma) against bf16 MMAs,
    # its GPU tests, and the whole table on the v16 defaults
    pytest_moe_i8) step pytest_moe_i8 120 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py -k "W4A8 or int8" ;;
    bench_moe_i8) step bench_moe_i8 90 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A8_DYNAMIC --variants '[{"int8_mma": 0}, {"int8_mma_stages": 3}]' --out "$OUT/moe_v16_i8.json" ;;
    bench_moe_v16_full) step bench_moe_v16_full 200 python3 benchmarks/cuda_moe/bench_moe.py \
        --out "$OUT/moe_v16_full.json" ;;
    # cuda-moe.md v16: W4A16's and W4AFP8's experts on the int8 tensor cores with x as int8 slices (int8_mma 2)
    pytest_slices) step pytest_slices 120 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py tests/cuda/test_cuda_matmul.py -k "int4_experts_on_the_int8 or slices" ;;
    bench_slices) step bench_slices 120 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A16,W4AFP8 --variants '[{"int8_mma": 2}]' --out "$OUT/moe_v16_slices.json" ;;
    # cuda-moe.md v16: W4A8_DYNAMIC's one-token GEMV with dp4a (moe_gemv.DP4A) against the float GEMV
    pytest_dp4a) step pytest_dp4a 120 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py -k "dp4a or one_token_gemv_path" ;;
    bench_dp4a) step bench_dp4a 90 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --schemes W4A8_DYNAMIC,W4A16 --switch-variants '[{"moe_gemv.DP4A": false}]' --out "$OUT/moe_v16_dp4a.json" ;;
    # cuda-moe.md v16: W4A16's and W4AFP8's one-token GEMV with x as int8 slices (moe_gemv.DP4A_SLICES)
    bench_dp4a_slices) step bench_dp4a_slices 90 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --schemes W4A16,W4AFP8 --switch-variants '[{"moe_gemv.DP4A_SLICES": false}]' \
        --out "$OUT/moe_v16_dp4a_slices.json" ;;
    # v17: the time to read a weight of each size once (the M = 1 ceiling by size), and where the MoE layer's
    # time goes, kernel by kernel (torch.profiler)
    read_roofline) step read_roofline 120 python3 benchmarks/cuda/read_roofline.py --out "$OUT/read_roofline.json" ;;
    profile_moe) step profile_moe 240 python3 benchmarks/cuda_moe/profile_moe.py --schemes bf16,W4A8_DYNAMIC,W4A16 \
        --tokens 1,8,64 --out "$OUT/profile_moe.json" ;;
    # v17: the one-program pair alignment (moe_align_kernel) on the GPU, and the whole MoE table with it, with the
    # L2 flushed as before (do_bench: dirty) and by a read (clean; benchmarks/timing.py)
    pytest_align) step pytest_align 60 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_align.py ;;
    bench_moe_v17) step bench_moe_v17 200 python3 benchmarks/cuda_moe/bench_moe.py --out "$OUT/moe_v17.json" ;;
    bench_moe_v17_clean) step bench_moe_v17_clean 200 python3 benchmarks/cuda_moe/bench_moe.py --no-loop --flush clean \
        --out "$OUT/moe_v17_clean.json" ;;
    # v17b: the alignment program's time by T; the M-blocks on the fastest grid axis (blocks_first) for skewed routing
    bench_align) step bench_align 60 python3 benchmarks/cuda_moe/bench_align.py ;;
    pytest_blocks_first) step pytest_blocks_first 60 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py tests/cuda_moe/test_cuda_moe_align.py -k "blocks_first or align" ;;
    bench_blocks_first) step bench_blocks_first 150 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8 --variants '[{"blocks_first": 1}]' --out "$OUT/moe_v17_blocks_first.json" ;;
    bench_t1_decode) step bench_t1_decode 120 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --variants '[{"path": "decode"}]' --out "$OUT/moe_v17_t1_decode.json" ;;
    # v17c: the dense decode table (M 1 / 16, the int4 and int8 weight-only schemes) with each L2 flush, one run each
    dense_dirty) step dense_dirty 120 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense_dirty \
        --skip-correctness --ms 1,16 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 --flush dirty" ;;
    dense_clean) step dense_clean 120 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense_clean \
        --skip-correctness --ms 1,16 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 --flush clean" ;;
    # v17d: 32 pairs a block (skewed T = 64 puts 32 pairs on each hot expert), and W8A16 on the tensor-core kernel
    bench_block32) step bench_block32 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8,W8A16,W8A8 \
        --variants '[{"mma_block_m": 32, "block_m": 32}, {"mma8": 1}, {"mma8": 1, "mma_block_m": 32}]' \
        --out "$OUT/moe_v17_block32.json" ;;
    # v17e: 128 weight rows a program (one x tile for twice the rows), tensor-core kernel and slab kernel
    pytest_block_n) step pytest_block_n 60 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py -k "wider_blocks" ;;
    bench_block_n) step bench_block_n 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 8,64 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W4AFP8,W8A16,W8A8 \
        --variants '[{"mma_block_n": 128}, {"block_n": 128, "num_warps": 8}]' --out "$OUT/moe_v17_block_n.json" ;;
    # v17: every MoE test on the GPU (decode, prefill kernels, alignment)
    pytest_moe_all) step pytest_moe_all 420 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q -x tests/cuda_moe ;;
    # v17f: the SwiGLU quantized in the quantization kernel (moe_decode.FUSED_SWIGLU_QUANT) against two kernels
    pytest_fused_swiglu) step pytest_fused_swiglu 90 env DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q \
        tests/cuda_moe/test_cuda_moe_decode.py -k "swiglu or int4_experts_on_the_int8 or dp4a" ;;
    bench_fused_swiglu) step bench_fused_swiglu 120 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8,64 --no-loop \
        --schemes W4A8_DYNAMIC,W8A8_DYNAMIC --switch-variants '[{"moe_decode.FUSED_SWIGLU_QUANT": false}]' \
        --out "$OUT/moe_v17_fused_swiglu.json" ;;
    # v18: programmatic dependent launch (dsq_cuda.pdl) and the L2 prefetch before the wait, against neither
    pytest_pdl) step pytest_pdl 200 bash -c "python3 -c 'import triton, dsq_cuda.pdl as p; print(triton.__version__, \"PDL available:\", p.AVAILABLE)' \
        && DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q -x tests/cuda_moe/test_cuda_moe_chain.py" ;;
    bench_pdl) step bench_pdl 240 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8,64 --no-loop \
        --switch-variants '[{"pdl.ENABLED": true}, {"pdl.ENABLED": true, "pdl.PREFETCH": {"gemv": 16384, "gemv_dp4a": 16384, "mma": 16384, "mma_int8": 16384}}]' --out "$OUT/moe_v18_pdl.json" ;;
    # v18b: which GEMM kernels gain from the L2 prefetch before the wait, and how many bytes (bf16 timed alike)
    bench_pdl_b) step bench_pdl_b 300 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8,64 --no-loop \
        --schemes W4A8_DYNAMIC,W8A16,W8A8,W4A16 --switch-variants '[{"pdl.ENABLED": true},
        {"pdl.ENABLED": true, "pdl.PREFETCH": {"gemv_dp4a": 16384, "mma_int8": 16384}},
        {"pdl.ENABLED": true, "pdl.PREFETCH": {"gemv_dp4a": 16384, "mma_int8": 32768, "gemv": 16384, "slab": 16384}},
        {"pdl.ENABLED": true, "pdl.PREFETCH": {"gemv_dp4a": 16384, "mma_int8": 65536, "gemv": 16384, "slab": 32768}}]' \
        --out "$OUT/moe_v18b_prefetch.json" ;;
    # v18c: the chain tests on the GPU (PDL, the SwiGLU fused into the next kernel, the folded int4 offset), the
    # new defaults against v17's (no PDL, no prefetch, SwiGLU kernels; bf16 timed alike), the folded offset
    pytest_moe_chain) step pytest_moe_chain 240 bash -c "DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_chain.py; \
        DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_decode.py -k 'swiglu or fold or one_token or mma_variant'" ;;
    bench_v18c) step bench_v18c 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8,64 --no-loop \
        --switch-variants '[{"pdl.ENABLED": false, "pdl.PREFETCH": {}, "moe_gemv.FUSE_SWIGLU": false}]' \
        --out "$OUT/moe_v18c.json" ;;
    # (bench_fold timed the int4 offset folded into the epilogue, a variant never committed: cuda-moe.md v18 item 4;
    # its decode_cfg key no longer exists, so the step is gone)
    # v18: the whole MoE table on the final defaults, each flush
    bench_moe_v18) step bench_moe_v18 200 python3 benchmarks/cuda_moe/bench_moe.py --out "$OUT/moe_v18.json" ;;
    bench_moe_v18_clean) step bench_moe_v18_clean 200 python3 benchmarks/cuda_moe/bench_moe.py --no-loop --flush clean \
        --out "$OUT/moe_v18_clean.json" ;;
    # prepared in v18, not yet run: the dense decode GEMM under PDL (mm.PDL), and with a 16 KB prefetch for its int8
    # path, against the default, at M 1 / 16; and the fp8 decode probe (benchmarks/cuda/fp8_decode_lab.py)
    pytest_dense_pdl) step pytest_dense_pdl 120 python3 -m pytest -q tests/cuda/test_cuda_pdl.py ;;
    bench_dense_pdl) step bench_dense_pdl 200 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense_pdl \
        --skip-correctness --ms 1,16 --schemes W4A8_DYNAMIC,W4AFP8 --variant 'pdl:W4A8_DYNAMIC+W4AFP8:mm.PDL=True' \
        --variant 'pdl16:W4A8_DYNAMIC:mm.PDL=True,pdl.PREFETCH={\"gemv_dp4a\": 16384, \"mma_int8\": 16384, \"dense_int8\": 16384}'" ;;
    # v16 (dense): repeated calls give the same bits? (split-K partials meet in float atomics); PDL at M 1-16
    repeat_probe) step repeat_probe 90 python3 benchmarks/cuda/repeat_probe.py ;;
    bench_dense_pdl_m) step bench_dense_pdl_m 200 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense_pdl_m \
        --skip-correctness --ms 1,2,4,8,16 --schemes W4A16,W4A8_DYNAMIC,W4AFP8 --shapes 7168x18432,18432x7168,2048x7168,1536x24576 \
        --variant 'pdl:W4A16+W4A8_DYNAMIC+W4AFP8:mm.PDL=True' \
        --variant 'pdl16:W4A8_DYNAMIC:mm.PDL=True,pdl.PREFETCH={\"gemv_dp4a\": 16384, \"mma_int8\": 16384, \"dense_int8\": 16384}'" ;;
    # v17: deterministic mode (torch.use_deterministic_algorithms; _env.DETERMINISTIC forces it): the launch tests on
    # the GPU, and its cost against the default in one run, MoE and dense
    pytest_det) step pytest_det 150 env DSQ_MOE_TEST_DEVICE=cuda CUBLAS_WORKSPACE_CONFIG=:4096:8 python3 -m pytest -q \
        tests/cuda_moe/test_cuda_deterministic.py ;;
    bench_det_moe) step bench_det_moe 100 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1,8 --no-loop \
        --schemes W4A16,W4A8_DYNAMIC,W8A8 --switch-variants '[{"_env.DETERMINISTIC": true}]' --out "$OUT/det_moe.json" ;;
    bench_det_dense) step bench_det_dense 80 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/det_dense \
        --skip-correctness --ms 1,16 --schemes W4A16,W8A8 --shapes 7168x18432,7168x2048 \
        --variant 'det:W4A16+W8A8:_env.DETERMINISTIC=True'" ;;
    # v18 (dense prefill): the decode kernel in token blocks (mm.MMA_PREFILL_MAX_M, configs.MMA_PREFILL_*) against
    # today's prefill paths (dequantize + cuBLAS, the tiled kernel, the expanded codes), tiles swept as variants
    pytest_prefill18) step pytest_prefill18 120 python3 -m pytest -q tests/cuda/test_cuda_prefill.py \
        tests/cuda/test_cuda_matmul.py -k "token_blocks or dispatch" ;;
    pytest_v18) step pytest_v18 150 python3 -m pytest -q tests/cuda/test_cuda_prefill.py \
        tests/cuda/test_cuda_matmul.py -k "token_blocks or dispatch or reference or split_k or asymmetric or expanded" ;;
    # (each variant sets both tiles, configs.MMA_PREFILL_ONE_BLOCK and _TOKEN_BLOCKS, to one (BLOCK_M, BLOCK_N,
    # warps, stages), as the first build had a single tile)
    bench_prefill18) P="mm.MMA_PREFILL_MAX_M=4096"; O="configs.MMA_PREFILL_ONE_BLOCK"; T="configs.MMA_PREFILL_TOKEN_BLOCKS"
        step bench_prefill18 420 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/prefill18 \
        --skip-correctness --ms 128,256,1024 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 \
        --shapes 7168x18432,18432x7168,7168x2048,2048x7168 \
        --variant 'm128:W4A16+W8A16+W4A8_DYNAMIC+W4AFP8:$P,$O=(128, 128, 8, 2),$T=(128, 128, 8, 2)' \
        --variant 'm64s3:W4A16+W8A16:$P,$O=(64, 128, 8, 3),$T=(64, 128, 8, 3)' \
        --variant 'm128n64:W4A16+W8A16:$P,$O=(128, 64, 4, 2),$T=(128, 64, 4, 2)' \
        --variant 'm64n64s3:W4A16:$P,$O=(64, 64, 4, 3),$T=(64, 64, 4, 3)' \
        --variant 'm128n64s3:W4A16:$P,$O=(128, 64, 4, 3),$T=(128, 64, 4, 3)'" ;;
    # v18: the table on the final defaults, every scheme, M 1 to 4096, all 8 shapes
    bench_final18) step bench_final18 330 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/final18 \
        --skip-correctness --ms 1,16,64,128,256,1024,4096" ;;
    # v18: the new default at 65-128 rows (mm.MMA_PREFILL_MAX_M = 128) against the old paths, and between 129 and
    # 255 rows the tiled kernel (default) against dequantize + cuBLAS from 129 rows
    bench_prefill18b) S="W4A16+W8A16+W4A8_DYNAMIC+W4AFP8"
        step bench_prefill18b 300 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/prefill18b \
        --skip-correctness --ms 96,128,192 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 \
        --shapes 7168x18432,18432x7168,7168x2048,2048x7168,1536x24576,512x32768 \
        --variant 'old:$S:mm.MMA_PREFILL_MAX_M=0' --variant 'dense129:W4A16+W8A16:mm.DENSE_MIN_M=129'" ;;
    # v18 (dense, M = 4096): qmm_kernel's tile for one-byte codes (configs.LARGE_M_TILE) and its loads without a
    # K mask (mm.QMM_EVEN_K), W8A8 / W8A8_DYNAMIC / W4A8_DYNAMIC (expanded codes) on every shape
    bench_int8_tiles) T="configs.LARGE_M_TILE"; S="W8A8+W8A8_DYNAMIC+W4A8_DYNAMIC"
        step bench_int8_tiles 400 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/int8_tiles \
        --skip-correctness --ms 4096 --schemes W8A8,W8A8_DYNAMIC,W4A8_DYNAMIC \
        --variant 'maskk:$S:mm.QMM_EVEN_K=False' \
        --variant 'n256:$S:$T=(128, 256, 128, 8, 3)' --variant 'm256:$S:$T=(256, 128, 128, 8, 3)' \
        --variant 'n256k64:$S:$T=(128, 256, 64, 8, 4)' --variant 's4:$S:$T=(128, 128, 128, 8, 4)'" ;;
    # v17 (dense): split-K partials in slots summed in slot order (mm.FIXUP_SLOTS, the default): the dense tests,
    # the repeat probe (slots / atomics / slots with PDL), and the timing against the atomics in one run
    pytest_slots) step pytest_slots 200 python3 -m pytest -q tests/cuda/test_cuda_matmul.py tests/cuda/test_cuda_pdl.py ;;
    pytest_slots_k) step pytest_slots_k 120 python3 -m pytest -q tests/cuda/test_cuda_matmul.py tests/cuda/test_cuda_pdl.py \
        -k "split or fixup or repeat or pdl or decode" ;;
    repeat_slots) step repeat_slots 150 python3 benchmarks/cuda/repeat_probe.py \
        --schemes W4A16,W4AFP8,W4A8_DYNAMIC,W8A16 ;;
    bench_dense_v17) step bench_dense_v17 240 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense_v17 \
        --skip-correctness --ms 1,4,16,64 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 \
        --variant 'atomics:W4A16+W8A16+W4A8_DYNAMIC+W4AFP8:mm.FIXUP_SLOTS=False'" ;;
    # v16 (dense): the new default (PDL at M <= 2, the int8 prefetch at K <= 2048) against no PDL, every shape
    bench_dense_v16) step bench_dense_v16 200 bash -c "cd benchmarks/cuda && python3 run_gpu.py --out $OUT/dense_v16 \
        --skip-correctness --ms 1,2,4,16 --schemes W4A16,W8A16,W4A8_DYNAMIC,W4AFP8 \
        --variant 'nopdl:W4A8_DYNAMIC+W4AFP8:mm.PDL=False'" ;;
    # v19 (MoE): where the 8-bit one-token calls and W4A8's skewed T = 8 spend their time, kernel by kernel
    profile_v19) step profile_v19 200 python3 benchmarks/cuda_moe/profile_moe.py --schemes bf16,W8A8,W8A16,W4A8_DYNAMIC \
        --tokens 1,8 --out "$OUT/profile_v19.json" ;;
    # v19 (MoE): W8A16's one-token GEMV reading each 32-word tile whole (the default) against two 16-word halves.
    # (cuda-moe.md v19's 111.3 vs 117.8 us came from this step with a third variant, the combine done by the down
    # GEMV, moe_gemv.FUSE_COMBINE of commit 36bc887, on in both columns; it was slower and is gone)
    pytest_v19) step pytest_v19 240 bash -c "DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_chain.py; \
        DSQ_MOE_TEST_DEVICE=cuda python3 -m pytest -q tests/cuda_moe/test_cuda_moe_decode.py -k 'one_token or int8_row_tile_widths'" ;;
    bench_v19) step bench_v19 200 python3 benchmarks/cuda_moe/bench_moe.py --tokens 1 --no-loop \
        --switch-variants '[{"moe_gemv.PACKED8_LOAD_WORDS": 16}]' --out "$OUT/moe_v19_t1.json" ;;
    # v19: the whole MoE table on the final defaults, each flush
    bench_moe_v19) step bench_moe_v19 200 python3 benchmarks/cuda_moe/bench_moe.py --out "$OUT/moe_v19.json" ;;
    bench_moe_v19_clean) step bench_moe_v19_clean 200 python3 benchmarks/cuda_moe/bench_moe.py --no-loop --flush clean \
        --out "$OUT/moe_v19_clean.json" ;;
    # (v19b timed W8A8 / W8A8_DYNAMIC / FP8_BLOCK experts in 32-word row tiles, moe_gemv.BYTE_TILE_WORDS of commit
    # 5fab84b: no gain, removed with its steps; results-h200-v19b-byte-tiles.json)
    fp8_lab) step fp8_lab 200 python3 benchmarks/cuda/fp8_decode_lab.py --gpu --sass --dots 2,4,8 ;;
    *) echo "unknown step $s; known: conformance_full bench_final19 bench_moe_final19 overlap_lab bench_final18 pytest_v18 bench_prefill18b bench_int8_tiles pytest_prefill18 bench_prefill18 pytest_det bench_det_moe bench_det_dense pytest_slots pytest_slots_k repeat_slots bench_dense_v17 bench_moe_v19 bench_moe_v19_clean pytest_v19 bench_v19 profile_v19 bench_dense_v16 repeat_probe bench_dense_pdl_m pytest_dense_pdl bench_dense_pdl fp8_lab bench_moe_v18 bench_moe_v18_clean pytest_moe_chain bench_v18c bench_pdl_b pytest_pdl bench_pdl pytest_fused_swiglu bench_fused_swiglu pytest_moe_all pytest_block_n bench_block_n bench_block32 dense_dirty dense_clean bench_align pytest_blocks_first bench_blocks_first bench_t1_decode pytest_align bench_moe_v17 bench_moe_v17_clean read_roofline profile_moe bench_dp4a_slices pytest_dp4a bench_dp4a pytest_slices bench_slices pytest_moe_i8 bench_moe_i8 bench_moe_v16_full bench_i8b bench_rt_fp8 pytest_moe_kernels pytest_i8 bench_i8 pytest_rt_v15b bench_rt_v15b pytest_rt_v15 bench_rt_v15 pytest_moe_w8_v15 bench_moe_v15_full bench_v15c bench_w8_v15 bench_int4_stages_v15 pytest_shared_v15 bench_shared_v15 pytest_gemv_v15 bench_gemv_v15 bench_gemv_v15_dense bench_moe_v15 pytest_moe_v14i bench_moe_v14i bench_moe_v14_full bench_moe_v14h pytest_gemv_v14 bench_moe_v14g bench_moe_v14f pytest_moe_v14e bench_moe_v14e bench_moe_v14c bench_moe_v14d bench_moe_v14b pytest_moe_v14 bench_moe_v14 pytest_moe_v13h bench_moe_v13h bench_moe_v13g bench_moe_v13e pytest_moe_v13d bench_moe_v13d pytest_moe_v13 bench_moe_v13 bench_moe_v13b conformance_moe pytest_moe_prefill bench_moe_prefill pytest_v12 pytest_block bench_v12b expand_time pytest_prefill bench_v12 race_test probe_prefill bench_prefill bench_moe_chain race_check bench_v11 lab_chain lab_chain64 pytest_chain pytest_cuda pytest_moe lab_decode lab_x_ahead lab_m64 lab_m64b bench_dense bench_dispatch bench_moe ncu conformance"; exit 2 ;;
    esac
done
# the device returns at most 8 files: the logs travel as one archive
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -r "$OUT/logs"
