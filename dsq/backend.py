"""The kernel interface every backend implements, and its capability matrix.

A backend is an object with the six verbs below. The numpy reference (``cpu-reference``) defines the
results; other backends must match it bit for bit on ``calibrate``, ``pack`` and ``quantize_activation``
and within the conformance tolerances on ``matmul`` and ``moe`` (docs/conformance.md).

Verbs (weights are ``[N, K]`` or stacked ``[E, N, K]``; x is ``[M, K]``):
    calibrate(weight, scheme, act_stats=None) -> QParams
    pack(weight, qparams, scheme) -> PackedWeight              canonical layout, see dsq.qtypes
    unpack(packed, scheme) -> (codes, dequantized)              codes int8/float8 [.., N, K]; dequantized float32
    quantize_activation(x, scheme, act_qparams=None) -> QuantizedActivation
    matmul(x, packed, scheme, bias=None) -> y [M, N]            y in x.dtype
    moe(x, topk_ids, topk_weights, experts, scheme, expert_range=None) -> y [T, H] in x.dtype

``act_qparams`` for static schemes is the PackedWeight (or QParams) holding ``input_scale`` and
``input_zero_point``. ``expert_range=(lo, hi)`` keeps only experts lo..hi-1 (expert parallelism: the caller
sums the ranks' outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsq.errors import UnsupportedError
from dsq.qtypes import ExpertWeights, PackedWeight, QParams, QuantizedActivation
from dsq.schemes import QuantScheme, get_scheme, list_schemes

OPS = ("calibrate", "pack", "unpack", "quantize_activation", "matmul", "moe")


@dataclass(frozen=True)
class Capability:
    """Whether a backend supports one scheme x op, and if not, why."""

    supported: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.supported


YES = Capability(True)


class Backend:
    """Base class for backends. Subclasses set ``name``/``aliases`` and implement the verbs they support.

    ``name`` is the canonical name (``"cpu-reference"``); ``aliases`` are other names users may type
    (``("cpu", "numpy")``). ``device`` is the torch device kernels run on.
    """

    name: str = ""
    aliases: tuple[str, ...] = ()
    device: str = "cpu"
    description: str = ""

    # -- discovery ----------------------------------------------------------------------------------
    def is_available(self) -> tuple[bool, str]:
        """(True, "") when the backend can run here, else (False, why and how to fix it)."""
        return True, ""

    def supports(self, scheme: QuantScheme, op: str) -> Capability:
        """Capability of one scheme x op; the default says every verb of every scheme is supported."""
        return YES

    def capabilities(self) -> dict[str, dict[str, Capability]]:
        """The capability matrix: scheme name -> op -> Capability, over every preset scheme."""
        return {s: {op: self.supports(get_scheme(s), op) for op in OPS} for s in list_schemes()}

    def require(self, scheme: QuantScheme, op: str) -> None:
        """Raise UnsupportedError (with the backend's reason) unless ``op`` is supported for ``scheme``."""
        cap = self.supports(scheme, op)
        if not cap:
            raise UnsupportedError(f"backend {self.name!r} does not support {op} for {scheme.name}: {cap.reason}")

    # -- the kernel interface -----------------------------------------------------------------------
    def calibrate(self, weight: torch.Tensor, scheme: QuantScheme, act_stats=None) -> QParams:
        raise UnsupportedError(f"backend {self.name!r} does not implement calibrate")

    def pack(self, weight: torch.Tensor, qparams: QParams, scheme: QuantScheme) -> PackedWeight:
        raise UnsupportedError(f"backend {self.name!r} does not implement pack")

    def unpack(self, packed: PackedWeight, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
        raise UnsupportedError(f"backend {self.name!r} does not implement unpack")

    def quantize_activation(self, x: torch.Tensor, scheme: QuantScheme, act_qparams=None) -> QuantizedActivation:
        raise UnsupportedError(f"backend {self.name!r} does not implement quantize_activation")

    def matmul(self, x: torch.Tensor, packed: PackedWeight, scheme: QuantScheme,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        raise UnsupportedError(f"backend {self.name!r} does not implement matmul")

    def moe(self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor,
            experts: ExpertWeights, scheme: QuantScheme,
            expert_range: tuple[int, int] | None = None) -> torch.Tensor:
        raise UnsupportedError(f"backend {self.name!r} does not implement moe")

    def prepare(self, weights: PackedWeight | ExpertWeights, scheme: QuantScheme) -> None:
        """Build the backend's private device layouts of ``weights`` now instead of at their first use.

        Call it before capturing CUDA graphs (``dsq.prepare_for_graphs(model)`` does it for a whole model):
        a layout built inside capture would be recorded into the graph. The canonical tensors are not
        changed. The default has nothing to build."""

    # -- convenience --------------------------------------------------------------------------------
    def quantize_weight(self, weight: torch.Tensor, scheme: QuantScheme, act_stats=None) -> PackedWeight:
        """calibrate + pack in one call."""
        return self.pack(weight, self.calibrate(weight, scheme, act_stats), scheme)

    def __repr__(self) -> str:
        return f"<dsq backend {self.name} on {self.device}>"
