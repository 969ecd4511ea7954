"""Per-scheme tolerances for matmul and moe, and the two tests every product result must pass.

A backend's ``y`` is compared with ``y64``, the float64 product of the *reference's* quantized operands
(its dequantized weights and, for schemes that quantize activations, its dequantized activation codes), so
the only differences a correct backend can show come from (a) accumulation order, (b) intermediate
roundings a kernel legitimately performs and (c) rounding the output to the activation dtype. With
``Mag = |x_deq| @ |w_deq|^T`` (the sum of absolute products) and ``Q = sqrt(x_deq^2 @ (w_deq^2)^T)`` (their
root-sum-square) the tests are:

elementwise (worst-case analysis; catches a wrong element, row, column, group or scale)::

    |y - y64| <= eps_out * |y64| + eps_op * Mag + abs_floor

normwise (statistical; catches a small error spread over every element, e.g. a 1% matmul error)::

    ||y - y64||_F <= eta_out * ||y64||_F + eta_op * ||Q||_F + abs_floor * sqrt(numel)

``u(dt)`` below is the unit roundoff (half an ulp, relative): bf16 2^-8, fp16 2^-11, fp32 2^-24.

* ``eps_out = 2 u(x) + 8 u(fp32)``: the final rounding to x.dtype, one more rounding in x.dtype (Ascend's
  int8 GEMMs apply a scale held in the model dtype) and a few fp32 epilogue operations.
* ``eps_op`` by scheme family (K = reduction length):

  - weight-only (W8A16, W4A16*): kernels dequantize weights to the MMA input format: x.dtype for bf16/fp16,
    TF32 (u = 2^-11) for fp32, which Triton and cuBLAS use by default; ``2 u_mma + K u(fp32)`` covers
    rounding both MMA operands plus any fp32 accumulation order.
  - int8 activations (W8A8, W8A8_DYNAMIC, W4A8_DYNAMIC): int8 x int8 products accumulate exactly in int32;
    scales and per-group partial sums are combined in fp32: ``K u(fp32)``.
  - fp8 activations (W4AFP8, FP8_BLOCK): e4m3 x e4m3 products are exact, but Hopper's FP8 MMA accumulates
    with about 14 significant bits before kernels promote partial sums to fp32 every 128 inputs. Worst
    case that is 128 * 2^-14 * Mag per 128-chunk, which would make the test useless; the realistic maximum
    is a few 2^-13 of Mag, and ``2^-8 + K u(fp32)`` leaves a factor of 8 above it.
* ``eta_out = max(1.5 u(x), 8 u(fp32))`` bounds the final rounding (at most ``u(x)`` per element, so at most
  ``u(x)`` normwise) plus the extra scale rounding on average. ``eta_op`` is the root-mean-square of the
  intermediate rounding errors with a safety factor of about 4: weight-only ``u_mma / 2``, int8 ``2^-20``,
  fp8 ``2^-9``. For random data ``||Q|| ~ ||y64||``, so bf16 allows about 0.6% + 0.2%: a 1% error fails.
* ``abs_floor`` is the smallest positive subnormal of x.dtype: the rounding error of an underflowing output.

MoE adds the intermediate activation (see :mod:`dsq_conformance.expected`): a legitimate 1-ulp difference in
the gate/up output can flip activation codes, so the moe bounds carry an extra per-element term derived by
interval arithmetic from the gate/up tolerance. docs/conformance.md has the full justification.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsq.schemes import QType, QuantScheme

U32 = 2.0**-24
_UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11, torch.float32: U32}
_SMALLEST_SUBNORMAL = {torch.bfloat16: 2.0**-133, torch.float16: 2.0**-24, torch.float32: 2.0**-149}
TF32_UNIT_ROUNDOFF = 2.0**-11


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half an ulp, relative, of a float dtype (bf16 2^-8, fp16 2^-11, fp32 2^-24)."""
    return _UNIT_ROUNDOFF[dtype]


def family(scheme: QuantScheme) -> str:
    """'weight_only', 'int8' or 'fp8': which MMA the scheme's kernels run."""
    if scheme.weight_only:
        return "weight_only"
    return "fp8" if scheme.act_dtype is QType.FP8_E4M3 else "int8"


