"""Unit checks of the suite's building blocks: bit comparison, the tolerance numbers, the closeness test
and the MoE code-flip interval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dsq
from dsq_conformance.compare import bits_equal
from dsq_conformance.expected import code_deviation
from dsq_conformance.tolerances import check_close, matmul_bounds, tolerance

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def test_bits_equal_sees_signed_zero_one_ulp_dtype_and_shape():
    a = torch.tensor([0.0, 1.0], dtype=torch.bfloat16)
    assert bits_equal("t", a, a.clone()).ok
    assert bits_equal("t", torch.tensor([-0.0, 1.0], dtype=torch.bfloat16), a).mismatches == 1
    one_ulp = torch.nextafter(a, torch.full_like(a, 2.0))
    d = bits_equal("t", one_ulp, a)
    assert d.mismatches == 2 and "first at (0,)" in d.message
    assert not bits_equal("t", a.float(), a).ok and "dtype" in bits_equal("t", a.float(), a).message
    assert "shape" in bits_equal("t", a[:1], a).message
    fp8 = torch.tensor([0.5, -2.0]).to(torch.float8_e4m3fn)
    assert bits_equal("v", fp8, fp8.clone()).ok
    assert "missing" in bits_equal("zp", None, torch.zeros(1)).message


@pytest.mark.parametrize("scheme", dsq.list_schemes())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_normwise_allowance_is_below_one_percent(scheme, dtype):
    """With ||Q|| ~ ||y64|| (random data) the normwise allowance must leave a 1% error detectable."""
    tol = tolerance(dsq.get_scheme(scheme), dtype, k=7168)
    assert tol.eta_out + tol.eta_op < 0.008
    assert tol.eps_out >= 2 * {torch.bfloat16: 2**-8, torch.float16: 2**-11, torch.float32: 2**-24}[dtype]


def _product_case(seed=0, m=8, n=16, k=256):
    g = np.random.default_rng(seed)
    x, w = g.standard_normal((m, k)), g.standard_normal((n, k))
    return x @ w.T, np.abs(x) @ np.abs(w).T, np.sqrt((x * x) @ (w * w).T)


def test_check_close_accepts_bf16_rounding_and_rejects_one_percent():
    y64, mag, quad = _product_case()
    elem, norm = matmul_bounds(y64, mag, quad, tolerance(dsq.get_scheme("W8A8_DYNAMIC"), torch.bfloat16, 256))
    rounded = torch.from_numpy(y64).to(torch.bfloat16).double().numpy()
    assert check_close(rounded, y64, elem, norm).ok
    bad = check_close(rounded * 1.01, y64, elem, norm)
    assert not bad.ok and bad.rel_err > 0.009 and "normwise" in bad.message
    one_wrong = rounded.copy()
    one_wrong[3, 5] += 0.05 * np.abs(y64).max()
    assert not check_close(one_wrong, y64, elem, norm).ok
    nan = rounded.copy()
    nan[0, 0] = np.nan
    assert "non-finite" in check_close(nan, y64, elem, norm).message
    assert "shape" in check_close(rounded[:2], y64, elem, norm).message


def test_code_deviation_is_zero_far_from_ties_and_a_step_at_a_tie():
    scheme = dsq.get_scheme("W8A8_DYNAMIC")
    step = 2.0**-4
    a = np.array([[127 * step, 10 * step, 20.5 * step, -3 * step]])  # scale = step exactly
    a_deq = np.array([[127 * step, 10 * step, 20 * step, -3 * step]])  # 20.5 rounds to even 20
    dev = code_deviation(a, np.full_like(a, 1e-9), a_deq, scheme, None)
    assert dev[0, 1] < 1e-5 * step and dev[0, 3] < 1e-5 * step  # only the float32 scale ulp
    assert dev[0, 2] >= step * 0.99  # the tie may go either way: one code step
    exact = code_deviation(a, np.zeros_like(a), a_deq, scheme, None)  # no room: only the scale ulp term
    assert (exact <= 2 * 2.0**-24 * np.abs(a_deq) + 1e-15).all()
