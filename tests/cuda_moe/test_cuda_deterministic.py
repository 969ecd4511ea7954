"""``torch.use_deterministic_algorithms(True)``: no cuda-backend kernel adds float partial sums in arrival order.

By default split-K launches add float32 partial sums with atomics in the order their programs arrive, so a row
of three or more partials can change its last bit from call to call (benchmarks/cuda/repeat_probe.py). Under
PyTorch's deterministic mode (dsq_cuda._env.deterministic) the dense decode GEMM and the GEMV (dense, and the
MoE's one-token path) keep a slot per partial and add the slots in a fixed order (dsq_cuda.mm.FIXUP_SLOTS,
gemv_kernel SLOTS), and every other split-K launch runs unsplit. These tests record
every Triton launch of the MoE layer (T = 1 GEMV, T = 8 decode, T = 80 tiled) and of the dense GEMM, and check
that no launch splits K into atomics, that the results still match the reference, and that repeated calls give
the same bits. In CPU CI they run in the interpreter; with DSQ_MOE_TEST_DEVICE=cuda on a GPU, where arrival
order really varies (set CUBLAS_WORKSPACE_CONFIG=:4096:8, as PyTorch's deterministic mode asks of cuBLAS users).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("triton")

from moe_cases import DEVICE, make_experts, reference, rel_err, to_device  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

import dsq  # noqa: E402
from dsq_cuda import fixup, mm  # noqa: E402
from dsq_cuda.moe import run_moe  # noqa: E402


@contextlib.contextmanager
def deterministic_mode(on: bool):
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


@pytest.fixture
def launches(monkeypatch):
    """Every Triton launch while the test runs: (kernel name, its keyword arguments)."""
    seen: list[tuple[str, dict]] = []
    for cls in (JITFunction, InterpretedFunction):
        real = cls.run

        def run(self, *args, _real=real, **kwargs):
            seen.append((getattr(self, "__name__", None) or self.fn.__name__, kwargs))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, "run", run)
    return seen


def _atomic_splits(seen: list[tuple[str, dict]]) -> list[str]:
    """Launches that split K into float partial sums met in arrival order (split-K atomics, or a fixup without
    slots)."""
    bad = []
    for name, kw in seen:
        split = kw.get("SPLIT_K", 1)
        if kw.get("SLOTS"):  # a slot per partial, added in slot order
            continue
        if kw.get("FIXUP"):
            bad.append(f"{name} (split-K fixup with atomics)")
        elif split > 1:
            bad.append(f"{name} SPLIT_K={split}")
    return bad


def _slot_splits(seen: list[tuple[str, dict]]) -> int:
    """Launches that split K and add the partials in slot order."""
    return sum(1 for _, kw in seen if kw.get("SLOTS") and (kw.get("SPLIT_K", 1) > 1 or kw.get("FIXUP")))


GPU = DEVICE != "cpu"
REPEATS = 20 if GPU else 1  # (the interpreter runs programs in order: repeats matter on a GPU)


def _moe_problem(scheme_name: str, t: int):
    e, k, h, i = (8, 2, 1024, 256) if GPU else (8, 2, 1024, 64)  # (H deep enough for split-K by default)
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=7)
    g = torch.Generator().manual_seed(t)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    w = torch.rand(t, k, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    return scheme, cpu, dev, ids, w, x, e


@pytest.mark.parametrize("scheme_name,t", [("W4A16", 1), ("W8A8", 1), ("W4A16", 8), ("W4A8_DYNAMIC", 8),
                                           ("W8A8", 8), ("W8A16", 8), ("W4A16", 80)])
def test_moe_under_deterministic_mode_never_splits_into_atomics(launches, scheme_name, t):
    scheme, cpu, dev, ids, w, x, e = _moe_problem(scheme_name, t)
    args = (x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)
    run_moe(*args)
    default_splits = _atomic_splits(launches)
    launches.clear()
    with deterministic_mode(True):
        y = run_moe(*args)
        again = [run_moe(*args) for _ in range(REPEATS)]
    assert not _atomic_splits(launches), _atomic_splits(launches)
    assert launches, "no Triton launch recorded"
    assert rel_err(y, reference().moe(x, ids, w, cpu, scheme)) < 4e-3
    assert all(torch.equal(z, y) for z in again)
    if t < 80:  # (the tiled prefill never splits K): the decode paths do by default at these shapes
        assert default_splits, "the default path was expected to split K here"
    if t == 1:  # the one-token GEMV keeps its split, in slots, each written by the call that reads it
        assert _slot_splits(launches)
        for sums, counts in fixup.WORKSPACES.values():
            assert not counts.any()
            sums.fill_(float("nan"))
        with deterministic_mode(True):
            assert torch.equal(run_moe(*args), y)


@pytest.mark.parametrize("name,m,n,k", [("W4A16", 16, 1536, 2048), ("W8A16", 4, 2048, 2048),
                                        ("W4A8_DYNAMIC", 1, 1536, 2048), ("W8A8", 8, 512, 4096),
                                        ("W4A16", 1, 64, 384)])
def test_dense_matmul_under_deterministic_mode_never_splits_into_atomics(launches, name, m, n, k):
    """The tensor-core decode GEMM keeps its split (slots, summed in order); the GEMV (shallow K) and the tiled
    kernel (W8A8) run unsplit. (On CPU at most 128 rows and K 1024: the interpreter's configs split K there too.)"""
    if not GPU:
        n, k = min(n, 128), min(k, 1024) if k > 1024 else k
    scheme = dsq.get_scheme(name)
    g = torch.Generator().manual_seed(m + n)
    w = torch.randn(n, k, generator=g) * 0.05
    x = torch.randn(m, k, generator=g).to(torch.bfloat16)
    stats = None
    if scheme.static_activations:
        from dsq.qtypes import ActStats

        stats = ActStats(-3.0, 2.5)
    ref = reference()
    pw = ref.quantize_weight(w, scheme, stats)
    pw_dev = to_device(pw)
    with deterministic_mode(True):
        y = mm.matmul(x.to(DEVICE), pw_dev, scheme)
        again = [mm.matmul(x.to(DEVICE), pw_dev, scheme) for _ in range(REPEATS)]
    assert not _atomic_splits(launches), _atomic_splits(launches)
    fixups = [kw for _, kw in launches if kw.get("FIXUP")]
    assert all(kw["SLOTS"] >= 2 for kw in fixups)
    if name == "W4A16" and m == 1 and k < 512:  # the GEMV (shallow K) keeps its split, in slots
        assert _slot_splits(launches)
    assert rel_err(y.float(), ref.matmul(x, pw, scheme).float()) < 1e-2
    assert all(torch.equal(z, y) for z in again)
