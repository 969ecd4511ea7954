"""dsq: quantize DeepSeek-class MoE models once, run them on any accelerator, prove they agree.

Core concepts (one module each):
    dsq.schemes   QuantScheme: what the numbers mean; presets by name
    dsq.qtypes    QParams, PackedWeight, QuantizedActivation, ExpertWeights: what the verbs exchange
    dsq.backend   Backend: the kernel interface (calibrate, pack, unpack, quantize_activation, matmul, moe)
    dsq.hookspecs the plugin contract; dsq.plugins loads entry-point group ``dsq.backends``
    dsq.registry  get_backend / list_backends
"""

from dsq.backend import OPS, Backend, Capability
from dsq.errors import (
    BackendUnavailableError,
    CheckpointError,
    DsqError,
    QuantInputError,
    SchemeError,
    UnknownNameError,
    UnsupportedError,
)
from dsq.hookspecs import hookimpl
from dsq.qtypes import ActStats, ExpertWeights, PackedWeight, QParams, QuantizedActivation
from dsq.registry import get_backend, list_backends, plugin_errors
from dsq.schemes import (
    ActGranularity,
    Granularity,
    QType,
    QuantScheme,
    RoundMode,
    ScaleRule,
    get_scheme,
    list_schemes,
)

__version__ = "0.1.0"

# Higher-level API, resolved on first use so that `import dsq` stays light and modules land independently.
_LAZY = {
    "quantize": ("dsq.quantizer", "quantize"),
    "plan": ("dsq.planning", "plan"),
    "Recipe": ("dsq.recipes", "Recipe"),
    "get_recipe": ("dsq.recipes", "get_recipe"),
    "list_recipes": ("dsq.recipes", "list_recipes"),
    "save": ("dsq.checkpoint", "save"),
    "load": ("dsq.checkpoint", "load"),
    "QuantLinear": ("dsq.nn", "QuantLinear"),
    "QuantMoE": ("dsq.nn", "QuantMoE"),
    "prepare_for_graphs": ("dsq.nn", "prepare_for_graphs"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dsq' has no attribute {name!r}")


__all__ = [
    "OPS", "Backend", "Capability", "hookimpl",
    "ActStats", "ExpertWeights", "PackedWeight", "QParams", "QuantizedActivation",
    "get_backend", "list_backends", "plugin_errors",
    "ActGranularity", "Granularity", "QType", "QuantScheme", "RoundMode", "ScaleRule", "get_scheme", "list_schemes",
    "DsqError", "BackendUnavailableError", "CheckpointError", "QuantInputError", "SchemeError",
    "UnknownNameError", "UnsupportedError",
]
