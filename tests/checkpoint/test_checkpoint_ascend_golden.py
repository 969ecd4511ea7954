"""msModelSlim (ascend) tensors against golden tensors built by hand, per scheme, from the reference
backend's codes and scales with plain Python loops (independent of dsq.checkpoint's own packing code)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

import dsq
from dsq.checkpoint import msmodelslim as ms
from dsq.checkpoint.entries import QuantEntry
from dsq.errors import UnsupportedError
from dsq_cpu_reference.packing import unpack_codes

REF = dsq.get_backend("cpu")


def _weight(n, k, seed=0):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def _codes(packed, bits, k):
    return unpack_codes(packed["weight_packed"].numpy(), bits, k).astype(np.int64)


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


@pytest.mark.parametrize("name", ["W8A16", "W8A8_DYNAMIC"])
def test_int8_channel_golden(name):
    scheme = dsq.get_scheme(name)
    p = REF.quantize_weight(_weight(6, 40), scheme)
    q = _codes(p, 8, 40) if name == "W8A16" else p["weight"].numpy().astype(np.int64)
    t, types = ms.entry_tensors(QuantEntry("m.proj", scheme, p), torch.bfloat16)
    assert set(t) == {"m.proj.weight", "m.proj.weight_scale", "m.proj.weight_offset"}
    assert set(types.values()) == {name}
    assert t["m.proj.weight"].dtype == torch.int8 and t["m.proj.weight"].tolist() == q.tolist()
    assert t["m.proj.weight_scale"].dtype == torch.float32
    assert t["m.proj.weight_scale"].tolist() == [[float(s)] for s in p["weight_scale"].flatten()]
    assert t["m.proj.weight_offset"].tolist() == [[0.0]] * 6


@pytest.mark.parametrize("model_dtype", [torch.bfloat16, torch.float16])
def test_w8a8_static_golden(model_dtype):
    scheme = dsq.get_scheme("W8A8")
    n, k = 6, 40
    p = REF.quantize_weight(_weight(n, k, 3), scheme, dsq.ActStats(-2.5, 4.0))
    bias = torch.randn(n, generator=torch.Generator().manual_seed(4))
    t, _ = ms.entry_tensors(QuantEntry("m.q_a_proj", scheme, p, bias), model_dtype)
    q = p["weight"].tolist()
    in_scale, zp = float(p["input_scale"]), int(p["input_zero_point"])
    ws = [float(s) for s in p["weight_scale"].flatten()]
    assert t["m.q_a_proj.input_scale"].tolist() == [in_scale]
    assert t["m.q_a_proj.input_offset"].tolist() == [float(zp)]
    deq = [_f32(in_scale * w) for w in ws]  # one float32 rounding of the exact product
    if model_dtype == torch.float16:  # float32 bits as int32, widened to int64
        want = [struct.unpack("<i", struct.pack("<f", d))[0] for d in deq]
        assert t["m.q_a_proj.deq_scale"].dtype == torch.int64
        assert t["m.q_a_proj.deq_scale"].tolist() == want
    else:
        assert t["m.q_a_proj.deq_scale"].dtype == torch.float32
        assert t["m.q_a_proj.deq_scale"].tolist() == deq
    qb = [round(float(bias[i]) / deq[i] - zp * sum(q[i])) for i in range(n)]  # Python round: half to even
    assert t["m.q_a_proj.quant_bias"].dtype == torch.int32 and t["m.q_a_proj.quant_bias"].tolist() == qb
    assert t["m.q_a_proj.weight"].tolist() == q
    assert torch.equal(t["m.q_a_proj.bias"], bias)


@pytest.mark.parametrize("module", ["m.experts.0.gate_proj", "m.experts.0.down_proj"])
def test_w4a8_dynamic_golden(module):
    scheme = dsq.get_scheme("W4A8_DYNAMIC", group_size=32)
    n, k = 8, 64
    p = REF.quantize_weight(_weight(n, k, 5) * torch.linspace(0.1, 3, k), scheme)
    q4 = _codes(p, 4, k).tolist()
    s1 = [float(s) for s in p["weight_scale"].flatten()]
    s2 = p["weight_group_scale"].tolist()
    assert max(max(r) for r in s2) > 1  # the level-2 scales are exercised
    t, types = ms.entry_tensors(QuantEntry(module, scheme, p), torch.bfloat16)
    assert set(types.values()) == {"W4A8_DYNAMIC"}
    packed = [[0] * k for _ in range(n // 2)]
    for j in range(n // 2):
        for c in range(k):
            b = ((q4[2 * j + 1][c] & 0xF) << 4) | (q4[2 * j][c] & 0xF)
            packed[j][c] = b - 256 if b >= 128 else b
    assert t[f"{module}.weight"].dtype == torch.int8 and t[f"{module}.weight"].tolist() == packed
    assert t[f"{module}.weight_scale"].tolist() == [[v] for v in s1]
    assert t[f"{module}.weight_offset"].tolist() == [[0.0]] * n
    assert t[f"{module}.weight_scale_second"].tolist() == [[float(v) for v in r] for r in s2]
    assert t[f"{module}.weight_offset_second"].tolist() == [[0.0, 0.0]] * n
    chunks = 16 if module.endswith("down_proj") else 1
    width = k // chunks
    want = [[_f32(8 * sum(q4[i][c] * s2[i][c // 32] * s1[i] for c in range(j * width, (j + 1) * width)))
             for j in range(chunks)] for i in range(n)]
    assert t[f"{module}.scale_bias"].tolist() == want


def test_read_back_is_canonical():
    """read_entry inverts entry_tensors for every supported scheme (canonical tensors identical)."""
    for name, stats in (("W8A16", None), ("W8A8_DYNAMIC", None), ("W8A8", dsq.ActStats(-1.0, 3.0)),
                        ("W4A8_DYNAMIC", None)):
        scheme = dsq.get_scheme(name)
        p = REF.quantize_weight(_weight(8, 256, 7), scheme, stats)
        t, _ = ms.entry_tensors(QuantEntry("x.up_proj", scheme, p), torch.bfloat16)
        back = ms.read_entry("x.up_proj", t.__getitem__, t.__contains__, scheme, 8, 256)
        assert set(back.tensors) == set(p.tensors), name
        for key in p.tensors:
            assert back[key].dtype == p[key].dtype and torch.equal(back[key], p[key]), (name, key)


def test_description_json(quantized, tmp_path):
    model = quantized("deepseek-w4a8")
    out = dsq.save(model, tmp_path / "ckpt", format="ascend")
    desc = json.loads((out / "quant_model_description.json").read_text())
    assert desc["version"] == "1.0.0" and desc["group_size"] == 128 and desc["model_quant_type"] == "W8A8"
    from safetensors import safe_open

    with safe_open(str(out / "quant_model_weights.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == set(desc) - {"version", "group_size", "model_quant_type"}  # every tensor described
    assert desc["model.layers.0.self_attn.kv_b_proj.deq_scale"] == "W8A8"
    assert desc["model.layers.1.mlp.shared_experts.down_proj.weight_scale"] == "W8A8_DYNAMIC"
    assert desc["model.layers.1.mlp.experts.2.up_proj.scale_bias"] == "W4A8_DYNAMIC"
    assert desc["model.layers.1.mlp.gate.weight"] == "FLOAT" and desc["lm_head.weight"] == "FLOAT"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())


def test_unsupported_scheme_names_module(quantized, tmp_path):
    with pytest.raises(UnsupportedError, match=r"model\.layers\.0\.self_attn\.q_a_proj: scheme W4A16"):
        dsq.save(quantized("w4a16"), tmp_path / "ckpt", format="ascend")
    assert not (tmp_path / "ckpt").exists() and not list(tmp_path.iterdir())
