"""Does the dense decode GEMM give the same bits call after call? By how split-K partials meet, and under PDL.

    python benchmarks/cuda/repeat_probe.py            (a CUDA GPU; PYTHONPATH holds backends/)

The tensor-core decode kernel finishes a row block's split-K (or stream-K) partial sums in the kernel (FIXUP in
dsq_cuda.mma_decode_kernel). With slots (``mm.FIXUP_SLOTS``, taken under ``torch.use_deterministic_algorithms``)
each partial goes to a slot of its own and the last program sums the slots in slot order; by default they are
added with float32 atomics in the order the programs arrive. Two partials give the same sum in either order (a + b = b + a); three or more need not. This script calls
``mm.matmul`` REPEAT times per case and prints how many distinct outputs it saw in three modes: slots,
atomics (the default), and slots with PDL (``mm.PDL`` at every M), next to the launch's split-K count.
"""

from __future__ import annotations

import argparse

import torch

import dsq
from dsq_cuda import configs, mm, pdl


def distinct(x, pw, scheme, repeat: int) -> tuple[int, torch.Tensor]:
    """How many different results ``repeat`` calls of ``mm.matmul(x, pw, scheme)`` gave, and the first."""
    first = mm.matmul(x, pw, scheme).clone()
    seen = {first.view(torch.int16).cpu().numpy().tobytes()}
    for _ in range(repeat - 1):
        seen.add(mm.matmul(x, pw, scheme).view(torch.int16).cpu().numpy().tobytes())
    return len(seen), first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--shapes", default="2048x1536,7168x18432", help="KxN, comma-separated")
    ap.add_argument("--ms", default="1,4,16,64")
    ap.add_argument("--schemes", default="W4A16,W4AFP8,W4A8_DYNAMIC")
    args = ap.parse_args()
    backend = dsq.get_backend("cuda")
    modes = {"slots": (True, False), "atomics": (False, False), "slots + PDL": (True, True)}
    print("| K x N | M | scheme | split-K | " + " | ".join(f"distinct, {m}" for m in modes) +
          " | max abs diff slots vs atomics |")
    print("|---|---|---|---|" + "---|" * (len(modes) + 1))
    mm.PDL_MAX_M = 1 << 20
    for shape in args.shapes.split(","):
        k, n = (int(v) for v in shape.split("x"))
        g = torch.Generator().manual_seed(k + n)
        w = torch.randn(n, k, generator=g) * 0.05
        for name in args.schemes.split(","):
            scheme = dsq.get_scheme(name)
            pw = backend.quantize_weight(w.cuda(), scheme)
            for m in (int(v) for v in args.ms.split(",")):
                x = torch.randn(m, k, generator=g).to(torch.bfloat16).cuda()
                sl = mm.I8_SW if mm._int8_mma(scheme) else 32  # (the pair tiles of group 128: 32 words)
                cfg = configs.pick_mma(m, n, k, sl, scheme.weight_bits, "cuda:0")
                stream = configs.mma_stream_programs(cfg, n, k, scheme.weight_bits, "cuda:0")
                counts, firsts = [], []
                for slots, pdl_on in modes.values():
                    mm.FIXUP_SLOTS, mm.PDL = slots, pdl_on
                    c, y = distinct(x, pw, scheme, args.repeat)
                    counts.append(str(c))
                    firsts.append(y)
                mm.FIXUP_SLOTS, mm.PDL = None, False
                diff = (firsts[0].float() - firsts[1].float()).abs().max().item()
                how = f"stream-K, {stream} programs" if stream else str(cfg.split_k)
                print(f"| {k} x {n} | {m} | {name} | {how} | " + " | ".join(counts) + f" | {diff:.3g} |", flush=True)
    print(f"PDL available: {pdl.AVAILABLE}; {args.repeat} calls a cell")


if __name__ == "__main__":
    main()
