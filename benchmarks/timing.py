"""GPU timing with the L2 cache flushed before each call, in two ways (shared by the cuda benchmarks).

``dirty`` is triton.testing.do_bench: before each call it zeroes a 256 MB buffer. That evicts the weights, but
it leaves the L2 cache (50 MB on the H200) full of modified lines, which DRAM must absorb while the timed
call reads (benchmarks/cuda/read_roofline.py times a plain read of each size both ways). ``clean`` evicts by
*reading* the 256 MB buffer instead (``read_kernel``), so the L2 holds unmodified lines and the timed call pays
only its own traffic. Every benchmark table says which one it used; ``dirty`` stays the default, as in all
tables before v14.
"""

from __future__ import annotations

import json
import os
import statistics

import torch
import triton
import triton.language as tl

FLUSHES = ("dirty", "clean")


@triton.jit
def _xor(a, b):
    return a ^ b


@triton.jit
def read_kernel(src, out, n_words, BLOCK: tl.constexpr):
    """Program p xors int32 words [i * BLOCK, (i + 1) * BLOCK) for i = p, p + P, ... into out[p] (P: grid size)."""
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    offs = tl.arange(0, BLOCK)
    for start in range(pid * BLOCK, n_words, tl.num_programs(0) * BLOCK):
        idx = start + offs
        acc ^= tl.load(src + idx, mask=idx < n_words, other=0, cache_modifier=".cg")
    tl.store(out + pid, tl.reduce(acc, 0, _xor))


class _CleanFlush:
    """Reads a 256 MB buffer through the L2 cache (leaving only unmodified lines there)."""

    def __init__(self) -> None:
        self.buf = torch.zeros(64 * 1024**2, dtype=torch.int32, device="cuda")
        self.grid = 8 * torch.cuda.get_device_properties(0).multi_processor_count
        self.out = torch.empty(self.grid, dtype=torch.int32, device="cuda")

    def __call__(self) -> None:
        read_kernel[(self.grid,)](self.buf, self.out, self.buf.numel(), BLOCK=2048, num_warps=8)


_CLEAN: _CleanFlush | None = None


def median_ms(fn, flush: str = "dirty", warmup: int = 10, rep: int = 60) -> float:
    """Median milliseconds of fn() on the GPU, the L2 cache flushed (``flush``: see the module docstring) before
    each call. ``rep`` is do_bench's time budget in ms for ``dirty`` and the number of calls for ``clean``."""
    if flush == "dirty":
        return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))
    if flush != "clean":
        raise ValueError(f"flush={flush!r}: expected one of {FLUSHES}")
    global _CLEAN
    if _CLEAN is None:
        _CLEAN = _CleanFlush()
    for _ in range(warmup):
        fn()
    calls = max(rep, 20)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    for s, e in zip(starts, ends):
        _CLEAN()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def graph_median_ms(fn, flush: str = "dirty", warmup: int = 10, rep: int = 60) -> float:
    """median_ms of fn() captured in a CUDA graph (after a warm-up call on a side stream) and replayed."""
    fn()
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    ms = median_ms(g.replay, flush, warmup=warmup, rep=rep)
    del g
    return ms


def save_json(path: str, obj) -> None:
    """Write obj as JSON to a temporary file beside ``path``, then rename it into place."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
