"""Where the cuda backend runs: a CUDA device, or the Triton interpreter on CPU tensors (CI).

Triton is imported lazily (it is the optional ``cuda`` extra), so ``import dsq_cuda`` never fails and
``is_available()`` can say why the backend cannot run instead.
"""

from __future__ import annotations

import functools
import os

import torch

#: None: :func:`deterministic` follows ``torch.use_deterministic_algorithms``; True / False force it (benchmarks)
DETERMINISTIC: bool | None = None


def deterministic() -> bool:
    """Whether the caller asked PyTorch for deterministic algorithms (``torch.use_deterministic_algorithms``).
    Then no kernel of this backend adds float partial sums in the order its programs arrive: the dense decode GEMM
    and the GEMV keep a slot per split-K partial and add the slots in slot order (dsq_cuda.mm.FIXUP_SLOTS,
    gemv_kernel SLOTS), every other split-K launch runs unsplit, so a call gives the same bits every time (at a
    cost in speed: docs/benchmarks/cuda.md v17, cuda-moe.md v20)."""
    return torch.are_deterministic_algorithms_enabled() if DETERMINISTIC is None else DETERMINISTIC


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1``: kernels run in Triton's numpy interpreter on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


@functools.lru_cache(maxsize=1)
def triton_error() -> str:
    """Empty when triton imports, else why it does not."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"triton is not importable ({type(exc).__name__}: {exc}); install the extra: pip install 'dsq[cuda]'"
    return ""


def availability() -> tuple[bool, str, str]:
    """(available, device, reason). CUDA wins; the interpreter serves CPU tensors when no GPU is present."""
    err = triton_error()
    if err:
        return False, "cpu", err
    if torch.cuda.is_available():
        return True, "cuda", ""
    if interpreting():
        return True, "cpu", ""
    return False, "cpu", ("no CUDA device is visible to torch (torch.cuda.is_available() is False); "
                          "set TRITON_INTERPRET=1 to run the same kernels in the Triton interpreter on CPU")


def is_hopper(device: torch.device | str) -> bool:
    """True on compute capability 9.x (wgmma, FP8 tensor cores)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return False
    return torch.cuda.get_device_capability(dev)[0] >= 9


def has_fp8_mma(device: torch.device | str) -> bool:
    """FP8 tensor-core dots need sm_89+; the interpreter emulates them on CPU."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return interpreting()
    major, minor = torch.cuda.get_device_capability(dev)
    return (major, minor) >= (8, 9)


def check_not_capturing(what: str) -> None:
    """Device layouts of packed weights are built at their first use. Inside CUDA graph capture that
    conversion would be recorded into the graph (and rerun at every replay, into the graph's memory pool),
    so it is refused with the fix instead."""
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(f"dsq_cuda: the {what} of a packed weight is built at its first use, and that use is "
                           "inside CUDA graph capture; build it before capturing: backend.prepare(packed, scheme) "
                           "(or dsq.prepare_for_graphs(model)), or one eager call of the same batch size")