@dataclass(frozen=True)
class Tolerance:
    """Coefficients of the elementwise and normwise tests (see the module docstring)."""

    eps_out: float
    eps_op: float
    eta_out: float
    eta_op: float
    abs_floor: float


def tolerance(scheme: QuantScheme, dtype: torch.dtype, k: int) -> Tolerance:
    """The tolerance for ``matmul(x, W)`` with x of ``dtype`` and reduction length ``k``."""
    u = unit_roundoff(dtype)
    fam = family(scheme)
    acc = k * U32
    if fam == "weight_only":
        u_mma = TF32_UNIT_ROUNDOFF if dtype == torch.float32 else u
        eps_op, eta_op = 2 * u_mma + acc, u_mma / 2
    elif fam == "int8":
        eps_op, eta_op = acc, 2.0**-20
    else:
        eps_op, eta_op = 2.0**-8 + acc, 2.0**-9
    return Tolerance(eps_out=2 * u + 8 * U32, eps_op=eps_op, eta_out=max(1.5 * u, 8 * U32), eta_op=eta_op,
                     abs_floor=_SMALLEST_SUBNORMAL[dtype])


@dataclass
class Closeness:
    """Outcome of comparing one product result with its float64 expectation.

    ``bound_ratio``: the larger of max(|y - y64| / elementwise bound) and (normwise error / normwise bound);
    the result passes when it is <= 1. ``rel_err``: ||y - y64||_F / ||y64||_F (0 when y64 is all zero).
    """

    ok: bool
    bound_ratio: float
    rel_err: float
    message: str = ""


def check_close(y: np.ndarray, y64: np.ndarray, elem_bound: np.ndarray, norm_bound: float) -> Closeness:
    """Apply both tests given precomputed bounds (float64 arrays of y64's shape, and a scalar).

    ``elem_bound`` already includes every term of the elementwise test; ``norm_bound`` the normwise one.
    """
    if y.shape != y64.shape:
        return Closeness(False, float("inf"), float("inf"), f"shape {y.shape}, expected {y64.shape}")
    if not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        return Closeness(False, float("inf"), float("inf"), f"{bad} non-finite output values")
    if y.size == 0:
        return Closeness(True, 0.0, 0.0)
    err = np.abs(y - y64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / elem_bound)
    worst = int(np.argmax(ratio))
    elem_ratio = float(ratio.flat[worst])
    norm_err = float(np.sqrt(np.sum(err * err)))
    norm_ratio = norm_err / norm_bound if norm_bound > 0 else (0.0 if norm_err == 0 else float("inf"))
    ref_norm = float(np.sqrt(np.sum(y64 * y64)))
    rel = norm_err / ref_norm if ref_norm > 0 else (0.0 if norm_err == 0 else float("inf"))
    ok = elem_ratio <= 1.0 and norm_ratio <= 1.0
    msg = ""
    if not ok:
        idx = np.unravel_index(worst, y.shape)
        msg = (f"elementwise: worst at {tuple(int(i) for i in idx)}: got {y.flat[worst]:.9g}, expected "
               f"{y64.flat[worst]:.9g}, |err| {err.flat[worst]:.3g} > bound {elem_bound.flat[worst]:.3g} "
               f"(x{elem_ratio:.3g}); normwise: ||err|| {norm_err:.3g} vs bound {norm_bound:.3g} "
               f"(x{norm_ratio:.3g}), relative error {rel:.3g}")
    return Closeness(ok, max(elem_ratio, norm_ratio), rel, msg)


def matmul_bounds(y64: np.ndarray, mag: np.ndarray, quad: np.ndarray, tol: Tolerance) -> tuple[np.ndarray, float]:
    """(elementwise bound array, normwise bound) for a plain matmul."""
    elem = tol.eps_out * np.abs(y64) + tol.eps_op * mag + tol.abs_floor
    norm = (tol.eta_out * float(np.linalg.norm(y64)) + tol.eta_op * float(np.linalg.norm(quad))
            + tol.abs_floor * np.sqrt(y64.size))
    return elem, norm
