"""dsq's cuda backend: Triton kernels for calibrate, pack, activation quantization and matmul of every scheme.

Registered through the ``dsq.backends`` entry point ``cuda`` as backend ``"cuda"`` (alias ``"gpu"``).
Triton is imported only when a kernel runs (``pip install 'dsq[cuda]'``); without a GPU the backend is
available only under ``TRITON_INTERPRET=1`` (CPU tensors, small shapes: CI).

Modules: _env (where it runs), numerics (bit-exact rounding helpers), calibrate, pack, unpack, act_quant
(activation quantization, reused by the fused MoE), mm_kernel (the GEMM kernel), mma_decode_kernel and
gemv_kernel (decode), dequant_kernel and expand_kernel (prefill: packed codes to bf16 / one byte per weight),
block_fp8 (cuBLAS's block-scaled FP8 GEMM), mm (device layout and dispatch), configs (tile configs per shape
class), moe* (the fused MoE layer), backend (the Backend subclass). docs/architecture.md says which runs when.
"""

import dsq
from dsq_cuda.backend import CudaBackend

__all__ = ["CudaBackend"]


@dsq.hookimpl
def dsq_register_backends(register):
    register(CudaBackend())
