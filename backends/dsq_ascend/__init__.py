"""dsq's Ascend backend: torch_npu fused quantized ops on 910B/910C, or their CPU emulation (DSQ_EMULATE=1).

Modules: layouts (bit-exact device layouts), emulated_ops (the op contracts, on CPU), runtime (op selection,
lazy torch_npu import), canonical (host calibrate/pack), prepare (device tensors per scheme),
activations, backend (the kernel interface), moe. torch_npu is never imported at plugin load.
"""

from dsq.hookspecs import hookimpl

from .backend import AscendBackend

__all__ = ["AscendBackend"]


@hookimpl
def dsq_register_backends(register):
    register(AscendBackend())
