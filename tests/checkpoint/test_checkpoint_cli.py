"""`dsq quantize` on a Hugging Face folder and `dsq inspect`."""

from __future__ import annotations

import json

import pytest
import torch
from ckpt_builders import TOKENS, tiny_model

import dsq
from dsq.cli import main


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-deepseek"
    tiny_model(torch.bfloat16).save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    (folder / "pytorch_model.bin").write_bytes(b"never copied")
    return folder


def test_quantize_and_inspect(hf_folder, tmp_path, capsys):
    out = tmp_path / "q"
    calib = tmp_path / "calib.json"
    calib.write_text(json.dumps([list(range(1, 17)), [{"input_ids": [5, 6, 7]}][0]["input_ids"]]))
    assert main(["quantize", str(hf_folder), "--recipe", "deepseek-w4a8", "--backend", "cpu", "--out", str(out),
                 "--calib", str(calib), "--format", "ascend"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer_config.json", "quant_model_description.json", "dsq_quantization.json",
            "quant_model_weights.safetensors"} <= names
    assert "pytorch_model.bin" not in names and "model.safetensors" not in names
    assert "W4A8_DYNAMIC" in capsys.readouterr().out
    model = dsq.load(out)
    with torch.no_grad():
        assert torch.isfinite(model(TOKENS).logits.float()).all()
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "ascend" and summary["schemes"]["W4A8_DYNAMIC"]["modules"] == 12
    assert summary["dtype"] == "bfloat16"


def test_compressed_tensors_scale_dtype_auto(hf_folder, tmp_path, capsys):
    """--scale-dtype auto makes the bf16 model's scales bf16, so the compressed-tensors save is exact."""
    out = tmp_path / "ct"
    assert main(["quantize", str(hf_folder), "-r", "w4a16", "-o", str(out)]) == 0
    side = json.loads((out / "dsq_quantization.json").read_text())
    assert {d["scale_dtype"] for d in side["linears"].values()} == {"bfloat16"}
    assert main(["quantize", str(hf_folder), "-r", "w4a16", "-o", str(out)]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["quantize", str(hf_folder), "-r", "w4a16", "-o", str(out), "--scale-dtype", "float32",
                 "--overwrite"]) == 2  # refused before quantizing: compressed-tensors needs bf16 scales here
    assert "scale_dtype=float32" in capsys.readouterr().err
    assert (out / "model.safetensors").is_file()  # the earlier checkpoint is untouched


def test_dry_run_writes_nothing(hf_folder, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["quantize", str(hf_folder), "-r", "deepseek-w4afp8", "-o", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "W4AFP8" in text and "FP8_BLOCK" in text
    assert not out.exists()


def test_bad_inputs(tmp_path, hf_folder, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((hf_folder / "config.json").read_text())
    assert main(["quantize", str(empty), "-r", "w8a16", "-o", str(tmp_path / "x")]) == 2
    assert "no *.safetensors" in capsys.readouterr().err
    bad = tmp_path / "calib.json"
    bad.write_text(json.dumps([["a", "b"]]))
    assert main(["quantize", str(hf_folder), "-r", "deepseek-w4a8", "-o", str(tmp_path / "y"), "--format", "ascend",
                 "--calib", str(bad)]) == 2
    assert "sample 0 is not a non-empty list of token ids" in capsys.readouterr().err
    assert main(["quantize", str(hf_folder), "-r", "w4a16", "-o", str(tmp_path / "z"), "--format", "ascend"]) == 2
    assert "no msModelSlim/ascend on-disk form" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_text_calibration_without_a_tokenizer(tmp_path, hf_folder, capsys):
    """A .txt calibration file needs MODEL_DIR's tokenizer; without one the error says what to give instead."""
    text = tmp_path / "calib.txt"
    text.write_text("def f(x):\n    return x\n")
    args = ["quantize", str(hf_folder), "-r", "deepseek-w4a8", "-o", str(tmp_path / "t"), "--format", "ascend"]
    assert main([*args, "--calib", str(text)]) == 2
    err = capsys.readouterr().err
    assert f"no tokenizer loads from {hf_folder}" in err and ".json/.jsonl list of token-id lists" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert main([*args, "--calib", str(empty)]) == 2
    assert "empty.txt holds no samples" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
