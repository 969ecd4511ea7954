"""Perplexity of a byte-level causal LM on a text, the unigram baseline, and per-expert routing load.

Perplexity: the text's bytes ``t_0 .. t_{N-1}`` are cut into windows of ``context`` bytes that overlap
by one byte (window ``i`` starts at ``i * (context - 1)``), so every byte after the first is predicted
exactly once, from the bytes before it in its window (between 0 and ``context - 1`` of them). With
``nll_j = -log softmax(logits_{j-1})[t_j]`` computed in float32 (float64 accumulation),
``ppl = exp(sum_j nll_j / (N - 1))``.

Unigram baseline: byte frequencies of the training text with add-one smoothing,
``p(b) = (count(b) + 1) / (n + 256)``, and ``ppl = exp(-mean_j log p(t_j))`` over the same predicted
bytes ``t_1 .. t_{N-1}``: what a model that ignores context entirely would score.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from dsq.errors import DsqError
from dsq.tiny.model import CONTEXT, count_expert_load


class EvalError(DsqError, ValueError):
    """Evaluation input that cannot give a perplexity (too short, bad options, model output shape)."""


@dataclass
class EvalResult:
    """Outcome of :func:`perplexity`."""

    ppl: float  #: exp(mean nll) over the predicted bytes
    nll: float  #: mean negative log-likelihood, nats per byte
    predicted: int  #: number of predicted bytes (N - 1)
    tokens: int  #: bytes of text evaluated (N)
    seconds: float  #: wall time of the forward passes
    expert_load: dict[str, list[int]] = field(default_factory=dict)  #: router -> picks per routed expert

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bits_per_byte"] = self.bits_per_byte
        return d


def _windows(n: int, context: int) -> list[tuple[int, int]]:
    """(start, stop) of windows of ``context`` bytes overlapping by one, covering 0..n-1."""
    out, start = [], 0
    while start < n - 1:
        out.append((start, min(start + context, n)))
        start += context - 1
    return out


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids)
    logits = out.logits if hasattr(out, "logits") else out
    if not isinstance(logits, torch.Tensor) or logits.shape[:2] != ids.shape:
        raise EvalError(f"model returned logits of shape {getattr(logits, 'shape', None)} for input "
                        f"{tuple(ids.shape)}; expected [batch, seq, vocab]")
    return logits


def perplexity(model, data: bytes | torch.Tensor, *, context: int = CONTEXT, batch_size: int = 8,
               max_tokens: int | None = None, progress: bool = True, desc: str = "eval",
               track_experts: bool = False) -> EvalResult:
    """Perplexity of ``model`` (``model(input_ids=[B, T]) -> logits [B, T, 256]``) on ``data``.

    ``data`` is raw bytes or an int64 tensor of token ids; ``max_tokens`` keeps its first N tokens.
    ``track_experts`` also counts routed-expert picks per MoE layer (float transformers models).
    """
    ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64) if isinstance(data, bytes) \
        else data.reshape(-1).to(torch.int64)
    if max_tokens is not None:
        if max_tokens < 2:
            raise EvalError(f"max_tokens must be at least 2, got {max_tokens}")
        ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise EvalError(f"evaluation text has {ids.numel()} tokens; need at least 2")
    if context < 2 or batch_size < 1:
        raise EvalError(f"context must be >= 2 and batch_size >= 1, got {context}, {batch_size}")
    wins = _windows(ids.numel(), context)
    # full-length windows are batched together; a short final window runs on its own
    groups: list[list[tuple[int, int]]] = []
    full = [w for w in wins if w[1] - w[0] == context]
    for i in range(0, len(full), batch_size):
        groups.append(full[i:i + batch_size])
    groups += [[w] for w in wins if w[1] - w[0] != context]

    total, count = 0.0, 0
    t0 = time.perf_counter()
    ctx = count_expert_load(model) if track_experts else _null()
    with ctx as load, torch.inference_mode(), tqdm(total=ids.numel() - 1, desc=desc, unit="tok",
                                                      disable=not progress, leave=False) as bar:
        for group in groups:
            batch = torch.stack([ids[a:b] for a, b in group])
            logits = _logits(model, batch).float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            nll = -logp.gather(-1, batch[:, 1:, None]).squeeze(-1)
            total += float(nll.double().sum())
            count += nll.numel()
            bar.update(nll.numel())
    seconds = time.perf_counter() - t0
    mean = total / count
    if not math.isfinite(mean):
        raise EvalError(f"non-finite negative log-likelihood ({mean}); the model produced NaN/Inf logits")
    loads = {k: v.tolist() for k, v in load.items()} if track_experts else {}
    return EvalResult(ppl=math.exp(mean), nll=mean, predicted=count, tokens=int(ids.numel()),
                      seconds=seconds, expert_load=loads)


class _null:
    def __enter__(self):
        return {}

    def __exit__(self, *exc):
        return False


def unigram_counts(train: bytes) -> torch.Tensor:
    """float64 [256] byte counts of the training text."""
    return torch.bincount(torch.frombuffer(bytearray(train), dtype=torch.uint8).to(torch.int64),
                          minlength=256).double()


def unigram_perplexity(train: bytes, data: bytes, max_tokens: int | None = None) -> float:
    """Perplexity of the add-one-smoothed byte unigram of ``train`` on ``data[1:max_tokens]``."""
    counts = unigram_counts(train)
    logp = torch.log((counts + 1) / (counts.sum() + 256))
    ids = torch.frombuffer(bytearray(data[:max_tokens] if max_tokens else data), dtype=torch.uint8).long()
    if ids.numel() < 2:
        raise EvalError("evaluation text needs at least 2 bytes")
    return math.exp(-float(logp[ids[1:]].mean()))
