"""``dsq verify DST``: check a checkpoint written by ``dsq quantize-checkpoint`` against its manifest."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="check every tensor of a streamed checkpoint against its manifest",
                       description="Check every shard and tensor of DST against dsq_manifest.json (names, "
                                   "dtypes, shapes, CRC-32 checksums), the index, and that the checkpoint loads "
                                   "through dsq's readers (every quantized module rebuilt).")
    p.add_argument("dst", help="checkpoint directory")
    p.add_argument("--load-model", action="store_true",
                   help="also build the model with dsq.load (needs transformers; small models only)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from dsq.streaming.verify import verify_checkpoint

    out = verify_checkpoint(args.dst, load_model=args.load_model)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"ok: {out['shards']} shards, {out['tensors']} tensors ({out['bytes'] / 1e9:.3f} GB) match "
              f"dsq_manifest.json; {out['quantized_modules']} quantized modules load"
              + ("; model built with dsq.load" if out["model_loaded"] else ""))
    return 0
