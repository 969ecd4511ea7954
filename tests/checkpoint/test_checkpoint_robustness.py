"""Atomic saves, overwrite refusal, sharding, and clear errors for corrupt, truncated, missing or
mis-shaped checkpoint contents."""

from __future__ import annotations

import json

import pytest
import torch
from ckpt_builders import TOKENS
from safetensors.torch import load_file, save_file

import dsq
from dsq.checkpoint import shards
from dsq.errors import CheckpointError


def test_failed_save_leaves_nothing(quantized, tmp_path, monkeypatch):
    model = quantized("w8a16")
    calls = []

    def failing_save_file(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # the second shard fails halfway through the save
            raise OSError("disk full (simulated)")
        save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(shards, "save_file", failing_save_file)
    with pytest.raises(OSError, match="simulated"):
        dsq.save(model, tmp_path / "ckpt", max_shard_bytes=64 * 1024)
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []  # no target, no temporary sibling


def test_failed_overwrite_keeps_old_checkpoint(quantized, tmp_path, monkeypatch):
    model = quantized("w8a16")
    out = dsq.save(model, tmp_path / "ckpt")
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(shards, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("simulated")))
    with pytest.raises(OSError):
        dsq.save(model, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_existing_directory_refused_unless_overwrite(quantized, tmp_path):
    model = quantized("w8a16")
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(CheckpointError, match="already exists"):
        dsq.save(model, target)
    assert (target / "keep.txt").read_text() == "user data"
    dsq.save(model, target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_sharded_checkpoint_loads(quantized, tmp_path):
    model = quantized("deepseek-w4a8")
    out = dsq.save(model, tmp_path / "ckpt", format="ascend", max_shard_bytes=100 * 1024)
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(files) > 2 and files[0].startswith("quant_model_weights-00001-of-")
    index = json.loads((out / "quant_model_weights.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == dsq.checkpoint.inspect(out)["tensor_bytes"]
    with torch.no_grad():
        assert torch.equal(model(TOKENS).logits, dsq.load(out)(TOKENS).logits)


def test_truncated_file_named(quantized, tmp_path):
    out = dsq.save(quantized("w8a16"), tmp_path / "ckpt")
    f = out / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(corrupt|truncated)"):
        dsq.load(out)


def test_garbage_header_named(quantized, tmp_path):
    out = dsq.save(quantized("w8a16"), tmp_path / "ckpt", max_shard_bytes=64 * 1024)
    victim = sorted(out.glob("model-*.safetensors"))[1]
    victim.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 64)
    with pytest.raises(CheckpointError, match=victim.name):
        dsq.load(out)


def _rewrite(path, change):
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_missing_quantized_tensor_named(quantized, tmp_path):
    out = dsq.save(quantized("w4a16"), tmp_path / "ckpt")
    _rewrite(out / "model.safetensors", lambda t: t.pop("model.layers.1.mlp.experts.2.up_proj.weight_scale"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight_scale.*missing"):
        dsq.load(out)


def test_missing_float_tensor_named(quantized, tmp_path):
    out = dsq.save(quantized("w4a16"), tmp_path / "ckpt", format="compressed-tensors")
    _rewrite(out / "model.safetensors", lambda t: t.pop("model.layers.1.mlp.gate.e_score_correction_bias"))
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.1\.mlp\.gate\.e_score_correction_bias"):
        dsq.load(out)


def test_every_damaged_tensor_is_named_at_once(quantized, tmp_path):
    """Missing and mis-shaped tensors, quantized and float, are all listed by one error."""
    out = dsq.save(quantized("w4a16"), tmp_path / "ckpt")
    gone = ["model.layers.1.mlp.experts.2.up_proj.weight_scale", "model.layers.1.mlp.experts.3.down_proj.weight_packed",
            "model.layers.1.mlp.gate.e_score_correction_bias"]
    short = ["model.layers.0.self_attn.o_proj.weight_scale", "model.norm.weight"]

    def damage(t):
        for k in gone:
            t.pop(k)
        for k in short:
            t[k] = t[k][:5]

    _rewrite(out / "model.safetensors", damage)
    with pytest.raises(CheckpointError) as info:
        dsq.load(out)
    text = str(info.value)
    assert text.startswith("5 problems with the checkpoint's tensors:")
    for k in gone + short:
        assert k in text, k
    assert "missing tensors: model.layers.1.mlp.gate.e_score_correction_bias" in text
    assert "model.norm.weight has shape (5,); the model expects (128,)" in text


def test_misshaped_tensors_named(quantized, tmp_path):
    out = dsq.save(quantized("w8a8-dynamic"), tmp_path / "ckpt", format="ascend")
    name = "model.layers.0.self_attn.o_proj.weight_scale"
    _rewrite(out / "quant_model_weights.safetensors", lambda t: t.__setitem__(name, t[name][:-1]))
    with pytest.raises(CheckpointError, match=rf"{name} has shape \(127, 1\); expected \(128, 1\)"):
        dsq.load(out)
    out2 = dsq.save(quantized("w4a16"), tmp_path / "ct")
    name = "model.layers.0.mlp.down_proj.weight_shape"
    _rewrite(out2 / "model.safetensors", lambda t: t.__setitem__(name, torch.tensor([128, 64])))
    with pytest.raises(CheckpointError, match=rf"{name} is \[128, 64\]; the model expects \[128, 256\]"):
        dsq.load(out2)
    out3 = dsq.save(quantized("w4a16"), tmp_path / "ct", overwrite=True)
    name = "model.norm.weight"
    _rewrite(out3 / "model.safetensors", lambda t: t.__setitem__(name, t[name][:5]))
    with pytest.raises(CheckpointError, match=rf"{name} has shape \(5,\); the model expects \(128,\)"):
        dsq.load(out3)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        dsq.load(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="neither a compressed-tensors"):
        dsq.load(tmp_path)


def test_unknown_format(quantized, tmp_path):
    with pytest.raises(dsq.UnknownNameError, match="compressed-tensors, ascend"):
        dsq.save(quantized("w8a16"), tmp_path / "x", format="gguf")
