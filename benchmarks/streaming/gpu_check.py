"""On a GPU machine: the cuda engine's streamed checkpoints equal the CPU fast path's, tensor for tensor.

    PYTHONPATH=backends:conformance:. python3 benchmarks/streaming/gpu_check.py /tmp/gpu-check
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors import safe_open

from dsq.streaming import quantize_checkpoint, write_synthetic


def _read(d: Path) -> dict[str, torch.Tensor]:
    out = {}
    for p in sorted(d.glob("*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def main(work: str) -> int:
    w = Path(work)
    write_synthetic(w / "src", "tiny")
    bad = 0
    for recipe, extra in (("deepseek-w4a8", {"skip_calibrated": True}), ("w4a16", {}), ("deepseek-w4afp8", {})):
        for fmt in ("compressed-tensors", "ascend") if recipe == "deepseek-w4a8" else ("compressed-tensors",):
            outs = {}
            for backend in ("cpu", "cuda"):
                dst = w / f"{recipe}-{fmt}-{backend}"
                quantize_checkpoint(w / "src", dst, recipe, backend=backend, format=fmt, progress=False, **extra)
                outs[backend] = _read(dst)
            a, b = outs["cpu"], outs["cuda"]
            diff = [k for k in a if k not in b or a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
                    or not torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8))]
            bad += len(diff) + len(set(b) - set(a))
            print(f"{recipe} {fmt}: {len(a)} tensors, {len(diff)} differ between cpu and cuda"
                  + (f" (e.g. {diff[:3]})" if diff else ""), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/dsq-gpu-check"))
