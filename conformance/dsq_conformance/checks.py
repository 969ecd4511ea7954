"""One check per op: run the backend and the reference on a case and compare.

calibrate, pack, unpack and quantize_activation must match the reference bit for bit. Each op is isolated:
``pack`` gets the reference's QParams, ``unpack`` the reference's canonical PackedWeight, ``matmul`` and
``moe`` the reference's packed weights, so one broken verb does not fail the others. When the reference
rejects an input with a dsq error, the backend must reject it too (any dsq error).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dsq.backend import Backend
from dsq.errors import DsqError, UnsupportedError
from dsq.qtypes import ExpertWeights, PackedWeight, QParams
from dsq.schemes import QuantScheme

from .cases import ActCase, MatmulCase, MoeCase, WeightCase
from .compare import bits_equal
from .expected import Expected, matmul_expected, moe_expected
from .tolerances import check_close

QPARAM_FIELDS = ("weight_scale", "weight_zero_point", "weight_group_scale", "input_scale", "input_zero_point")


@dataclass
class CaseResult:
    """Outcome of one case. ``metric``: differing elements (bitwise ops) or bound ratio (matmul/moe, <= 1
    passes); ``rel_err``: normwise relative error of products."""

    case: str
    ok: bool
    metric: float = 0.0
    rel_err: float | None = None
    message: str = ""


def to_device(obj, device):
    """Move a tensor, QParams, PackedWeight or ExpertWeights to ``device`` (canonical tensors only)."""
    if obj is None or device in (None, "cpu", torch.device("cpu")):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, QParams):
        return QParams(**{k: to_device(v, device) for k, v in obj.__dict__.items()})
    if isinstance(obj, PackedWeight):
        return PackedWeight(obj.scheme, obj.shape, {k: v.to(device) for k, v in obj.tensors.items()})
    if isinstance(obj, ExpertWeights):
        return ExpertWeights(to_device(obj.gate_up, device), to_device(obj.down, device))
    return obj


def _guard(name: str, ref_call: Callable, run: Callable[[object], CaseResult]) -> CaseResult:
    """Run the reference; if it rejects the input, ``run`` must see the backend reject it too."""
    try:
        want = ref_call()
    except (DsqError, UnsupportedError) as exc:
        try:
            run(None)
        except DsqError:
            return CaseResult(name, True, message=f"both reject: {exc}")
        except Exception as bexc:  # noqa: BLE001 - a conformance run reports, never crashes
            return CaseResult(name, False, 1, message=f"reference raises {type(exc).__name__} ({exc}); "
                                                      f"backend raises {type(bexc).__name__}: {bexc}")
        return CaseResult(name, False, 1, message=f"backend accepts input the reference rejects: {exc}")
    except Exception as exc:  # noqa: BLE001 - a bug in the reference or the suite, reported as such
        return CaseResult(name, False, float("inf"), message=f"the REFERENCE raised {type(exc).__name__}: {exc} "
                                                             "(a reference or suite bug, not the backend's)")
    try:
        return run(want)
    except Exception as exc:  # noqa: BLE001
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return CaseResult(name, False, float("inf"), message=f"backend raised {tb}")


def _bitwise(name: str, pairs: list[tuple[str, object, object]]) -> CaseResult:
    diffs = [bits_equal(label, got, want) for label, got, want in pairs]
    bad = [d.message for d in diffs if not d.ok]
    return CaseResult(name, not bad, float(sum(d.mismatches for d in diffs)), message="; ".join(bad))


def _static_source(ref: Backend, scheme: QuantScheme, k: int, stats) -> PackedWeight | None:
    """A reference-packed [1, K] weight carrying input_scale/input_zero_point for static schemes."""
    if not scheme.static_activations:
        return None
    return ref.quantize_weight(torch.ones(1, max(k, 1)), scheme, stats)


class Checks:
    """The per-op checks of one backend against the reference."""

    def __init__(self, backend: Backend, ref: Backend):
        self.backend, self.ref = backend, ref
        self.device = getattr(backend, "device", "cpu")

    def _d(self, obj):
        return to_device(obj, self.device)

    # -- bit-exact verbs -------------------------------------------------------------------------------
    def calibrate(self, scheme: QuantScheme, case: WeightCase) -> CaseResult:
        def run(want):
            got = self.backend.calibrate(self._d(case.weight), scheme, case.act_stats)
            if want is None:
                return CaseResult(case.name, False, 1)
            return _bitwise(case.name, [(f, getattr(got, f, None), getattr(want, f)) for f in QPARAM_FIELDS])

        return _guard(case.name, lambda: self.ref.calibrate(case.weight, scheme, case.act_stats), run)

    def pack(self, scheme: QuantScheme, case: WeightCase) -> CaseResult:
        def ref_call():
            qp = self.ref.calibrate(case.weight, scheme, case.act_stats)
            return qp, self.ref.pack(case.weight, qp, scheme)

        def run(want):
            if want is None:  # the reference cannot even calibrate this input: the backend must refuse too
                self.backend.calibrate(self._d(case.weight), scheme, case.act_stats)
                return CaseResult(case.name, False, 1)
            qp, ref_packed = want
            got = self.backend.pack(self._d(case.weight), self._d(qp), scheme)
            return self._compare_packed(case.name, got, ref_packed)

        return _guard(case.name, ref_call, run)

    @staticmethod
    def _compare_packed(name: str, got: PackedWeight, want: PackedWeight) -> CaseResult:
        problems = []
        if not isinstance(got, PackedWeight):
            return CaseResult(name, False, 1, message=f"pack returned {type(got).__name__}, not a PackedWeight")
        if got.scheme.lower() != want.scheme.lower():
            problems.append(f"scheme {got.scheme!r}, expected {want.scheme!r}")
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        if set(got.tensors) != set(want.tensors):
            problems.append(f"tensors {sorted(got.tensors)}, expected {sorted(want.tensors)}")
        res = _bitwise(name, [(k, got.tensors.get(k), v) for k, v in want.tensors.items()])
        if problems:
            res.ok = False
            res.metric = max(res.metric, 1.0)
            res.message = "; ".join(problems + ([res.message] if res.message else []))
        return res

    def unpack(self, scheme: QuantScheme, case: WeightCase) -> CaseResult:
        def ref_call():
            packed = self.ref.quantize_weight(case.weight, scheme, case.act_stats)
            return packed, self.ref.unpack(packed, scheme)

        def run(want):
            if want is None:
                self.backend.calibrate(self._d(case.weight), scheme, case.act_stats)
                return CaseResult(case.name, False, 1)
            packed, (codes, deq) = want
            got_codes, got_deq = self.backend.unpack(self._d(packed), scheme)
            return _bitwise(case.name, [("codes", got_codes, codes), ("dequantized", got_deq, deq)])

        return _guard(case.name, ref_call, run)

    def quantize_activation(self, scheme: QuantScheme, case: ActCase) -> CaseResult:
        src = _static_source(self.ref, scheme, case.x.shape[1], case.act_stats)

        def run(want):
            got = self.backend.quantize_activation(self._d(case.x), scheme, self._d(src))
            if want is None:
                return CaseResult(case.name, False, 1)
            return _bitwise(case.name, [("values", got.values, want.values), ("scale", got.scale, want.scale),
                                        ("zero_point", got.zero_point, want.zero_point)])

        return _guard(case.name, lambda: self.ref.quantize_activation(case.x, scheme, src), run)

    # -- products --------------------------------------------------------------------------------------
    def _product(self, name: str, y, x_dtype: torch.dtype, exp: Expected) -> CaseResult:
        if not isinstance(y, torch.Tensor):
            return CaseResult(name, False, float("inf"), message=f"returned {type(y).__name__}, not a tensor")
        if y.dtype != x_dtype:
            return CaseResult(name, False, float("inf"), message=f"output dtype {y.dtype}, expected {x_dtype}")
        c = check_close(y.detach().cpu().double().numpy(), exp.y64, exp.elem_bound, exp.norm_bound)
        return CaseResult(name, c.ok, c.bound_ratio, c.rel_err, c.message)

    def matmul(self, scheme: QuantScheme, case: MatmulCase) -> CaseResult:
        def ref_call():
            packed = self.ref.quantize_weight(case.weight, scheme, case.act_stats)
            return packed, matmul_expected(self.ref, case.x, packed, scheme, case.bias)

        def run(want):
            if want is None:
                self.backend.quantize_weight(self._d(case.weight), scheme, case.act_stats)
                return CaseResult(case.name, False, 1)
            packed, exp = want
            y = self.backend.matmul(self._d(case.x), self._d(packed), scheme, self._d(case.bias))
            return self._product(case.name, y, case.x.dtype, exp)

        return _guard(case.name, ref_call, run)

    def moe(self, scheme: QuantScheme, case: MoeCase) -> CaseResult:
        def ref_call():
            experts = ExpertWeights(self.ref.quantize_weight(case.gate_up, scheme, case.stats_gate_up),
                                    self.ref.quantize_weight(case.down, scheme, case.stats_down))
            return experts, moe_expected(self.ref, case.x, case.topk_ids, case.topk_weights, experts, scheme,
                                         case.expert_range)

        def run(want):
            if want is None:
                self.backend.quantize_weight(self._d(case.gate_up), scheme, case.stats_gate_up)
                self.backend.quantize_weight(self._d(case.down), scheme, case.stats_down)
                return CaseResult(case.name, False, 1)
            experts, exp = want
            y = self.backend.moe(self._d(case.x), self._d(case.topk_ids), self._d(case.topk_weights),
                                 self._d(experts), scheme, expert_range=case.expert_range)
            return self._product(case.name, y, case.x.dtype, exp)

        return _guard(case.name, ref_call, run)

