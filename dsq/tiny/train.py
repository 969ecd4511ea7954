"""Train the embedded tiny DeepSeek-V3 model on CPU: ``python -m dsq.tiny.train [--steps N] [--out DIR]``.

Objective: next-byte cross-entropy on random windows of ``CONTEXT + 1`` bytes of the committed training
text (:mod:`dsq.tiny.data`), drawn with a seeded generator. AdamW (betas 0.9/0.95, weight decay 0.1 on
matrices only), linear warm-up then cosine decay to 10% of the peak learning rate, gradient clipping at
1.0, float32 throughout, a fixed number of threads: the same seed and thread count give the same weights.

Expert balance: DeepSeek-V3's auxiliary-loss-free rule. After every step each router's correction bias
(added to the sigmoid scores only when choosing experts, never to the mixing weights) moves by
``bias_e += gamma * sign(mean_load - load_e)``, where ``load_e`` counts the step's picks of expert e.

Output: ``config.json`` and ``model.safetensors`` (bf16 weights; router correction biases bf16-rounded, stored
fp32) in ``--out``
(default ``dsq/tiny/model/``), written through a temporary folder and renamed into place, and ``--summary``
(default ``dsq/tiny/training_summary.json``: steps, tokens, wall time, machine, held-out perplexity,
per-expert load).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from dsq.tiny.data import load_heldout_bytes, load_train_bytes
from dsq.tiny.evaluate import perplexity, unigram_perplexity
from dsq.tiny.model import CONTEXT, HERE, count_expert_load, load_model, routers, tiny_config


def _lr(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_bf16(model, out: Path) -> None:
    """Write config.json + model.safetensors atomically into ``out``.

    Every tensor is rounded to bf16. The router correction biases are rounded to bf16 too and then stored as
    float32 (transformers keeps that buffer in fp32); the shipped weights were made this way.
    """
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.bfloat16)
    for _, r in routers(model):
        r.e_score_correction_bias.data = r.e_score_correction_bias.data.float()  # bf16 values, fp32 storage
    with tempfile.TemporaryDirectory(dir=out, prefix=".save-") as tmp:
        model.save_pretrained(tmp)
        for name in ("config.json", "model.safetensors"):
            os.chmod(Path(tmp) / name, 0o644)  # package data, readable by everyone
            os.replace(Path(tmp) / name, out / name)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    from transformers import DeepseekV3ForCausalLM

    text = load_train_bytes()
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).to(torch.int64)
    held = load_heldout_bytes()
    model = DeepseekV3ForCausalLM(tiny_config())
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(args.seed)
    rlist = routers(model)
    print(f"params {n_params:,}; train bytes {len(text):,}; steps {args.steps} x batch {args.batch} x "
          f"{CONTEXT} = {args.steps * args.batch * CONTEXT:,} tokens; threads {args.threads}", flush=True)
    t0 = time.perf_counter()
    ema = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, args.steps, args.lr, args.warmup)
        starts = torch.randint(0, data.numel() - CONTEXT - 1, (args.batch,), generator=gen)
        batch = torch.stack([data[s:s + CONTEXT + 1] for s in starts.tolist()])
        with count_expert_load(model) as load:
            logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for name, r in rlist:
                c = load[name].float()
                r.e_score_correction_bias += args.bias_gamma * torch.sign(c.mean() - c)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % args.log_every == 0 or step == 0:
            el = time.perf_counter() - t0
            imb = max(float(v.max()) / max(1.0, float(v.float().mean())) for v in load.values())
            msg = (f"step {step + 1}/{args.steps} loss {loss.item():.4f} ema {ema:.4f} "
                   f"lr {opt.param_groups[0]['lr']:.2e} max/mean expert load {imb:.2f} "
                   f"{(step + 1) * args.batch * CONTEXT / el:.0f} tok/s elapsed {el / 60:.1f} min")
            if (step + 1) % (args.log_every * 10) == 0:
                model.eval()
                r = perplexity(model, held, max_tokens=8192, progress=False)
                model.train()
                msg += f" held-out[:8192] ppl {r.ppl:.3f}"
            print(msg, flush=True)
    train_seconds = time.perf_counter() - t0
    out = Path(args.out)
    save_bf16(model, out)
    shipped = load_model(out)
    full = perplexity(shipped, held, progress=False, track_experts=True, max_tokens=args.eval_tokens)
    uni = unigram_perplexity(text, held, args.eval_tokens)
    summary = {
        "steps": args.steps, "batch": args.batch, "context": CONTEXT, "tokens": args.steps * args.batch * CONTEXT,
        "lr": args.lr, "warmup": args.warmup, "bias_gamma": args.bias_gamma, "seed": args.seed,
        "threads": args.threads, "params": n_params, "train_seconds": round(train_seconds, 1),
        "final_train_loss_ema": round(ema, 4),
        "heldout": {"bytes": full.tokens, "ppl_bf16": full.ppl, "bits_per_byte": full.bits_per_byte,
                    "unigram_ppl": uni, "expert_load": full.expert_load},
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "date": time.strftime("%Y-%m-%d"),
    }
    dest = Path(args.summary)
    tmp = dest.with_name("." + dest.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, dest)
    print(json.dumps(summary, indent=2), flush=True)
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Train the embedded tiny DeepSeek-V3 model (CPU, deterministic).")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--bias-gamma", type=float, default=5e-3, help="aux-loss-free balance step size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--out", default=str(HERE / "model"), help="folder for config.json/model.safetensors")
    ap.add_argument("--summary", default=str(HERE / "training_summary.json"), help="training summary JSON")
    ap.add_argument("--eval-tokens", type=int, default=None, help="held-out bytes for the final eval (all)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
