"""dsq's cuda backend: Triton kernels for calibrate, pack, activation quantization and matmul of every scheme.

Registered through the ``dsq.backends`` entry point ``cuda`` as backend ``"cuda"`` (alias ``"gpu"``).
Triton is imported only when a kernel runs (``pip install 'dsq[cuda]'``); without a GPU the backend is
available only under ``TRITON_INTERPRET=1`` (CPU tensors, small shapes: CI).

Modules: _env (where it runs), numerics (bit-exact rounding helpers), calibrate, pack, unpack, act_quant
(activation quantization, reused by the fused MoE), mm_kernel (the GEMM kernel), mm (device layout and
launch), configs (tile configs per shape class), backend (the Backend subclass).
"""

import dsq
from dsq_cuda.backend import CudaBackend

__all__ = ["CudaBackend"]


@dsq.hookimpl
def dsq_register_backends(register):
    register(CudaBackend())
