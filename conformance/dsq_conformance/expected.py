"""What a product *should* be: float64 results on the reference's quantized operands, with error bounds.

Everything numeric comes from the numpy reference (``dsq_cpu_reference``): its codes, scales, dequantization
(exact in float64), activation quantization and SwiGLU. This module only composes them and derives bounds.

MoE intermediate (the reason moe bounds have an extra term): per (token t, slot j, expert e)::

    h = x_deq @ Wgu_e^T            the reference rounds h to x.dtype; a backend may round differently
    a = silu(h[:I]) * h[I:]        rounded to x.dtype, then quantized per the scheme -> a_deq
    o = a_deq @ Wd_e^T;  y64[t] = sum_j w[t, j] * o

A correct backend's h may differ from the reference's by its own matmul tolerance (``dh``). Propagated
through SwiGLU (|silu'| <= 1.1) that gives an interval ``a +- da``. Quantizing the interval's ends (with the
per-row/group scale also moved by the interval of amax) gives the codes a backend may legitimately produce;
their largest distance from the reference's ``a_deq`` is ``dev``. ``dev`` is zero for most elements of fp32
intermediates and non-zero (one code step or so) where a value sits near a rounding boundary. The bounds add
``|w| * dev @ |Wd|^T`` elementwise and ``|w| * sqrt(dev^2 @ Wd^2^T)`` normwise (flips have random sign).
The elementwise ``dev`` uses the worst-case ``dh``, the normwise one the statistical ``dh`` (eta terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsq.backend import Backend
from dsq.qtypes import ExpertWeights, PackedWeight
from dsq.schemes import ActGranularity, QType, QuantScheme
from dsq_cpu_reference import activations as ref_act
from dsq_cpu_reference import gemm as ref_gemm
from dsq_cpu_reference import weights as ref_weights
from dsq_cpu_reference.numerics import F32_TINY, fp8_e4m3_round, rint
from dsq_cpu_reference.packing import unpack_zero_points

from .tolerances import U32, matmul_bounds, tolerance, unit_roundoff

SILU_SLOPE_MAX = 1.1  #: max |d silu(g) / dg| = 1.0998 (at g ~ 2.4)


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.float8_e4m3fn:
        t = t.view(torch.uint8)
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.numpy()


def weight64(ref: Backend, packed: PackedWeight, scheme: QuantScheme) -> np.ndarray:
    """Exact float64 dequantized weight [.., N, K] of a canonical packed weight (reference codes and math)."""
    codes, _ = ref.unpack(packed, scheme)
    qp = {"weight_scale": _np(packed["weight_scale"]).astype(np.float32), "weight_zero_point": None,
          "weight_group_scale": None}
    if "weight_zero_point" in packed:
        qp["weight_zero_point"] = unpack_zero_points(_np(packed["weight_zero_point"]), packed.shape[-2],
                                                     scheme.weight_bits)
    if "weight_group_scale" in packed:
        qp["weight_group_scale"] = _np(packed["weight_group_scale"])
    return ref_weights.dequantize_weight(_np(codes), qp, scheme)


def activation64(ref: Backend, x: torch.Tensor, scheme: QuantScheme, act_src=None):
    """(x_deq float64 [M, K], QuantizedActivation or None): x itself for weight-only schemes, else the exact
    value of the reference's activation codes."""
    if scheme.weight_only:
        return x.detach().cpu().double().numpy(), None
    qa = ref.quantize_activation(x, scheme, act_src)
    zp = None if qa.zero_point is None else _np(qa.zero_point)
    return ref_act.dequantize_activation(_np(qa.values), _np(qa.scale), zp, scheme), qa


@dataclass
class Expected:
    """float64 expectation of a product and the bounds its test uses (see tolerances.check_close)."""

    y64: np.ndarray
    elem_bound: np.ndarray
    norm_bound: float


