"""compressed-tensors output, read by the real consumers: transformers (dequantize on load, CPU) and the
compressed-tensors 0.20 decompressors. Their dequantized weights must equal dsq's (backend.unpack) exactly."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from ckpt_builders import CALIB, tiny_model, with_scale_dtype

import dsq
from dsq.errors import CheckpointError
from dsq.nn import QuantExperts, QuantLinear

ct = pytest.importorskip("compressed_tensors")
from compressed_tensors.compressors import BaseCompressor  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from compressed_tensors.utils.match import is_match  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoModelForCausalLM, CompressedTensorsConfig  # noqa: E402

REF = dsq.get_backend("cpu")


def _dsq_dequant(model, dtype):
    """Module/param name -> dsq's dequantized weight in the model dtype (fused expert params as stacked)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            out[f"{name}.weight"] = REF.unpack(m.packed, m.scheme)[1].to(dtype)
        elif isinstance(m, QuantExperts):
            out[f"{name}.gate_up_proj"] = REF.unpack(m.weights.gate_up, m.scheme)[1].to(dtype)
            out[f"{name}.down_proj"] = REF.unpack(m.weights.down, m.scheme)[1].to(dtype)
    return out


def _hf_load(path, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(
            str(path), quantization_config=CompressedTensorsConfig(run_compressed=False), dtype=dtype)


@pytest.mark.parametrize("recipe,dtype", [
    ("w4a16", torch.bfloat16), ("w8a16", torch.float32), ("deepseek-w4afp8", torch.bfloat16),
])
def test_transformers_dequantizes_exactly(quantized, tmp_path, recipe, dtype):
    model = quantized(recipe, dtype)
    out = dsq.save(model, tmp_path / "ckpt")
    hf = _hf_load(out, dtype)
    sd = hf.state_dict()
    expected = _dsq_dequant(model, dtype)
    assert len(expected) == 18  # 16 Linear + 2 fused expert tensors
    for key, w in expected.items():
        assert sd[key].dtype == dtype
        assert torch.equal(sd[key], w), key
    # the float parts load unchanged
    assert torch.equal(sd["lm_head.weight"], model.state_dict()["lm_head.weight"])


@pytest.mark.parametrize("dense", ["W8A8_DYNAMIC", "W8A8", "FP8_BLOCK", "W4A16_ASYM"])
def test_transformers_mixed_precision(tmp_path, dense):
    """Routed experts W4A16 + every other Linear another scheme: a mixed-precision config with per-group
    formats (int-quantized, float-quantized, asymmetric pack-quantized)."""
    dtype = torch.bfloat16
    model = tiny_model(dtype)
    recipe = dsq.Recipe.from_dict({"rules": [
        {"targets": ["re:.*mlp\\.experts$"], "scheme": {"scheme": "W4A16", "scale_dtype": "bfloat16"}},
        {"targets": ["Linear"], "scheme": {"scheme": dense, "scale_dtype": "bfloat16"}}],
        "ignore": ["lm_head", "re:.*mlp.gate$"]})
    dsq.quantize(model, recipe, backend="cpu", calib_data=CALIB, progress=False)
    out = dsq.save(model, tmp_path / "ckpt")
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert len(qcfg["config_groups"]) == 2
    assert qcfg["format"] == ("pack-quantized" if dense == "W4A16_ASYM" else "mixed-precision")
    sd = _hf_load(out, dtype).state_dict()
    for key, w in _dsq_dequant(model, dtype).items():
        assert torch.equal(sd[key], w), key


@pytest.mark.parametrize("recipe,dtype", [
    ("w8a8-dynamic", torch.float32), ("deepseek-w4a8", torch.bfloat16), ("deepseek-w4afp8", torch.float32),
    ("w4a16", torch.float32),
])
def test_compressed_tensors_decompressors(quantized, tmp_path, recipe, dtype):
    """Every module (per-expert ones too) through compressed-tensors' own config parsing, target matching
    and decompressor. This covers int-quantized experts, which transformers 5.23 cannot dequantize (its
    expert path only handles weight_packed and fp8)."""
    model = quantized(recipe, dtype)
    out = dsq.save(model, tmp_path / "ckpt")
    cfg = QuantizationConfig.model_validate(json.loads((out / "config.json").read_text())["quantization_config"])
    tensors = {}
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    modules = sorted({k.rsplit(".", 1)[0] for k in tensors if k.endswith(".weight_scale")})
    assert modules
    dequant = {}
    for name in modules:
        assert not is_match(name, torch.nn.Linear(1, 1), [], cfg.ignore)
        groups = [g for g in cfg.config_groups.values() if is_match(name, torch.nn.Linear(1, 1), g.targets, cfg.ignore)]
        assert groups, f"no config group targets {name}"
        scheme = groups[0]
        local = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        compressor = BaseCompressor.get_value_from_registry(scheme.format)
        dequant[name] = compressor.decompress(local, scheme)["weight"]
    for ignored in ("lm_head", "model.layers.1.mlp.gate"):
        assert ignored in cfg.ignore
    expected = _dsq_dequant(model, dtype)
    for key, w in expected.items():
        name = key.rsplit(".", 1)[0]
        if key.endswith("weight"):
            got = dequant[name]
        else:  # fused experts: rebuild the stack from per-expert modules
            proj = ["gate_proj", "up_proj"] if key.endswith("gate_up_proj") else ["down_proj"]
            got = torch.stack([torch.cat([dequant[f"{name}.{e}.{p}"] for p in proj]) for e in range(4)])
        assert got.dtype == dtype and torch.equal(got, w), key


def test_formats_and_scale_dtypes(quantized, tmp_path):
    model = quantized("deepseek-w4afp8", torch.bfloat16)
    out = dsq.save(model, tmp_path / "ckpt")
    qcfg = json.loads((out / "config.json").read_text())["quantization_config"]
    fmts = {g["format"] for g in qcfg["config_groups"].values()}
    assert fmts == {"pack-quantized", "float-quantized"}  # W4AFP8 stays packed (vLLM only loads it packed)
    w4 = next(g for g in qcfg["config_groups"].values() if g["format"] == "pack-quantized")
    assert w4["input_activations"]["type"] == "float" and w4["weights"]["num_bits"] == 4
    assert any("experts" in t for t in w4["targets"])
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.1.mlp.experts.0.gate_proj.weight_scale").dtype == torch.bfloat16
        assert f.get_tensor("model.layers.0.self_attn.o_proj.weight").dtype == torch.float8_e4m3fn
        assert f.get_tensor("model.layers.1.mlp.experts.3.down_proj.weight_shape").tolist() == [128, 128]


def test_scale_dtype_mismatch_is_refused(tmp_path):
    model = tiny_model(torch.bfloat16)
    # scale_dtype=None keeps the recipe's float32 scales instead of following the bf16 model ("auto")
    dsq.quantize(model, with_scale_dtype("w4a16", "float32"), backend="cpu", scale_dtype=None, progress=False)
    with pytest.raises(CheckpointError, match=r"scale_dtype=float32.*bfloat16"):
        dsq.save(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_quantize_follows_the_model_dtype_for_scales_by_default(tmp_path):
    """With the default scale_dtype="auto", a bf16 model quantized with a float32-scale preset saves as-is."""
    model = tiny_model(torch.bfloat16)
    dsq.quantize(model, "w4a16", backend="cpu", progress=False)
    assert {m["scale_dtype"] for m in model.dsq_info["modules"].values()} == {"bfloat16"}
    out = dsq.save(model, tmp_path / "ckpt")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.0.self_attn.o_proj.weight_scale").dtype == torch.bfloat16


def test_auto_scale_dtype_counts_only_the_quantized_weights(tmp_path):
    """A bf16 model whose router gate stays float32 (as transformers keeps it) still gets bf16 scales: the
    gate is not quantized. If a float32 weight is quantized too, "auto" keeps the recipe's float32."""
    model = tiny_model(torch.bfloat16)
    gate = model.model.layers[1].mlp.gate
    gate.weight.data = gate.weight.data.float()
    dsq.quantize(model, "w4a16", backend="cpu", progress=False)
    assert {m["scale_dtype"] for m in model.dsq_info["modules"].values()} == {"bfloat16"}
    dsq.save(model, tmp_path / "ckpt")

    mixed = tiny_model(torch.bfloat16)
    mixed.model.layers[0].mlp.down_proj.float()
    dsq.quantize(mixed, "w8a16", backend="cpu", progress=False)
    assert {m["scale_dtype"] for m in mixed.dsq_info["modules"].values()} == {"float32"}
