"""Output formats for streaming: the checkpoint package's per-module tensor and config builders, wrapped.

Nothing about either format is re-implemented here. For one quantized linear the tensors come from
:mod:`dsq.checkpoint.compressed_tensors` (``storable_entry`` + ``check_scheme`` + ``entry_tensors``) or
:mod:`dsq.checkpoint.msmodelslim` (``entry_tensors``), the same calls :func:`dsq.save` makes, so names and
bytes are identical to ``dsq.quantize`` + ``dsq.save`` for the same weights. The finishing files
(``quantization_config``, ``quant_model_description.json``, ``dsq_quantization.json``) use the same builders
on the lightweight per-module facts the shard records carry (name and stored scheme). The one exception is
W4A8_DYNAMIC, whose two builders are replaced by the faster, test-proven equivalents of
:mod:`dsq.streaming.fastformat` (they dominate the time of ``deepseek-w4a8`` otherwise); they take the
unpacked codes (:meth:`OutputFormat.two_level_tensors`), which the CPU engine produces without packing.
"""

from __future__ import annotations

import torch

from dsq.checkpoint import compressed_tensors as ct
from dsq.checkpoint import msmodelslim as ms
from dsq.checkpoint.entries import QuantEntry
from dsq.errors import UnknownNameError
from dsq.qtypes import PackedWeight
from dsq.schemes import QuantScheme

from .fastformat import TwoLevelCodes, ascend_two_level_from_codes, codes_of, ct_two_level_tensors

__all__ = ["OutputFormat", "CompressedTensorsOut", "AscendOut", "get_format", "FORMAT_NAMES"]

FORMAT_NAMES = (ct.FORMAT_NAME, ms.FORMAT_NAME)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cpu(packed: PackedWeight) -> PackedWeight:
    """The package's builders assume CPU tensors; the fast two-level ones run on any device."""
    if all(t.device.type == "cpu" for t in packed.tensors.values()):
        return packed
    return PackedWeight(packed.scheme, packed.shape, {k: v.cpu() for k, v in packed.tensors.items()})


class OutputFormat:
    name = ""
    prefix = "model"

    def __init__(self, model_dtype: str):
        self.model_dtype = _DTYPES[model_dtype]

    def check_scheme(self, module: str, scheme: QuantScheme) -> None:
        """Raise (before anything is written) when this format cannot store ``scheme`` for ``module``."""

    def module_tensors(self, name: str, scheme: QuantScheme,
                       packed: PackedWeight) -> tuple[dict[str, torch.Tensor], dict[str, str], QuantScheme]:
        """(on-disk tensors by full name, description type by tensor name, scheme as stored)."""
        if scheme.two_level:
            return self.two_level_tensors(name, scheme, codes_of(packed, scheme.group_size))
        return self._module_tensors(name, scheme, _cpu(packed))

    def _module_tensors(self, name: str, scheme: QuantScheme,
                        packed: PackedWeight) -> tuple[dict[str, torch.Tensor], dict[str, str], QuantScheme]:
        raise NotImplementedError

    def two_level_tensors(self, name: str, scheme: QuantScheme,
                          codes: TwoLevelCodes) -> tuple[dict[str, torch.Tensor], dict[str, str], QuantScheme]:
        """:meth:`module_tensors` of a two-level module from its unpacked codes (on any device)."""
        raise NotImplementedError

    def float_type(self) -> str | None:
        return None

    def finish(self, modules: dict[str, QuantScheme], types: dict[str, str],
               float_linears: list[str]) -> tuple[dict | None, dict | None]:
        """(config.json ``quantization_config`` or None, description file contents or None)."""
        raise NotImplementedError


class CompressedTensorsOut(OutputFormat):
    name = ct.FORMAT_NAME
    prefix = "model"

    def check_scheme(self, module: str, scheme: QuantScheme) -> None:
        ct.check_scheme(module, scheme, self.model_dtype)

    def _module_tensors(self, name, scheme, packed):
        entry = ct.storable_entry(QuantEntry(name, scheme, packed))
        ct.check_scheme(name, entry.scheme, self.model_dtype)
        return ct.entry_tensors(entry), {}, entry.scheme

    def two_level_tensors(self, name, scheme, codes):
        tensors, stored = ct_two_level_tensors(name, scheme, codes)
        ct.check_scheme(name, stored, self.model_dtype)
        return tensors, {}, stored

    def finish(self, modules, types, float_linears):
        entries = [QuantEntry(n, s, None) for n, s in modules.items()]
        return ct.quantization_config(entries, float_linears), None


class AscendOut(OutputFormat):
    name = ms.FORMAT_NAME
    prefix = "quant_model_weights"

    def check_scheme(self, module: str, scheme: QuantScheme) -> None:
        ms.ascend_type(scheme, module)

    def _module_tensors(self, name, scheme, packed):
        tensors, types = ms.entry_tensors(QuantEntry(name, scheme, packed), self.model_dtype)
        return tensors, types, scheme

    def two_level_tensors(self, name, scheme, codes):
        tensors, types = ascend_two_level_from_codes(name, codes)
        return tensors, types, scheme

    def float_type(self) -> str | None:
        return "FLOAT"

    def finish(self, modules, types, float_linears):
        groups = {s.group_size for s in modules.values() if s.two_level}
        return None, ms.description(types, groups)


def get_format(name: str, model_dtype: str) -> OutputFormat:
    for cls in (CompressedTensorsOut, AscendOut):
        if cls.name == name:
            return cls(model_dtype)
    raise UnknownNameError("checkpoint format", name, list(FORMAT_NAMES))
