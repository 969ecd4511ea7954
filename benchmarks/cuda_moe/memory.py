"""Device bytes of a DeepSeek-V3 MoE layer's routed experts on the cuda backend, per scheme and layout mode.

    PYTHONPATH=.:backends python benchmarks/cuda_moe/memory.py [--experts 2] [--out memory.md]

Runs on CPU (no GPU needed: the layouts are torch ops): synthetic experts in the canonical packed format
(benchmarks/cuda_moe/synth.py) at the real shapes (gate_up [E, 4096, 7168], down [E, 7168, 2048]), then
``dsq_cuda.moe.prepare_all`` (what ``Backend.prepare`` builds before serving) and ``dsq_cuda.moe.device_bytes``
(each storage counted once). Columns are the bytes after prepare as multiples of the canonical bytes (the
checkpoint's), in each mode:

    default     the decode kernels share the one-token GEMV's row tiles (moe_decode DEFAULTS shared = 1)
    own         shared = 0: pair tiles / slabs for decode and row tiles for the GEMV, as before v15
    no GEMV     moe_gemv.GEMV_MAX_T = 0 with shared = 0: the GEMV's row tiles are not built
    GEMV on canonical   moe_gemv.CANONICAL: the GEMV reads the canonical words (decode on its own layouts)
    released    default (prefill on the row tiles too: moe.PREFILL_ROW_TILES, on since cuda-moe.md v16), then
                moe_memory.release_canonical (the canonical codes moved off the device; "-" where a path still
                reads them)

The ratios do not depend on E; the DeepSeek-V3 column scales the default mode to 58 MoE layers x 256 experts.
"""

from __future__ import annotations

import argparse
import contextlib

import synth  # benchmarks/cuda_moe/synth.py (the script's folder is on sys.path)
import torch

from dsq.errors import UnsupportedError
from dsq.schemes import get_scheme
from dsq_cuda import moe_decode, moe_gemv
from dsq_cuda.moe import prepare_all
from dsq_cuda.moe_memory import device_bytes, release_canonical

SCHEMES = ["W4A16", "W4A8_DYNAMIC", "W4AFP8", "W4A16_ASYM", "W8A16", "W8A8", "W8A8_DYNAMIC", "FP8_BLOCK"]
HIDDEN, INTER, LAYERS, EXPERTS = 7168, 2048, 58, 256
MODES = {"default": {}, "own": {"shared": 0}, "no GEMV": {"shared": 0, "GEMV_MAX_T": 0},
         "GEMV on canonical": {"CANONICAL": True}, "released": {"release": True}}


@contextlib.contextmanager
def mode(settings: dict):
    saved = (moe_decode.DEFAULTS["shared"], moe_gemv.GEMV_MAX_T, moe_gemv.CANONICAL)
    moe_decode.DEFAULTS["shared"] = settings.get("shared", 1)
    moe_gemv.GEMV_MAX_T = settings.get("GEMV_MAX_T", 1)
    moe_gemv.CANONICAL = settings.get("CANONICAL", False)
    try:
        yield
    finally:
        moe_decode.DEFAULTS["shared"], moe_gemv.GEMV_MAX_T, moe_gemv.CANONICAL = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    lines = ["| scheme | canonical MB / expert | " + " | ".join(MODES)
             + " | DeepSeek-V3 routed experts: canonical | after prepare (default) |",
             "|---|---|" + "---|" * len(MODES) + "---|---|"]
    for name in SCHEMES:
        scheme = get_scheme(name)
        cells, canon = [], 0
        for settings in MODES.values():
            ex = synth.experts(scheme, args.experts, HIDDEN, INTER, torch.device("cpu"))
            canon = device_bytes(ex)["canonical"]
            with mode(settings):
                prepare_all(ex, scheme, torch.device("cpu"))
                if settings.get("release"):
                    try:
                        release_canonical(ex, scheme, to="meta")  # meta: no data, counted 0
                    except UnsupportedError:
                        cells.append("-")
                        continue
            b = device_bytes(ex)
            cells.append(f"{(b['canonical'] + b['layouts']) / canon:.2f}x")
        per_expert = canon / args.experts
        canon_total = per_expert * EXPERTS * LAYERS
        total = canon_total * float(cells[0][:-1])
        lines.append(f"| {name} | {per_expert / 2**20:.1f} | " + " | ".join(cells)
                     + f" | {canon_total / 1e9:.0f} GB | {total / 1e9:.0f} GB |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
