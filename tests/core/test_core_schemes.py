"""QuantScheme: immutable, looked up case-insensitively, both scale conventions, clear errors for bad fields."""

import dataclasses

import numpy as np
import pytest
import torch

import dsq
from dsq.schemes import ActGranularity, Granularity, QType, RoundMode, ScaleRule


def test_presets_and_case_insensitive_lookup():
    assert dsq.list_schemes() == ["W8A16", "W4A16", "W4A16_ASYM", "W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC",
                                  "W4AFP8", "FP8_BLOCK"]
    for spelling in ("w4a8_dynamic", "W4A8_DYNAMIC", "W4a8-Dynamic", "  w4a8-dynamic "):
        assert dsq.get_scheme(spelling) is dsq.get_scheme("W4A8_DYNAMIC")
    with pytest.raises(dsq.UnknownNameError, match="unknown scheme 'w4a4'; known schemes: W8A16, W4A16, "):
        dsq.get_scheme("w4a4")


def test_schemes_are_immutable_and_hashable():
    s = dsq.get_scheme("w4a16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.group_size = 64
    assert s.group_size == 128
    assert len({s, dsq.get_scheme("W4A16"), s.replace(group_size=64)}) == 2


@pytest.mark.parametrize("name,bits", [("W8A16", 8), ("W4A16", 4)])
def test_both_scale_conventions(name, bits):
    """compressed-tensors: amax / (qmax + 0.5); msModelSlim: amax / qmax. Same weight, both rules."""
    qmax = (1 << (bits - 1)) - 1
    w = torch.zeros(1, 128)
    w[0, 0] = 3.0
    ref = dsq.get_backend("cpu")
    half = ref.calibrate(w, dsq.get_scheme(name)).weight_scale
    qm = ref.calibrate(w, dsq.get_scheme(name, scale_rule="qmax")).weight_scale
    assert half.flatten()[0].item() == np.float32(3.0) / np.float32(qmax + 0.5)
    assert qm.flatten()[0].item() == np.float32(3.0) / np.float32(qmax)
    assert dsq.get_scheme(name).scale_rule is ScaleRule.HALF_RANGE  # the default is compressed-tensors'


def test_overrides_accept_enum_values_as_strings():
    s = dsq.get_scheme("w8a8", scale_rule="QMAX", act_rounding="half_away", scale_dtype="bfloat16")
    assert s.scale_rule is ScaleRule.QMAX and s.act_rounding is RoundMode.HALF_AWAY
    assert dsq.get_scheme("w4a16", group_size=np.int64(64)).group_size == 64
    assert dsq.get_scheme("fp8_block", block_size=[64, 32]).block_size == (64, 32)


@pytest.mark.parametrize("overrides,match", [
    ({"group_sise": 64}, r"unknown field\(s\) group_sise; valid fields: name, weight_dtype, .*group_size"),
    ({"scale_rule": "amax/7"}, r"scale_rule='amax/7' is not one of half_range, qmax"),
    ({"weight_dtype": "int3"}, r"weight_dtype='int3' is not one of int8, int4, fp8_e4m3"),
    ({"group_size": "64"}, r"group_size must be an integer, got '64'"),
    ({"group_size": 64.0}, r"group_size must be an integer, got 64.0"),
    ({"group_size": 0}, r"group_size must be a positive integer, got 0"),
    ({"block_size": 128}, r"block_size must be a pair of integers \(rows, cols\), got 128"),
    ({"scale_dtype": "float64"}, r"scale_dtype must be one of"),
    ({"act_symmetric": False}, "asymmetric activations are supported per tensor"),
])
def test_bad_overrides_raise_scheme_errors(overrides, match):
    base = "fp8_block" if "block_size" in overrides else "w4a16" if "group_size" in overrides else "w8a8_dynamic"
    with pytest.raises(dsq.SchemeError, match=match):
        dsq.get_scheme(base, **overrides)


def test_from_dict_of_a_custom_scheme_gives_enums():
    s = dsq.QuantScheme.from_dict({"name": "MY_W4", "weight_dtype": "int4", "weight_granularity": "group",
                                   "group_size": 32, "act_dtype": "int8", "act_granularity": "token"})
    assert s.weight_dtype is QType.INT4 and s.weight_granularity is Granularity.GROUP
    assert s.act_granularity is ActGranularity.TOKEN and s.weight_bits == 4 and s.scale_shape(3, 70) == (3, 3)
    assert dsq.QuantScheme.from_dict(s.to_dict()) == s
    with pytest.raises(dsq.SchemeError, match=r"missing field\(s\) \['weight_granularity'\]"):
        dsq.QuantScheme.from_dict({"name": "X", "weight_dtype": "int8"})
    with pytest.raises(dsq.SchemeError, match="needs a string 'name'"):
        dsq.QuantScheme.from_dict({"weight_dtype": "int8"})
