"""The training script is deterministic for a seed and writes loadable bf16 weights (3-step runs)."""

import json

import torch

from dsq.tiny.model import load_model, routers
from dsq.tiny.train import parse_args, train


def _run(tmp_path, name: str, seed: int) -> tuple[bytes, dict]:
    out = tmp_path / name
    args = parse_args(["--steps", "3", "--batch", "2", "--seed", str(seed), "--out", str(out),
                       "--summary", str(tmp_path / f"{name}.json"), "--eval-tokens", "300", "--log-every", "100"])
    train(args)
    return (out / "model.safetensors").read_bytes(), json.loads((tmp_path / f"{name}.json").read_text())


def test_tiny_training_is_deterministic(tmp_path):
    a, sa = _run(tmp_path, "a", 0)
    b, sb = _run(tmp_path, "b", 0)
    c, _ = _run(tmp_path, "c", 1)
    assert a == b and sa["heldout"]["ppl_bf16"] == sb["heldout"]["ppl_bf16"]
    assert a != c
    assert sa["tokens"] == 3 * 2 * 256 and sa["heldout"]["bytes"] == 300
    model = load_model(tmp_path / "a")
    for _, r in routers(model):  # 3 balance updates of +-0.005 each, then rounded to bf16
        b = r.e_score_correction_bias
        assert b.dtype == torch.float32 and torch.equal(b, b.bfloat16().float())
        assert 0 < b.abs().max().item() <= 0.0151
