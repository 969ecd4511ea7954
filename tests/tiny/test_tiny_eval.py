"""Perplexity math, the unigram baseline, and the shipped model's numbers on a fixed held-out slice."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from dsq.cli import main
from dsq.tiny.data import load_heldout_bytes, load_train_bytes
from dsq.tiny.evaluate import EvalError, _windows, perplexity, unigram_counts, unigram_perplexity
from dsq.tiny.model import load_model

#: the model card's (docs/tiny-deepseek.md) perplexity of the shipped weights on held-out bytes [0, 4096)
CARD_SLICE_BYTES = 4096
CARD_SLICE_PPL = 11.681
MODEL_CARD = Path(__file__).resolve().parents[2] / "docs" / "tiny-deepseek.md"


class _Fixed(torch.nn.Module):
    """Returns the same log-probabilities at every position."""

    def __init__(self, logp: torch.Tensor):
        super().__init__()
        self.logp = logp

    def forward(self, input_ids):
        return self.logp.expand(*input_ids.shape, 256).clone()


@pytest.fixture(scope="module")
def shipped():
    return load_model()


def test_tiny_windows_predict_every_byte_once():
    for n, ctx in [(10, 4), (256, 256), (257, 256), (1000, 64), (2, 2)]:
        predicted = [j for a, b in _windows(n, ctx) for j in range(a + 1, b)]
        assert predicted == list(range(1, n))
        assert all(b - a <= ctx for a, b in _windows(n, ctx))


def test_tiny_perplexity_math_uniform_and_unigram():
    held = load_heldout_bytes()[:700]
    res = perplexity(_Fixed(torch.zeros(256)), held, context=64, progress=False)
    assert res.ppl == pytest.approx(256.0, rel=1e-6) and res.predicted == 699
    train = load_train_bytes()
    c = unigram_counts(train)
    logp = torch.log((c + 1) / (c.sum() + 256)).float()
    uni = perplexity(_Fixed(logp), held, context=100, progress=False)
    assert uni.ppl == pytest.approx(unigram_perplexity(train, held), rel=1e-5)


def test_tiny_perplexity_matches_transformers_loss(shipped):
    held = load_heldout_bytes()
    ids = torch.tensor(list(held[:200]))[None]
    with torch.no_grad():
        loss = shipped(input_ids=ids, labels=ids).loss
    assert perplexity(shipped, held, max_tokens=200, progress=False).ppl == pytest.approx(math.exp(loss), rel=1e-4)


def test_tiny_bad_eval_inputs():
    with pytest.raises(EvalError, match="at least 2"):
        perplexity(_Fixed(torch.zeros(256)), b"abc", max_tokens=1, progress=False)
    with pytest.raises(EvalError, match="logits of shape"):
        perplexity(lambda input_ids: torch.zeros(1, 3), b"abcdef", progress=False)


def test_tiny_slice_below_unigram_and_experts_used(shipped):
    held = load_heldout_bytes()
    res = perplexity(shipped, held, max_tokens=1024, progress=False, track_experts=True)
    uni = unigram_perplexity(load_train_bytes(), held, 1024)
    assert math.isfinite(res.ppl) and res.ppl < uni / 3
    assert len(res.expert_load) == 3  # MoE layers 1..3
    fed = sum(b - a for a, b in _windows(1024, 256))  # windows overlap by one byte
    for name, load in res.expert_load.items():
        assert sum(load) == 2 * fed, name  # top-2 routing of every byte fed to the model
        assert min(load) > 0, f"{name} has an unused routed expert: {load}"


def test_tiny_shipped_ppl_matches_model_card(shipped):
    # the number the card states, read from the card itself (its results table row for the test slice)
    row = re.search(r"^\| first 4,096 bytes[^|]*\| \*\*([0-9.]+)\*\* \|", MODEL_CARD.read_text(), re.M)
    assert row, f"{MODEL_CARD} has no results row for the first 4,096 held-out bytes"
    assert float(row.group(1)) == CARD_SLICE_PPL
    res = perplexity(shipped, load_heldout_bytes(), max_tokens=CARD_SLICE_BYTES, progress=False)
    assert res.ppl == pytest.approx(CARD_SLICE_PPL, rel=0.01)


def test_tiny_eval_cli_json(capsys):
    assert main(["eval", "tiny", "--max-tokens", "300", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = perplexity(load_model(), load_heldout_bytes(), max_tokens=300, progress=False)
    assert out["kind"] == "float" and out["tokens"] == 300
    assert out["ppl"] == pytest.approx(ref.ppl, rel=1e-9)
    assert main(["eval", "/nonexistent-dir"]) == 2
