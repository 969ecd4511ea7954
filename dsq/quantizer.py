"""``dsq.quantize(model, recipe, backend="cpu", calib_data=None)``: quantize a torch model in place.

Steps:
1. :func:`dsq.plan` resolves the recipe against the model (every ``nn.Linear`` and every fused experts
   block the MoE adapter finds) and checks that each scheme fits its layer's shape and that the backend
   supports it; any problem raises before a weight is touched.
2. If a planned scheme has static activation scales, :mod:`dsq.calibration` runs the float model over
   ``calib_data`` and records input ranges per module (per expert for MoE blocks).
3. Each planned unit is replaced: ``nn.Linear`` -> :class:`dsq.nn.QuantLinear`, experts ->
   :class:`dsq.nn.QuantExperts`, their weights quantized with ``backend.calibrate`` + ``backend.pack``.
   Weights are checked first; a NaN or Inf is an error naming the tensor.
4. ``model.dsq_info`` records what was done (plain JSON data): ``{"recipe": recipe.to_dict(),
   "backend": name, "adapter": name, "modules": {module name: scheme.to_dict()}, "calibration": report or None}``.
"""

from __future__ import annotations

import torch
from torch import nn

from dsq.adapters import get_adapter
from dsq.calibration import collect_act_stats
from dsq.errors import QuantInputError
from dsq.nn import QuantLinear
from dsq.planning import Plan, plan
from dsq.recipes import resolve_recipe
from dsq.registry import get_backend
from dsq.validate import check_weight

__all__ = ["quantize"]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _check_weights(model: nn.Module, p: Plan, adapter) -> None:
    """NaN/Inf check of every weight that will be quantized, before calibration spends time."""
    for e in p.quantized:
        mod = model.get_submodule(e.name)
        if e.kind == "linear":
            check_weight(mod.weight.detach(), e.scheme, f"{e.name}.weight")
        else:
            gate_up, down = adapter.expert_tensors(mod, e.name)
            check_weight(gate_up.detach(), e.scheme, f"{e.name}.gate_up_proj")
            check_weight(down.detach(), e.scheme, f"{e.name}.down_proj")


def _planned_weight_dtypes(model: nn.Module, p: Plan, adapter) -> set[torch.dtype]:
    """dtypes of the weights the plan quantizes (fused experts: both stacked tensors)."""
    dtypes = set()
    for e in p.quantized:
        mod = model.get_submodule(e.name)
        if e.kind == "linear":
            dtypes.add(mod.weight.dtype)
        else:
            dtypes.update(t.dtype for t in adapter.expert_tensors(mod, e.name))
    return dtypes


def _auto_scale_dtype(model: nn.Module, p: Plan, adapter) -> str | None:
    """``scale_dtype="auto"``: the dtype of the weights being quantized when all are bfloat16 or all float16.

    Only the planned weights count: transformers keeps some float parameters of a bf16 model in float32
    (DeepSeek-V3's router ``gate.weight`` and ``e_score_correction_bias``), which recipes leave float anyway.
    """
    dtypes = _planned_weight_dtypes(model, p, adapter)
    if len(dtypes) == 1 and next(iter(dtypes)) in (torch.bfloat16, torch.float16):
        return str(dtypes.pop()).removeprefix("torch.")
    return None


def quantize(model: nn.Module, recipe, backend="cpu", calib_data=None, *, expert_mode: str = "all",
             scale_dtype: str | None = "auto", progress: bool = True) -> nn.Module:
    """Quantize ``model`` in place with ``recipe`` on ``backend`` and return it.

    Args:
        model: any torch model built from ``nn.Linear`` (plus fused MoE experts of a known architecture).
        recipe: a preset recipe name (``dsq.list_recipes()``), a scheme name (every Linear, lm_head and
            router gates float), a :class:`dsq.Recipe`, a dict, or a ``.yaml``/``.json`` recipe file.
        backend: backend name or object whose kernels quantize and later run the weights.
        calib_data: batches for static activation schemes (see :mod:`dsq.calibration`); unused otherwise.
        expert_mode: ``"all"`` (every expert sees every calibration token) or ``"routed"``.
        scale_dtype: dtype every scheme stores its weight scales in. ``"auto"`` (default): the dtype of the
            weights being quantized when they are all bfloat16 or all float16 (what compressed-tensors
            checkpoints hold, so ``dsq.save`` writes them exactly; float32 parameters transformers keeps in a
            bf16 model, such as router gates, do not count), else the recipe's own; ``None``: keep the recipe's; or an explicit
            ``"float32"``/``"bfloat16"``/``"float16"``.
        progress: show tqdm progress bars.
    """
    from tqdm.auto import tqdm

    if getattr(model, "dsq_info", None) is not None:
        raise QuantInputError("model is already quantized by dsq (it has dsq_info); quantize a float model")
    be = get_backend(backend)
    adapter = get_adapter(model)
    recipe = resolve_recipe(recipe, model)
    if scale_dtype == "auto":
        scale_dtype = _auto_scale_dtype(model, plan(model, recipe, backend=be, warn=False), adapter)
    if scale_dtype is not None:
        recipe = recipe.with_scale_dtype(scale_dtype)
    p = plan(model, recipe, backend=be)
    p.check()
    _check_weights(model, p, adapter)

    static = [e for e in p.quantized if e.scheme.static_activations]
    stats: dict = {}
    report = None
    if static:
        linears = {e.name: model.get_submodule(e.name) for e in static if e.kind == "linear"}
        experts = {e.name: model.get_submodule(e.name) for e in static if e.kind == "experts"}
        stats, report = collect_act_stats(model, linears, experts, calib_data, adapter, expert_mode, progress)

    modules = {}
    for e in tqdm(p.quantized, desc="quantizing", unit="module", disable=not progress):
        mod = model.get_submodule(e.name)
        if e.kind == "linear":
            new = QuantLinear.from_linear(mod, e.scheme, be, stats.get(e.name), name=f"{e.name}.weight")
        else:
            new = adapter.build(mod, e.scheme, be, stats.get(e.name), name=e.name)
        _set_submodule(model, e.name, new)
        modules[e.name] = e.scheme.to_dict()

    model.dsq_info = {"recipe": p.recipe.to_dict(), "backend": be.name, "adapter": adapter.name,
                      "modules": modules, "calibration": report}
    return model
