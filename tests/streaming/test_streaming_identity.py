"""Streaming a checkpoint gives exactly the tensors dsq.quantize + dsq.save write for the same model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from streaming_helpers import assert_same_tensors, read_all, tiny_deepseek_model

import dsq
from dsq.checkpoint import compressed_tensors as ct
from dsq.checkpoint import msmodelslim as ms
from dsq.checkpoint.entries import QuantEntry
from dsq.recipes import Recipe, Rule
from dsq.streaming import quantize_checkpoint, verify_checkpoint
from dsq.streaming.synthetic import write_synthetic

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_source(tmp_path_factory):
    """A tiny DeepSeek-V3 saved by transformers in several shards (per-expert names on disk)."""
    model = tiny_deepseek_model()
    src = tmp_path_factory.mktemp("hf") / "src"
    model.save_pretrained(src, max_shard_size="150KB")
    assert len(list(src.glob("*.safetensors"))) > 3
    return model, src


def _ascend_recipe() -> Recipe:
    """deepseek-w4a8 with dynamic MLA (the data-free variant both paths can run without calibration)."""
    base = dsq.get_recipe("deepseek-w4a8")
    rules = tuple(Rule(r.targets, dsq.get_scheme("W8A8_DYNAMIC", scale_rule="qmax") if r.scheme.static_activations
                       else r.scheme, r.note) for r in base.rules)
    return Recipe(rules, base.ignore, "w4a8-dynamic-mla", "", base.optional)


def _normalised(qcfg: dict | None):
    """quantization_config without order: groups as (args, sorted targets), sorted (dsq.save lists modules in
    model order, streaming in checkpoint order; the sets are what loaders use)."""
    if qcfg is None:
        return None
    groups = sorted(json.dumps({**g, "targets": sorted(g["targets"])}, sort_keys=True)
                    for g in qcfg["config_groups"].values())
    return {**{k: v for k, v in qcfg.items() if k != "config_groups"}, "config_groups": groups}


@pytest.mark.parametrize("recipe,fmt,scale_dtype", [
    ("deepseek-w4afp8", "compressed-tensors", "auto"),
    ("w4a16", "compressed-tensors", "auto"),
    ("w8a16", "compressed-tensors", "auto"),
    (None, "ascend", "auto"),
    (None, "ascend", "float32"),
])
def test_stream_equals_quantize_then_save(hf_source, tmp_path, recipe, fmt, scale_dtype):
    """Same recipe and scale dtype policy on both paths (defaults: scale dtype = the bf16 model's)."""
    model, src = hf_source
    r = recipe or _ascend_recipe()
    q = dsq.quantize(copy.deepcopy(model), r, backend="cpu", scale_dtype=scale_dtype, progress=False)
    dsq.save(q, tmp_path / "saved", format=fmt)
    summary = quantize_checkpoint(src, tmp_path / "streamed", r, format=fmt, scale_dtype=scale_dtype,
                                  progress=False)
    assert summary["complete"] and summary["shards_done"] == summary["shards_total"] > 3
    assert_same_tensors(read_all(tmp_path / "streamed"), read_all(tmp_path / "saved"))
    a = json.loads((tmp_path / "saved" / "config.json").read_text()).get("quantization_config")
    b = json.loads((tmp_path / "streamed" / "config.json").read_text()).get("quantization_config")
    assert _normalised(a) == _normalised(b)
    if fmt == "ascend":
        assert json.loads((tmp_path / "saved" / ms.DESCRIPTION).read_text()) == \
            json.loads((tmp_path / "streamed" / ms.DESCRIPTION).read_text())
    # the streamed checkpoint verifies and loads back into a runnable model with the same outputs
    assert verify_checkpoint(tmp_path / "streamed", load_model=True)["model_loaded"]
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    y1 = dsq.load(tmp_path / "saved")(ids).logits
    y2 = dsq.load(tmp_path / "streamed")(ids).logits
    assert torch.equal(y1, y2)


def test_auto_scale_dtype_is_the_model_dtype_for_compressed_tensors(hf_source, tmp_path):
    """`--recipe w4a16` on a bf16 model: scales become bf16 (what CT loaders keep), not the preset's float32."""
    _, src = hf_source
    quantize_checkpoint(src, tmp_path / "o", "w4a16", progress=False)
    t = read_all(tmp_path / "o")
    assert t["model.layers.0.self_attn.o_proj.weight_scale"].dtype == torch.bfloat16
    with pytest.raises(dsq.CheckpointError, match="scale_dtype"):
        quantize_checkpoint(src, tmp_path / "o2", "w4a16", scale_dtype="recipe", progress=False)
    assert not (tmp_path / "o2").exists()


def _dequant_np(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    n, k = q.shape
    bs = s.numpy()[np.arange(n)[:, None] // 128, np.arange(k)[None, :] // 128]
    return torch.from_numpy((q.to(torch.float32).numpy() * bs).astype(np.float32))


@pytest.mark.parametrize("fmt,recipe", [("compressed-tensors", "deepseek-w4afp8"), ("ascend", None)])
def test_fp8_source_equals_reference_on_dequantized_weights(tmp_path, fmt, recipe):
    """From DeepSeek FP8: every quantized module equals the numpy reference run on float32(q) * block scale,
    written by the checkpoint package's builders; everything else is copied byte for byte."""
    write_synthetic(tmp_path / "src", "tiny")
    r = recipe or _ascend_recipe()
    quantize_checkpoint(tmp_path / "src", tmp_path / "out", r, format=fmt, progress=False)
    out = read_all(tmp_path / "out")
    src = read_all(tmp_path / "src")
    side = json.loads((tmp_path / "out" / "dsq_quantization.json").read_text())
    schemes = {m: dsq.QuantScheme.from_dict(s) for m, s in side["linears"].items()}
    for block, info in side["experts"].items():
        for e in range(info["num_experts"]):
            for p in ("gate_proj", "up_proj", "down_proj"):
                schemes[f"{block}.{e}.{p}"] = None  # from the recipe, below
    ref = dsq.get_backend("cpu-reference")
    from dsq.streaming.plan import make_plan
    from dsq.streaming.source import SourceCheckpoint

    plan = make_plan(SourceCheckpoint(tmp_path / "src"), r, scale_dtype="bfloat16")  # auto: the bf16 model's
    jobs = {j.name: j for sp in plan.shards for j in sp.jobs if j.kind == "quantize"}
    assert set(jobs) == set(schemes) and len(jobs) > 30
    expected = {}
    for m, job in jobs.items():
        w = _dequant_np(src[f"{m}.weight"], src[f"{m}.weight_scale_inv"])
        entry = QuantEntry(m, job.scheme, ref.quantize_weight(w, job.scheme))
        if fmt == "compressed-tensors":
            expected.update(ct.entry_tensors(ct.storable_entry(entry)))
        else:
            expected.update(ms.entry_tensors(entry, torch.bfloat16)[0])
    for name, t in src.items():
        module = name.removesuffix(".weight").removesuffix(".weight_scale_inv")
        if module in jobs:
            continue
        if t.dtype == torch.float8_e4m3fn:  # float8 linears the recipe keeps float: bf16 dequantized
            expected[name] = _dequant_np(t, src[f"{name}_scale_inv"]).to(torch.bfloat16)
        elif not name.endswith("_scale_inv"):
            expected[name] = t
    assert_same_tensors(out, expected)
    assert verify_checkpoint(tmp_path / "out")["tensors"] == len(out)
