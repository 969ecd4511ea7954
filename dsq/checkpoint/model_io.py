"""From a quantized torch model to checkpoint entries, and from a checkpoint back to a runnable model.

:func:`collect` walks a model quantized by :func:`dsq.quantize`: every :class:`~dsq.nn.QuantLinear` becomes
one :class:`QuantEntry`; every :class:`~dsq.nn.QuantExperts` becomes 3*E entries named per expert by the
model's MoE adapter; every other persistent parameter/buffer is a float tensor stored as it is.

:func:`build_skeleton` makes the transformers model from ``config.json`` with its parameters on the ``meta``
device (buffers stay real, so non-persistent ones such as rotary ``inv_freq`` are computed as usual) and
:func:`populate` swaps in QuantLinear / QuantExperts built from the checkpoint, then assigns the float tensors.
Any parameter left on ``meta`` afterwards is a tensor the checkpoint lacks, and is reported by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dsq.adapters import get_adapter
from dsq.errors import CheckpointError
from dsq.nn import QuantExperts, QuantLinear
from dsq.qtypes import PackedWeight
from dsq.schemes import QuantScheme

from .entries import QuantEntry, split_experts, stack_experts

__all__ = ["Collected", "collect", "model_dtype", "build_skeleton", "populate", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Collected:
    entries: list[QuantEntry]
    floats: dict[str, torch.Tensor]
    ignore: list[str]
    linears: dict[str, QuantScheme] = field(default_factory=dict)
    experts: dict[str, tuple[QuantScheme, int]] = field(default_factory=dict)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The model's float dtype: its input embedding's, else the first quantized module's compute dtype."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.dtype
    for m in model.modules():
        if isinstance(m, (QuantLinear, QuantExperts)):
            return m.out_dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def collect(model: nn.Module) -> Collected:
    """Entries, float tensors and the float 2-D modules (compressed-tensors ``ignore``) of a quantized model."""
    adapter = get_adapter(model)
    out = Collected(entries=[], floats={}, ignore=[])
    quant_prefixes = []
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            out.entries.append(QuantEntry(name, m.scheme, m.packed, m.bias))
            out.linears[name] = m.scheme
            quant_prefixes.append(name + ".")
        elif isinstance(m, QuantExperts):
            out.entries.extend(split_experts(adapter, name, m.weights, m.scheme))
            out.experts[name] = (m.scheme, m.num_experts)
            quant_prefixes.append(name + ".")
        elif isinstance(m, nn.Linear) or (
                not isinstance(m, nn.Embedding) and isinstance(getattr(m, "weight", None), nn.Parameter)
                and m.weight.ndim == 2):
            out.ignore.append(name)  # lm_head, router gates: 2-D weights that stay float
    if not out.entries:
        raise CheckpointError("the model has no dsq QuantLinear/QuantExperts modules; quantize it with dsq.quantize first")
    seen: dict[tuple[int, int], str] = {}
    for key, t in model.state_dict().items():
        if any(key.startswith(p) for p in quant_prefixes):
            continue
        if t.device.type == "meta":
            raise CheckpointError(f"tensor {key} is on the meta device (never loaded); cannot save it")
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if ident in seen and getattr(getattr(model, "config", None), "tie_word_embeddings", False):
            continue  # tied to seen[ident]; transformers re-ties on load
        seen.setdefault(ident, key)
        out.floats[key] = t.detach().clone() if ident in seen and seen[ident] != key else t.detach()
    return out


@contextlib.contextmanager
def _params_on_meta() -> Iterator[None]:
    """Create parameters on the meta device (no memory, no init cost); buffers are created normally."""
    original = nn.Module.register_parameter

    def register(self, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def build_skeleton(directory: Path, dtype: torch.dtype) -> nn.Module:
    """The transformers causal-LM described by ``directory/config.json``, parameters on ``meta``."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as exc:  # pragma: no cover - transformers is an optional dependency
        raise CheckpointError("dsq.load needs transformers to build the model (pip install 'dsq[hf]')") from exc
    try:
        config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read {directory / 'config.json'}: {exc}") from exc
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # dsq swaps in its own modules; transformers must not quantize
    with _params_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _linear_shape(model: nn.Module, name: str) -> tuple[nn.Module, int, int]:
    try:
        m = model.get_submodule(name)
    except AttributeError as exc:
        raise CheckpointError(f"checkpoint quantizes module {name}, which the model built from config.json lacks") from exc
    w = getattr(m, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2:
        raise CheckpointError(f"checkpoint quantizes module {name}, but the model's {name} has no 2-D weight")
    return m, int(w.shape[0]), int(w.shape[1])


def _listed(problems: list[str], limit: int = 20) -> str:
    more = f"\n  (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "\n  " + "\n  ".join(problems[:limit]) + more


def populate(model: nn.Module, linears: dict[str, QuantScheme], experts: dict[str, QuantScheme],
             read_entry: Callable[[str, QuantScheme, int, int], PackedWeight], reader, backend,
             dtype: torch.dtype, progress=None) -> nn.Module:
    """Swap quantized modules into a skeleton, then load every float tensor of ``reader``.

    Every missing, mis-shaped or mistyped tensor is found before anything is raised: one CheckpointError
    names them all (the first 20), so a damaged checkpoint is diagnosed in one run.
    """
    adapter = get_adapter(model)
    fused = adapter.find_experts(model)
    owned: list[str] = []
    problems: list[str] = []

    def read(name: str, scheme: QuantScheme, n: int, k: int) -> PackedWeight | None:
        try:
            return read_entry(name, scheme, n, k)
        except CheckpointError as exc:
            problems.append(str(exc))
            return None

    for name, scheme in linears.items():
        m, n, k = _linear_shape(model, name)
        owned.append(name + ".")
        bias = None
        if getattr(m, "bias", None) is not None:
            try:
                bias = reader.get(f"{name}.bias").to(dtype)
            except CheckpointError as exc:
                problems.append(str(exc))
            if bias is not None and tuple(bias.shape) != (n,):
                problems.append(f"tensor {name}.bias has shape {tuple(bias.shape)}; expected ({n},)")
        packed = read(name, scheme, n, k)
        if packed is not None and not problems:
            _replace(model, name, QuantLinear(packed, scheme, bias, backend, dtype))
        if progress is not None:
            progress.update(1)
    for name, scheme in experts.items():
        if name not in fused:
            raise CheckpointError(f"checkpoint has quantized experts {name}, which the model built from config.json lacks")
        owned += [name + ".", adapter.disk_prefix(name) + "."]
        e, inter, hidden = adapter.expert_shape(fused[name])
        parts = [(read(names["gate"], scheme, inter, hidden), read(names["up"], scheme, inter, hidden),
                  read(names["down"], scheme, hidden, inter)) for names in adapter.expert_names(name, e)]
        if not problems:
            _replace(model, name, QuantExperts(stack_experts(name, parts, scheme), scheme, backend, dtype))
        if progress is not None:
            progress.update(1)
    floats = {}
    for key in reader.keys():
        if not any(key.startswith(p) for p in owned):
            try:
                floats[key] = reader.get(key)
            except CheckpointError as exc:
                problems.append(str(exc))
    expected = model.state_dict()
    unexpected = sorted(k for k in floats if k not in expected)
    if unexpected:
        problems.append(f"checkpoint has tensors the model does not: {', '.join(unexpected[:8])}"
                        + (f" (+{len(unexpected) - 8} more)" if len(unexpected) > 8 else ""))
    for k, t in floats.items():
        if k in expected and tuple(t.shape) != tuple(expected[k].shape):
            problems.append(f"tensor {k} has shape {tuple(t.shape)}; the model expects {tuple(expected[k].shape)}")
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    filled_by_tie = set()  # a tied output head is filled from the input embedding by tie_weights
    if tied and hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        out_head = model.get_output_embeddings()
        filled_by_tie = {f"{n}.weight" for n, m in model.named_modules() if m is out_head}
    missing = [k for k in expected if k not in floats and k not in filled_by_tie
               and not any(k.startswith(p) for p in owned)]
    if missing:
        problems.append(f"checkpoint is missing tensors: {', '.join(missing[:8])}"
                        + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    if problems:
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems with the checkpoint's tensors:"
        raise CheckpointError(head + (_listed(problems) if len(problems) > 1 else ""))
    model.load_state_dict(floats, strict=False, assign=True)
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    return model
