"""``dsq eval MODEL_OR_DIR``: byte-level perplexity on the committed held-out text (or ``--data FILE``)."""

from __future__ import annotations

import json

from dsq.cli.table import format_table
from dsq.errors import DsqError


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="perplexity of the embedded model or a dsq checkpoint on held-out text",
                       description="Perplexity (bytes) of MODEL_OR_DIR on the tiny model's committed held-out "
                                   "text: 'tiny' (default) is the embedded float model; a folder written by "
                                   "dsq.save is loaded with dsq.load on --backend; another folder with "
                                   "config.json + model.safetensors is a float transformers model.")
    p.add_argument("model", nargs="?", default="tiny", metavar="MODEL_OR_DIR")
    p.add_argument("--data", default=None, metavar="FILE", help="text file to evaluate (default: held-out text)")
    p.add_argument("--backend", default=None, help="backend for dsq checkpoints (default cpu)")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N", help="evaluate the first N bytes only")
    p.add_argument("--batch-size", type=int, default=8, help="windows of 256 bytes per forward pass")
    p.add_argument("--expert-load", action="store_true", help="also print picks per routed expert and layer")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args) -> int:
    from dsq.tiny.data import load_heldout_bytes, load_train_bytes
    from dsq.tiny.evaluate import perplexity, unigram_perplexity
    from dsq.tiny.model import open_model

    data = load_heldout_bytes(args.data)
    model, kind = open_model(args.model, args.backend)
    if kind == "float" and args.backend is not None:
        raise DsqError(f"--backend {args.backend} applies to dsq checkpoints; {args.model!r} is a float model "
                       "that runs in plain torch")
    res = perplexity(model, data, max_tokens=args.max_tokens, batch_size=args.batch_size,
                     progress=not args.json, desc=f"eval {args.model}", track_experts=args.expert_load)
    uni = unigram_perplexity(load_train_bytes(), data, args.max_tokens)
    out = {"model": str(args.model), "kind": kind, "backend": (args.backend or "cpu") if kind == "dsq" else "torch",
           "data": args.data or "held-out (dsq/tiny/heldout.txt)", **res.to_dict(), "unigram_ppl": uni}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    rows = [[out["model"], kind, out["backend"], res.tokens, f"{res.ppl:.4f}", f"{res.bits_per_byte:.4f}",
             f"{uni:.3f}", f"{res.seconds:.1f}"]]
    print(format_table(["model", "kind", "backend", "bytes", "ppl", "bits/byte", "unigram ppl", "seconds"], rows))
    if args.expert_load:
        for name, load in res.expert_load.items():
            total = sum(load) or 1
            print(f"{name}: " + " ".join(f"{100 * c / total:.1f}%" for c in load))
    return 0
