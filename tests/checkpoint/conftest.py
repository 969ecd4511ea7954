"""Fixtures for checkpoint tests: the small DeepseekV3ForCausalLM of ckpt_builders, quantized once per
(recipe, dtype) and shared by the tests of a session (quantizing is the slow part)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import dsq

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parent))

from ckpt_builders import CALIB, tiny_model, with_scale_dtype  # noqa: E402

_CACHE: dict = {}


@pytest.fixture(scope="session")
def quantized():
    """quantized(recipe, dtype=torch.float32) -> a cached quantized tiny model (scale_dtype = model dtype)."""

    def get(recipe: str, dtype=torch.float32):
        key = (recipe, dtype)
        if key not in _CACHE:
            model = tiny_model(dtype)
            sd = str(dtype).removeprefix("torch.")
            dsq.quantize(model, with_scale_dtype(recipe, sd), backend="cpu", calib_data=CALIB, progress=False)
            _CACHE[key] = model
        return _CACHE[key]

    return get
