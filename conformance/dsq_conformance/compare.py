"""Bit-for-bit comparison of tensors (dtype, shape and every bit), with a message a person can act on.

Floats are compared as their bit patterns (so -0.0 != +0.0 and a 1-ulp difference is a mismatch); fp8 as
uint8 codes; integers as integers. The metric reported is the number of differing elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_BITS_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16,
              torch.float8_e4m3fn: torch.uint8, torch.float64: torch.int64}


@dataclass
class BitDiff:
    """Result of one bitwise comparison: ``mismatches`` elements differ (0 = equal); ``message`` says how."""

    mismatches: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.mismatches == 0


def _show(t: torch.Tensor) -> str:
    if t.dtype == torch.float8_e4m3fn:
        return f"0x{int(t.view(torch.uint8)):02x} ({float(t.float()):.6g})"
    if t.dtype.is_floating_point:
        return f"{float(t):.9g}"
    return str(int(t))


def bits_equal(name: str, got, want) -> BitDiff:
    """Compare ``got`` (backend) with ``want`` (reference): both None, or same dtype, shape and bits."""
    if want is None and got is None:
        return BitDiff(0)
    if want is None or got is None:
        which = "is missing" if got is None else "is present but the reference has none"
        return BitDiff(1, f"{name} {which}")
    if not isinstance(got, torch.Tensor):
        return BitDiff(1, f"{name} is a {type(got).__name__}, expected a torch.Tensor")
    got, want = got.detach().cpu(), want.detach().cpu()
    if got.dtype != want.dtype:
        return BitDiff(max(want.numel(), 1), f"{name} has dtype {got.dtype}, expected {want.dtype}")
    if tuple(got.shape) != tuple(want.shape):
        return BitDiff(max(want.numel(), 1), f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    view = _BITS_VIEW.get(want.dtype)
    g = got.contiguous().view(view) if view is not None else got.contiguous()
    w = want.contiguous().view(view) if view is not None else want.contiguous()
    diff = g != w
    n = int(diff.sum())
    if n == 0:
        return BitDiff(0)
    first = tuple(int(i) for i in diff.nonzero()[0])
    return BitDiff(n, f"{name}: {n} of {want.numel()} elements differ; first at {first}: "
                      f"got {_show(got[first])}, expected {_show(want[first])}")
