"""Programmatic dependent launch (PDL, sm_90+): the next kernel of a layer starts while this one drains.

A small decode layer is a chain of short kernels (quantize x, gate/up GEMM, SwiGLU, down GEMM, combine), and
without PDL each one starts only after the one before has finished and its launch has gone through, so every
link costs a launch gap and the next kernel's ramp-up (its programs being placed on the SMs, their first loads).
With PDL (``launch_pdl=True``; the launch attribute "programmatic stream serialization", which CUDA graph
capture keeps as a programmatic edge) the GPU may start kernel B once every program of the kernel A before it
has called ``griddepcontrol.launch_dependents`` (or exited). B's programs then wait in ``griddepcontrol.wait``
until A has completed and its writes are visible.

The protocol every kernel here follows (:func:`wait_for_inputs` at the top of the kernel):
    1. optional work that reads nothing a kernel of the chain writes: addresses, and with PREFETCH an L2
       prefetch of the program's first weight tiles (:func:`prefetch_l2`: weights are constants of the layer,
       expert ids come from before the layer);
    2. ``griddepcontrol.wait``: everything the previous kernel wrote is now visible;
    3. ``griddepcontrol.launch_dependents``: only after 2, so when B starts, every program of A has passed its
       own wait, hence the kernel before A has completed. That is what makes step 1 safe in B: whatever was
       written before A is complete when B starts.
A kernel launched without PDL (torch's fills and copies) waits for full completion as before, so mixing them in
is safe; it only breaks the overlap at that link.

``ENABLED`` switches it for the MoE decode kernels, the activation quantization and the dense decode GEMM
(benchmarks: ``--switch-variants '[{"pdl.ENABLED": ...}]'``); ``dsq_cuda.mm.PDL`` / ``PDL_MAX_M`` say where the
dense GEMM takes it.
The Triton interpreter has no grids to overlap, so there the kernels compile without it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dsq_cuda._env import interpreting

try:  # Triton >= 3.3
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    AVAILABLE = True
except ImportError:  # pragma: no cover - older Triton: PDL stays off (wait_for_inputs never reaches them)
    gdc_launch_dependents = gdc_wait = None
    AVAILABLE = False

#: launch the MoE layer's kernels with PDL (see the module docstring). On the H200 (cuda-moe.md v18, two runs,
#: T = 1 / 8 / 64) it took 1-3 us off most decode calls (W4A8_DYNAMIC T = 1: 89.7 -> 88.1 us, W8A8 119.9 -> 117.2
#: us), the bf16 fused layer's too, and the same bits (tests/cuda_moe/test_cuda_moe_chain.py)
ENABLED = True
#: with PDL, the bytes of its first weight tiles each GEMM program prefetches into L2 before it waits for its
#: inputs, by kernel: "gemv" (the one-token GEMV on floats or int8 slices), "gemv_dp4a" (the GEMV on int8
#: activation codes, dp4a), "mma" (the tensor-core decode on bf16 MMAs), "mma_int8" (its int8 MMA path), "slab"
#: (moe_slab_kernel: the bf16 fused layer's experts, and 8-bit ones), "dense_int8" (the dense decode GEMM's int8
#: path, with dsq_cuda.mm.PDL, at K <= mm.PREFETCH_MAX_K). 0 or a missing kind: no prefetch.
#: On the H200 (cuda-moe.md v18) 16 KB won for the int8 kernels: W4A8_DYNAMIC T = 8 skewed 142.7 -> 124.8 us,
#: T = 64 skewed 279.0 -> 264.0 us, T = 1 88.1 -> 85.4 us; 32 / 64 KB were no better and 64 KB cost the uniform
#: cells up to 17%. The float kernels lost: W4A16 T = 1 90.9 -> 95.7 us ("gemv"), W4AFP8 T = 8 uniform 428 -> 448
#: us ("mma"), the bf16 layer 188 -> 194 us at T = 1 ("slab", 32 KB)
PREFETCH: dict[str, int] = {"gemv_dp4a": 16384, "mma_int8": 16384, "dense_int8": 16384}
#: one prefetch instruction's bytes (a 64-row tile of 16-word rows, the decode kernels' weight tile)
PIECE = 4096
_PIECE_WORDS = tl.constexpr(PIECE // 4)
_PREFETCH_ASM = tl.constexpr("{ .reg .pred p; .reg .b32 t; mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; "
                             f"@p cp.async.bulk.prefetch.L2.global [$1], {PIECE}; mov.u32 $0, 0; }}")
#: one row segment's bytes (:func:`prefetch_rows_l2`: 128 bf16 weights, a slab tile of the float layer)
ROW_PIECE = 256
_PREFETCH_ROWS_ASM = tl.constexpr(f"cp.async.bulk.prefetch.L2.global [$1], {ROW_PIECE}; mov.u32 $0, 0;")


def flag(device: torch.device | str) -> bool:
    """The PDL constexpr of a kernel launched on ``device``: ENABLED, and a Hopper (or newer) GPU, or a machine
    compiling for one (tests/cuda_moe/sm90_launches.py); never in the interpreter."""
    dev = torch.device(device)
    if not (ENABLED and AVAILABLE) or interpreting():
        return False
    return dev.type != "cuda" or torch.cuda.get_device_capability(dev)[0] >= 9


def prefetch_tiles(device: torch.device | str, kind: str, tile_bytes: int) -> int:
    """The PREFETCH constexpr of a GEMM program of this kind (see PREFETCH) on ``device``: how many of its first
    weight tiles of ``tile_bytes`` (whole PIECEs) it prefetches; 0 without PDL."""
    nbytes = PREFETCH.get(kind, 0) if flag(device) else 0
    if not nbytes or tile_bytes % PIECE:
        return 0
    return max(1, nbytes // tile_bytes)


def launch_kwargs(on: bool) -> dict:
    """Extra keyword arguments of a Triton launch whose PDL constexpr is ``on``."""
    return {"launch_pdl": True} if on else {}


def launch_args(device: torch.device | str) -> dict:
    """The PDL constexpr and the launch option of a kernel launched on ``device``: ``kernel[grid](...,
    **pdl.launch_args(device))``."""
    on = flag(device)
    return {"PDL": on, **launch_kwargs(on)}


@triton.jit
def wait_for_inputs(PDL: tl.constexpr):
    """Steps 2 and 3 of the protocol: wait until the previous kernel's writes are visible, then let the next
    kernel start. A no-op without PDL."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def prefetch_l2(ptr):
    """A bulk prefetch of the PIECE bytes at ``ptr`` (16-byte aligned) into L2, issued by thread 0 of the
    program (``cp.async.bulk.prefetch.L2``, sm_90): no registers held, no wait; the later loads hit L2."""
    tl.inline_asm_elementwise(_PREFETCH_ASM, "=r,l", [ptr], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def prefetch_row_tiles(w_ptr, first, end, N, blk, BLOCK_N: tl.constexpr, W: tl.constexpr, TILES: tl.constexpr):
    """Prefetch into L2 the rows ``[blk * BLOCK_N, (blk + 1) * BLOCK_N)`` of row tiles ``first .. first + TILES - 1``
    (those below ``end``) of a row-tile layout ``[tiles, N, W]`` int32 at ``w_ptr``: one contiguous block of
    ``BLOCK_N * W`` words a tile, in PIECE-byte prefetches. A block that runs past N is skipped."""
    tl.static_assert((BLOCK_N * W) % _PIECE_WORDS == 0)
    if (blk + 1) * BLOCK_N <= N:
        for i in tl.static_range(TILES):
            if first + i < end:
                tile = w_ptr + (first + i).to(tl.int64) * N * W + blk * BLOCK_N * W
                for piece in tl.static_range((BLOCK_N * W) // _PIECE_WORDS):
                    prefetch_l2(tile + piece * _PIECE_WORDS)


@triton.jit
def prefetch_rows_l2(ptrs):
    """A bulk prefetch of the ROW_PIECE bytes at each pointer of ``ptrs`` (16-byte aligned) into L2, by the
    threads that hold them (a pointer held by two threads is prefetched twice: harmless)."""
    tl.inline_asm_elementwise(_PREFETCH_ROWS_ASM, "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1)
