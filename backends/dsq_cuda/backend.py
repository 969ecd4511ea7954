"""CudaBackend: the kernel interface on NVIDIA GPUs through Triton (or the Triton interpreter on CPU in CI)."""

from __future__ import annotations

import importlib
import importlib.util

import torch

from dsq.backend import YES, Backend, Capability
from dsq.errors import BackendUnavailableError, UnsupportedError
from dsq.qtypes import ExpertWeights, PackedWeight, QParams, QuantizedActivation
from dsq.schemes import Granularity, QType, QuantScheme
from dsq.validate import check_activation, check_packed, check_weight
from dsq_cuda import _env


def _has_moe_module() -> bool:
    return importlib.util.find_spec("dsq_cuda.moe") is not None


class CudaBackend(Backend):
    """Triton kernels for calibrate, pack, activation quantization and matmul of every dsq scheme.

    Runs on ``cuda`` when a GPU is visible; with ``TRITON_INTERPRET=1`` and no GPU the same kernels run in
    the Triton interpreter on CPU tensors (CI). calibrate/pack/quantize_activation match the numpy reference
    bit for bit; matmul differs only by float32 accumulation order and the final rounding.
    """

    name = "cuda"
    aliases = ("gpu",)

    @property
    def device(self) -> str:  # type: ignore[override]
        return _env.availability()[1]

    @property
    def description(self) -> str:  # type: ignore[override]
        ok, dev, _ = _env.availability()
        if ok and dev == "cpu":
            return "PyTorch + Triton kernels, running in the Triton interpreter on CPU (TRITON_INTERPRET=1)"
        return "PyTorch + Triton kernels for NVIDIA GPUs (int4/int8/fp8 GEMMs, split-K decode path)"

    def is_available(self) -> tuple[bool, str]:
        ok, _, why = _env.availability()
        return ok, why

    def _ready(self) -> torch.device:
        ok, dev, why = _env.availability()
        if not ok:
            raise BackendUnavailableError(f"backend 'cuda' is not available here: {why}")
        if dev == "cuda":
            # with its index: layouts are cached per device under str(device), and a tensor's device (the
            # key at call time) is "cuda:0", never "cuda"
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(dev)

    def supports(self, scheme: QuantScheme, op: str) -> Capability:
        if op in ("matmul", "moe") and not scheme.weight_symmetric and scheme.weight_bits != 4:
            # the GEMM kernels subtract int4 zero points only (calibrate, pack and unpack take any width)
            return Capability(False, f"asymmetric weights (zero points) need int4 codes for {op} on this backend "
                                     f"(as W4A16_ASYM); {scheme.name} has {scheme.weight_bits}-bit codes")
        if op == "moe":
            if not _has_moe_module():
                return Capability(False, "the fused MoE kernels (dsq_cuda.moe, issue 6) are not installed yet")
            mod = importlib.import_module("dsq_cuda.moe")
            if hasattr(mod, "supports"):
                return mod.supports(self, scheme)
            return YES
        if op == "quantize_activation" and scheme.weight_only:
            return Capability(False, f"{scheme.name} is weight-only: activations stay in float")
        if op == "matmul":
            group = scheme.group_size if (scheme.weight_granularity is Granularity.GROUP or scheme.two_level) \
                else 0
            if group and group % 16:
                return Capability(False, f"group_size {group} is not a multiple of 16 (tensor-core K tile)")
            if scheme.weight_granularity is Granularity.BLOCK:
                bn, bk = scheme.block_size
                if bk % 16 or bk != scheme.act_group_size:
                    return Capability(False, f"block_size {scheme.block_size} needs a K block that is a multiple "
                                             f"of 16 and equal to act_group_size ({scheme.act_group_size})")
            if scheme.act_dtype is QType.FP8_E4M3 and _env.availability()[0] and \
                    not _env.has_fp8_mma(self.device):
                return Capability(False, "FP8 tensor-core MMA needs compute capability 8.9 or newer")
        return YES

    # -- verbs ----------------------------------------------------------------------------------
    def calibrate(self, weight: torch.Tensor, scheme: QuantScheme, act_stats=None) -> QParams:
        dev = self._ready()
        check_weight(weight, scheme)
        from dsq_cuda.calibrate import calibrate
        return calibrate(weight.to(dev), scheme, act_stats)

    def pack(self, weight: torch.Tensor, qparams: QParams, scheme: QuantScheme) -> PackedWeight:
        dev = self._ready()
        check_weight(weight, scheme)
        from dsq_cuda.pack import pack
        return pack(weight.to(dev), qparams, scheme)

    def unpack(self, packed: PackedWeight, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self._ready()
        check_packed(packed, scheme, ndim=len(packed.shape))
        from dsq_cuda.unpack import unpack
        moved = PackedWeight(packed.scheme, packed.shape, {k: v.to(dev) for k, v in packed.tensors.items()})
        return unpack(moved, scheme)

    def quantize_activation(self, x: torch.Tensor, scheme: QuantScheme, act_qparams=None) -> QuantizedActivation:
        dev = self._ready()
        self.require(scheme, "quantize_activation")
        check_activation(x, None)
        from dsq_cuda.act_quant import quantize_activation
        return quantize_activation(x.to(dev), scheme, act_qparams)

    def matmul(self, x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        dev = self._ready()
        self.require(scheme, "matmul")
        check_packed(packed, scheme, ndim=2)
        check_activation(x, packed.shape[-1])
        from dsq_cuda.mm import matmul
        return matmul(x.to(dev), packed, scheme, bias)

    def prepare(self, weights: PackedWeight | ExpertWeights, scheme: QuantScheme) -> None:
        dev = self._ready()
        if isinstance(weights, ExpertWeights):
            if _has_moe_module():
                importlib.import_module("dsq_cuda.moe").prepare_all(weights, scheme, dev)
            return
        check_packed(weights, scheme, ndim=2)
        from dsq_cuda.mm import prepare_all
        prepare_all(weights, scheme, dev)

    def moe(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
            experts: ExpertWeights, scheme: QuantScheme,
            expert_range: tuple[int, int] | None = None) -> torch.Tensor:
        self._ready()
        if not _has_moe_module():
            raise UnsupportedError("backend 'cuda' does not support moe yet: the fused MoE kernels "
                                   "(dsq_cuda.moe, issue 6) are not installed")
        mod = importlib.import_module("dsq_cuda.moe")
        return mod.moe(self, x, topk_ids, topk_weights, experts, scheme, expert_range)
