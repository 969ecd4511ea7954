"""Does the dense decode GEMM give the same bits call after call? With and without PDL (dsq_cuda.mm.PDL).

    python benchmarks/cuda/repeat_probe.py            (a CUDA GPU; PYTHONPATH holds backends/)

The tensor-core decode kernel sums a row block's split-K partials with float32 atomic adds (FIXUP in
dsq_cuda.mma_decode_kernel), in the order the programs arrive. Two partials give the same sum in either order
(a + b = b + a); three or more need not. This script calls ``mm.matmul`` REPEAT times per case and prints how
many distinct outputs it saw, with PDL off and on, next to the launch's split-K count, so a difference between
PDL and no PDL can be told apart from the order of the atomics.
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
    ap.add_argument("--ms", default="1,4,16")
    ap.add_argument("--schemes", default="W4A16,W4AFP8,W4A8_DYNAMIC")
    args = ap.parse_args()
    backend = dsq.get_backend("cuda")
    print("| K x N | M | scheme | split-K | distinct, PDL off | distinct, PDL on | max abs diff off vs on |")
    print("|---|---|---|---|---|---|---|")
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
                split = configs.pick_mma(m, n, k, sl, scheme.weight_bits, "cuda:0").split_k
                mm.PDL = False
                off, y_off = distinct(x, pw, scheme, args.repeat)
                mm.PDL = True
                on, y_on = distinct(x, pw, scheme, args.repeat)
                mm.PDL = False
                diff = (y_off.float() - y_on.float()).abs().max().item()
                print(f"| {k} x {n} | {m} | {name} | {split} | {off} | {on} | {diff:.3g} |", flush=True)
    print(f"PDL available: {pdl.AVAILABLE}; {args.repeat} calls a cell")


if __name__ == "__main__":
    main()