def matmul_expected(ref: Backend, x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme,
                    bias: torch.Tensor | None = None) -> Expected:
    """y64 = x_deq @ w_deq^T + bias in float64, with the scheme's matmul tolerance."""
    x64, _ = activation64(ref, x, scheme, packed)
    w64 = weight64(ref, packed, scheme)
    y64 = x64 @ w64.T
    mag = np.abs(x64) @ np.abs(w64).T
    quad = np.sqrt((x64 * x64) @ (w64 * w64).T)
    if bias is not None:
        b = bias.detach().cpu().double().numpy()
        y64, mag = y64 + b, mag + np.abs(b)
    elem, norm = matmul_bounds(y64, mag, quad, tolerance(scheme, x.dtype, packed.shape[-1]))
    return Expected(y64, elem, norm)


def _quantize_interval(lo: np.ndarray, hi: np.ndarray, s_lo, s_hi, scheme: QuantScheme, zp: float):
    """Smallest and largest dequantized value reachable from inputs in [lo, hi] and scales in [s_lo, s_hi]."""
    corners_v = [lo / s_lo, lo / s_hi, hi / s_lo, hi / s_hi]
    v_lo, v_hi = np.minimum.reduce(corners_v), np.maximum.reduce(corners_v)
    qt = scheme.act_dtype

    def code(v):
        if qt is QType.FP8_E4M3:
            return fp8_e4m3_round(np.clip(v, -448.0, 448.0))
        return np.clip(rint(v + zp, scheme.act_rounding), qt.qmin, qt.qmax) - zp

    q_lo, q_hi = code(v_lo), code(v_hi)
    corners = [q_lo * s_lo, q_lo * s_hi, q_hi * s_lo, q_hi * s_hi]
    return np.minimum.reduce(corners), np.maximum.reduce(corners)


def code_deviation(a: np.ndarray, da: np.ndarray, a_deq: np.ndarray, scheme: QuantScheme,
                   act_src: PackedWeight) -> np.ndarray:
    """Largest |a_deq' - a_deq| over activations a' in [a - da, a + da] (float64 [R, I]); see module doc."""
    if scheme.weight_only:
        return da
    lo, hi = a - da, a + da
    if scheme.act_granularity is ActGranularity.TENSOR:
        s = float(_np(act_src["input_scale"]).reshape(-1)[0])
        zp = float(_np(act_src["input_zero_point"]).reshape(-1)[0]) if "input_zero_point" in act_src else 0.0
        d_lo, d_hi = _quantize_interval(lo, hi, s, s, scheme, zp)
    else:
        divisor = 448.0 if scheme.act_dtype is QType.FP8_E4M3 else float(scheme.act_dtype.qmax)
        r, k = a.shape
        g = k if scheme.act_granularity is ActGranularity.TOKEN else scheme.act_group_size
        pad = (-k) % g
        a_lo = np.pad(np.maximum(np.abs(a) - da, 0.0), ((0, 0), (0, pad))).reshape(r, -1, g).max(-1)
        a_hi = np.pad(np.abs(a) + da, ((0, 0), (0, pad))).reshape(r, -1, g).max(-1)
        s_lo = np.repeat(np.maximum(a_lo / divisor, float(F32_TINY)), g, axis=1)[:, :k]
        s_hi = np.repeat(np.maximum(a_hi / divisor, float(F32_TINY)), g, axis=1)[:, :k]
        d_lo, d_hi = _quantize_interval(lo, hi, s_lo, s_hi, scheme, 0.0)
    # the scale itself is a correctly rounded float32 division: allow its last bit to move too
    return np.maximum(np.abs(d_lo - a_deq), np.abs(d_hi - a_deq)) + 2 * U32 * np.abs(a_deq)


def _swiglu_deviation(h: np.ndarray, dh: np.ndarray, a: np.ndarray, u_x: float) -> np.ndarray:
    """Bound on |a' - a| when each element of h moves by at most dh (first-order plus a product term)."""
    i = h.shape[1] // 2
    g, up, dg, du = h[:, :i], h[:, i:], dh[:, :i], dh[:, i:]
    silu = g / (1.0 + np.exp(-np.clip(g, -700, 700)))
    return (SILU_SLOPE_MAX * np.abs(up) * dg + (np.abs(silu) + SILU_SLOPE_MAX * dg) * du
            + (2 * u_x + 16 * U32) * np.abs(a))


