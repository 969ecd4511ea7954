"""Run the cuda backend's Triton kernels in the Triton interpreter on CPU (CI has no GPU).

TRITON_INTERPRET must be set before triton is first imported, so it is set here at collection time. On a
machine with a GPU the same tests run on the GPU (then TRITON_INTERPRET is left alone if already set).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: F401
except Exception:  # pragma: no cover - the cuda extra is not installed
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def cuda_backend():
    import dsq

    return dsq.get_backend("cuda")


@pytest.fixture(scope="session")
def ref_backend():
    import dsq

    return dsq.get_backend("cpu-reference")
