"""``dsq demo``: quantize the embedded tiny DeepSeek-V3 model with every preset, evaluate, save, reload."""

from __future__ import annotations

from dsq.tiny.demo import DEFAULT_MAX_TOKENS, Row


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="quantize the embedded tiny DeepSeek-V3 with every preset and compare",
                       description="Quantize the embedded tiny DeepSeek-V3 model with every preset recipe on "
                                   "the best available backend (cuda, ascend, else cpu), evaluate held-out "
                                   "perplexity, save and reload each checkpoint (checking the reloaded logits), "
                                   "print the comparison table and write report.md, results.json and a "
                                   "size-vs-perplexity plot to --out.")
    p.add_argument("--backend", default=None, help="backend name or alias (default: best available)")
    p.add_argument("--out", default="dsq-demo", metavar="DIR", help="output folder (default ./dsq-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous report in --out")
    p.add_argument("--presets", nargs="+", default=None, metavar="RECIPE",
                   help="preset recipes to run (default: all of `dsq recipes`)")
    p.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, metavar="N",
                   help=f"held-out bytes to evaluate (default {DEFAULT_MAX_TOKENS})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from dsq.tiny.demo import run_demo
    from dsq.tiny.report import format_results

    res = run_demo(backend=args.backend, out=args.out, overwrite=args.overwrite, presets=args.presets,
                   max_tokens=args.max_tokens, progress=not args.no_progress)
    rows = [Row(**{k: v for k, v in r.items() if k != "met"}) for r in res["rows"]]
    print()
    print(format_results(rows))
    print(f"\nbackend {res['backend']}; {res['max_tokens']} held-out bytes; unigram baseline ppl "
          f"{res['unigram_ppl']:.3f}; total {res['total_seconds']:.0f} s; report: {args.out}/report.md")
    return 1 if any(r.error for r in rows) else 0
