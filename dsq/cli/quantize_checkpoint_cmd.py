"""``dsq quantize-checkpoint SRC DST --recipe R``: stream a safetensors checkpoint through a data-free recipe.

No model is built and no calibration data is used: weight-only, dynamic-activation and FP8_BLOCK schemes.
Reads BF16/FP16 or DeepSeek's native FP8 (block scales multiplied in) shard by shard; memory stays near twice
the largest source shard. Resumable: rerun the same command after a crash. Under ``torchrun`` the ranks split
the shards (``torchrun --nproc-per-node 8 -m dsq quantize-checkpoint ... --backend cuda``).
"""

from __future__ import annotations

import os

from dsq.streaming.formats import FORMAT_NAMES


def add_parser(sub) -> None:
    p = sub.add_parser(
        "quantize-checkpoint", help="quantize a safetensors checkpoint shard by shard (data-free schemes)",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("src", help="source checkpoint directory (safetensors shards, index, config.json)")
    p.add_argument("dst", help="output directory (created at the end; a <DST>.dsq-partial staging dir meanwhile)")
    p.add_argument("--recipe", required=True, help="preset recipe (dsq recipes), scheme name or recipe file")
    p.add_argument("--backend", default="cpu",
                   help="cpu (torch, bit-identical to the reference; default), cpu-reference (numpy oracle), "
                        "cuda, or another installed backend")
    p.add_argument("--format", default="compressed-tensors", choices=FORMAT_NAMES, help="output format")
    p.add_argument("--scale-dtype", default="auto",
                   help="weight scale dtype for every rule: auto (as dsq quantize: the model dtype when it is "
                        "bf16/fp16, which compressed-tensors loaders need), recipe (keep each rule's), float32, "
                        "bfloat16 or float16")
    p.add_argument("--skip-calibrated", action="store_true",
                   help="keep modules whose scheme needs calibration (static activations) float instead of failing")
    p.add_argument("--workers", type=int, default=None,
                   help="compute threads per process (default: torch's thread count on the CPU, 2 with a GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from dsq.streaming.runner import print_summary, quantize_checkpoint, summary_json

    summary = quantize_checkpoint(args.src, args.dst, args.recipe, backend=args.backend, format=args.format,
                                  scale_dtype=args.scale_dtype, skip_calibrated=args.skip_calibrated,
                                  overwrite=args.overwrite, progress=not args.no_progress, workers=args.workers)
    if int(os.environ.get("RANK", "0")) == 0:
        if args.json:
            print(summary_json(summary))
        else:
            print_summary(summary)
    return 0 if summary.get("complete", summary.get("already_complete")) else 1
