"""Fixtures for tests/model: the float tiny DeepSeek-V3 (with an MTP layer) and its reference logits, built
once per test module; tests quantize deep copies."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

from model_builders import logits, tiny_deepseek, token_batches  # noqa: E402


@pytest.fixture(scope="module")
def float_deepseek():
    return tiny_deepseek()


@pytest.fixture(scope="module")
def calib():
    return token_batches(n=2)


@pytest.fixture(scope="module")
def eval_ids():
    return token_batches(n=1, seed=7)[0]


@pytest.fixture(scope="module")
def float_logits(float_deepseek, eval_ids):
    return logits(float_deepseek, eval_ids)


@pytest.fixture()
def deepseek(float_deepseek):
    """A fresh deep copy to quantize."""
    return copy.deepcopy(float_deepseek)


@pytest.fixture(autouse=True)
def _one_thread():
    """These shapes are tiny: on CI's 2 shared cores, multi-threaded torch spends its time synchronising
    (25x slower measured), so run single-threaded and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