def moe_expected(ref: Backend, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
                 experts: ExpertWeights, scheme: QuantScheme,
                 expert_range: tuple[int, int] | None = None) -> Expected:
    """float64 MoE output on the reference's quantized operands and intermediate, with bounds (module doc)."""
    t, h_size = x.shape[0], experts.hidden_size
    inter = experts.intermediate_size
    lo_e, hi_e = expert_range or (0, experts.num_experts)
    ids = topk_ids.detach().cpu().numpy()
    tw = topk_weights.detach().cpu().double().numpy()
    u_x = unit_roundoff(x.dtype)
    tol_gu = tolerance(scheme, x.dtype, h_size)
    tol_d = tolerance(scheme, x.dtype, inter)
    y64 = np.zeros((t, h_size))
    elem = np.zeros((t, h_size))
    norm_terms = np.zeros((t, h_size))
    for e in range(lo_e, hi_e):
        rows, slots = np.nonzero(ids == e)
        if rows.size == 0:
            continue
        gu, dn = experts.gate_up.expert(e), experts.down.expert(e)
        x_rows = x[torch.from_numpy(rows)]
        x64, _ = activation64(ref, x_rows, scheme, gu)
        wgu = weight64(ref, gu, scheme)
        h64 = x64 @ wgu.T
        mag_h = np.abs(x64) @ np.abs(wgu).T
        quad_h = np.sqrt((x64 * x64) @ (wgu * wgu).T)
        h_ref = ref.matmul(x_rows, gu, scheme)
        a_t = torch.from_numpy(ref_gemm.silu_mul(_np(h_ref).astype(np.float32))).to(x.dtype)
        a = _np(a_t).astype(np.float64)
        # worst-case (elementwise) and statistical (normwise) room for the backend's h around the reference's
        dh_w = (tol_gu.eps_out + 2 * u_x) * np.abs(h64) + tol_gu.eps_op * mag_h + tol_gu.abs_floor
        dh_s = (tol_gu.eta_out + 2 * u_x) * np.abs(h64) + tol_gu.eta_op * quad_h + tol_gu.abs_floor
        h_np = _np(h_ref).astype(np.float64)
        a_deq, _ = activation64(ref, a_t, scheme, dn)
        dev_w = code_deviation(a, _swiglu_deviation(h_np, dh_w, a, u_x), a_deq, scheme, dn)
        dev_s = code_deviation(a, _swiglu_deviation(h_np, dh_s, a, u_x), a_deq, scheme, dn)
        wd = weight64(ref, dn, scheme)
        o64 = a_deq @ wd.T
        mag_d = np.abs(a_deq) @ np.abs(wd).T
        quad_d = np.sqrt((a_deq * a_deq) @ (wd * wd).T)
        w = tw[rows, slots][:, None]
        np.add.at(y64, rows, w * o64)
        np.add.at(elem, rows, np.abs(w) * (tol_d.eps_out * np.abs(o64) + tol_d.eps_op * mag_d
                                           + dev_w @ np.abs(wd).T))
        np.add.at(norm_terms, rows, np.abs(w) * (u_x * np.abs(o64) + tol_d.eta_op * quad_d
                                                 + np.sqrt((dev_s * dev_s) @ (wd * wd).T)))
    tol = tolerance(scheme, x.dtype, inter)
    elem_bound = tol.eps_out * np.abs(y64) + elem + tol.abs_floor
    norm_bound = (tol.eta_out * float(np.linalg.norm(y64)) + float(np.linalg.norm(norm_terms))
                  + tol.abs_floor * np.sqrt(y64.size))
    return Expected(y64, elem_bound, norm_bound)
