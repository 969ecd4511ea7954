"""Golden vectors: hand-derived expected values (``golden/*.json``, format v1, described in each file).

Unlike the other checks, these compare a backend with numbers written down from the spec, not with the
reference's output, so they pin down the reference itself too. Each case becomes checks of the ops it
covers: a ``weight`` case checks calibrate (scales, zero points, group scales, input scale), pack (the
packed words / codes from the golden QParams) and unpack (codes and dequantized values from a PackedWeight
built from the golden numbers); an ``activation`` case checks quantize_activation; a ``matmul`` case checks
matmul against the golden ``y`` with the matmul tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsq.backend import Backend
from dsq.qtypes import ActStats, PackedWeight, QParams, weight_tensor_name
from dsq.schemes import QType, QuantScheme, get_scheme

from .checks import CaseResult, Checks, _bitwise
from .expected import Expected, matmul_expected

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_SCALE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_OPS = {"weight": ("calibrate", "pack", "unpack"), "activation": ("quantize_activation",), "matmul": ("matmul",)}


@dataclass
class GoldenCheck:
    """One golden case applied to one op: ``run(checks)`` returns its CaseResult."""

    preset: str  # preset name the result is filed under in the report
    op: str
    scheme: QuantScheme  # the preset with the case's overrides
    name: str
    run: Callable[[Checks], CaseResult]


def load_cases(directory: Path = GOLDEN_DIR) -> list[dict]:
    """Every case of every ``*.json`` file in ``directory`` (name prefixed with the file stem)."""
    cases = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        for case in data.get("cases", []):
            cases.append(dict(case, name=f"golden:{path.stem}:{case['name']}"))
    return cases


def _t(values, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(np.asarray(values).tolist(), dtype=dtype)


def _codes_tensor(values, scheme: QuantScheme) -> torch.Tensor:
    if scheme.weight_dtype is QType.FP8_E4M3:
        return _t(values, torch.uint8).view(torch.float8_e4m3fn)
    return _t(values, torch.int8)


def _golden_qparams(exp: dict, scheme: QuantScheme) -> QParams:
    qp = QParams(weight_scale=_t(exp["weight_scale"], _SCALE_DTYPES[scheme.scale_dtype]))
    if "weight_zero_point_unpacked" in exp:
        qp.weight_zero_point = _t(exp["weight_zero_point_unpacked"], torch.int8)
    if "weight_group_scale" in exp:
        qp.weight_group_scale = _t(exp["weight_group_scale"], torch.int8)
    if "input_scale" in exp:
        qp.input_scale = _t(exp["input_scale"], torch.float32).reshape(-1)
        if not scheme.act_symmetric:
            qp.input_zero_point = _t(exp["input_zero_point"], torch.int8).reshape(-1)
    return qp


def _golden_packed(exp: dict, scheme: QuantScheme, n: int, k: int) -> PackedWeight | None:
    """A canonical PackedWeight made only of golden numbers, or None if the case lacks a needed tensor."""
    name = weight_tensor_name(scheme)
    t: dict[str, torch.Tensor] = {}
    if name == "weight_packed":
        if "weight_packed" not in exp:
            return None
        t["weight_packed"] = _t(exp["weight_packed"], torch.int32)
    else:
        t["weight"] = _codes_tensor(exp["codes"], scheme)
    qp = _golden_qparams(exp, scheme)
    t["weight_scale"] = qp.weight_scale
    if not scheme.weight_symmetric:
        if "weight_zero_point" not in exp:
            return None
        t["weight_zero_point"] = _t(exp["weight_zero_point"], torch.int32)
    if qp.weight_group_scale is not None:
        t["weight_group_scale"] = qp.weight_group_scale
    t["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    return PackedWeight(scheme.name, (n, k), t)


def _weight_checks(case: dict, scheme: QuantScheme, preset: str) -> list[GoldenCheck]:
    inp, exp, name = case["input"], case["expected"], case["name"]
    w = _t(inp["weight"], torch.float32)
    st = inp.get("act_stats")
    stats = ActStats(st["min"], st["max"]) if st else None
    want_qp = _golden_qparams(exp, scheme)

    def calibrate(c: Checks) -> CaseResult:
        got = c.backend.calibrate(c._d(w), scheme, stats)
        pairs = [("weight_scale", got.weight_scale, want_qp.weight_scale)]
        for f in ("weight_zero_point", "weight_group_scale", "input_scale", "input_zero_point"):
            if getattr(want_qp, f) is not None:
                pairs.append((f, getattr(got, f), getattr(want_qp, f)))
        return _bitwise(name, pairs)

    def pack(c: Checks) -> CaseResult:
        got = c.backend.pack(c._d(w), c._d(want_qp), scheme)
        pairs = []
        if "weight_packed" in exp:
            pairs.append(("weight_packed", got.tensors.get("weight_packed"), _t(exp["weight_packed"], torch.int32)))
        if weight_tensor_name(scheme) == "weight":
            pairs.append(("weight", got.tensors.get("weight"), _codes_tensor(exp["codes"], scheme)))
        if "weight_zero_point" in exp:
            pairs.append(("weight_zero_point", got.tensors.get("weight_zero_point"),
                          _t(exp["weight_zero_point"], torch.int32)))
        return _bitwise(name, pairs)

    def unpack(c: Checks) -> CaseResult:
        packed = _golden_packed(exp, scheme, *w.shape)
        if packed is None:
            return CaseResult(name, True, message="no packed words in this golden case")
        codes, deq = c.backend.unpack(c._d(packed), scheme)
        pairs = [("codes", codes, _codes_tensor(exp["codes"], scheme))]
        if "dequantized" in exp:
            pairs.append(("dequantized", deq, _t(exp["dequantized"], torch.float32)))
        return _bitwise(name, pairs)

    return [GoldenCheck(preset, "calibrate", scheme, name, calibrate),
            GoldenCheck(preset, "pack", scheme, name, pack),
            GoldenCheck(preset, "unpack", scheme, name, unpack)]


def _activation_check(case: dict, scheme: QuantScheme, preset: str) -> GoldenCheck:
    inp, exp, name = case["input"], case["expected"], case["name"]
    x = _t(inp["x"], torch.float32)
    src = None
    if "input_scale" in inp:
        src = QParams(weight_scale=torch.ones(1), input_scale=_t(inp["input_scale"], torch.float32).reshape(-1),
                      input_zero_point=_t(inp["input_zero_point"], torch.int8).reshape(-1))

    def run(c: Checks) -> CaseResult:
        got = c.backend.quantize_activation(c._d(x), scheme, c._d(src))
        codes = _t(exp["codes"], torch.uint8).view(torch.float8_e4m3fn) if scheme.act_dtype is QType.FP8_E4M3 \
            else _t(exp["codes"], torch.int8)
        pairs = [("values", got.values, codes), ("scale", got.scale, _t(exp["scale"], torch.float32))]
        if "zero_point" in exp:
            pairs.append(("zero_point", got.zero_point, _t(exp["zero_point"], torch.int8).reshape(-1)))
        return _bitwise(name, pairs)

    return GoldenCheck(preset, "quantize_activation", scheme, name, run)


def _matmul_check(case: dict, scheme: QuantScheme, preset: str, ref: Backend) -> GoldenCheck:
    inp, exp, name = case["input"], case["expected"], case["name"]
    w, x = _t(inp["weight"], torch.float32), _t(inp["x"], torch.float32)

    def run(c: Checks) -> CaseResult:
        packed = ref.quantize_weight(w, scheme)
        bounds = matmul_expected(ref, x, packed, scheme)
        y_gold = np.asarray(exp["y"], dtype=np.float64).reshape(bounds.y64.shape)
        y = c.backend.matmul(c._d(x), c._d(packed), scheme)
        return c._product(name, y, x.dtype, Expected(y_gold, bounds.elem_bound, bounds.norm_bound))

    return GoldenCheck(preset, "matmul", scheme, name, run)


def golden_checks(ref: Backend, directory: Path = GOLDEN_DIR) -> list[GoldenCheck]:
    """Every golden case of ``directory`` turned into op checks."""
    out: list[GoldenCheck] = []
    for case in load_cases(directory):
        scheme = get_scheme(case["scheme"], **case.get("overrides", {}))
        preset = get_scheme(case["scheme"]).name
        kind = case["op"]
        if kind == "weight":
            out += _weight_checks(case, scheme, preset)
        elif kind == "activation":
            out.append(_activation_check(case, scheme, preset))
        elif kind == "matmul":
            out.append(_matmul_check(case, scheme, preset, ref))
        else:
            raise ValueError(f"golden case {case['name']}: unknown op {kind!r}; expected one of {sorted(_OPS)}")
    return out
