"""``dsq.plan(model, recipe)``: which module gets which scheme, and what it costs, without quantizing.

A plan lists every quantizable unit (each ``nn.Linear`` and each fused routed-experts block an adapter
finds), the scheme the recipe gives it (or why it stays float), its weight bytes before and after, and any
problem that would stop :func:`dsq.quantize`: a scheme that does not fit the layer's shape, or a backend
that lacks the scheme. It reads shapes only, so it works on a model built on the ``meta`` device.

Bytes after are those of the canonical packed tensors (:class:`dsq.qtypes.PackedWeight`, what a checkpoint
stores), for a weight [N, K] with L stacked copies (L = E for experts, else 1) and b weight bits:

* codes: ``weight_packed`` int32 ``L*N*ceil(K*b/32)*4`` bytes, or ``weight`` int8/fp8 ``L*N*K``;
* ``weight_scale``: ``L * prod(scheme.scale_shape(N, K))`` times 4 (float32) or 2 (bf16/fp16);
* ``weight_zero_point`` (asymmetric): int32 ``L*ceil(N*b/32)*G*4``; ``weight_group_scale`` (two-level):
  int8 ``L*N*ceil(K/G)``; ``input_scale`` float32 ``L*4`` and ``input_zero_point`` int8 ``L`` (static);
* ``weight_shape``: int64 [2], 16 bytes.

Bias tensors stay float and are not counted on either side.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

from torch import nn

from dsq.adapters import MoEAdapter, get_adapter
from dsq.errors import QuantInputError, SchemeError, UnsupportedError
from dsq.qtypes import weight_tensor_name
from dsq.recipes import Recipe, RecipeError, resolve_recipe, target_matches
from dsq.schemes import ActGranularity, Granularity, QuantScheme

__all__ = ["Plan", "PlanEntry", "RecipeWarning", "plan", "packed_nbytes", "fit_problems", "collect_units"]

_SCALE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class RecipeWarning(UserWarning):
    """A recipe target matched no module of the model."""


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def packed_nbytes(scheme: QuantScheme, n: int, k: int, stacked: int = 1) -> int:
    """Bytes of the canonical packed form of ``stacked`` weights of shape [n, k] (module docstring)."""
    b = scheme.weight_bits
    if weight_tensor_name(scheme) == "weight_packed":
        total = stacked * n * _ceil(k * b, 32) * 4
    else:
        total = stacked * n * k
    sn, sk = scheme.scale_shape(n, k)
    total += stacked * sn * sk * _SCALE_BYTES[scheme.scale_dtype]
    if not scheme.weight_symmetric:
        total += stacked * _ceil(n * b, 32) * sk * 4
    if scheme.two_level:
        total += stacked * n * _ceil(k, scheme.group_size)
    if scheme.static_activations:
        total += stacked * 4 + (0 if scheme.act_symmetric else stacked)
    return total + 16


def fit_problems(scheme: QuantScheme, n: int, k: int, what: str = "weight") -> list[str]:
    """Why ``scheme`` cannot quantize a [n, k] weight here (empty when it fits).

    Group and block schemes need whole groups along K: serving kernels (vLLM Marlin/CUTLASS MoE, Ascend
    grouped matmuls, DeepSeek FP8 GEMMs) and per-token-group activation scales assume K % group == 0.
    """
    out = []
    if scheme.weight_granularity is Granularity.GROUP or scheme.two_level:
        if k % scheme.group_size:
            out.append(f"{what} [N, K]=[{n}, {k}]: in_features K={k} must be a multiple of "
                       f"group_size={scheme.group_size} for {scheme.name}")
    elif scheme.weight_granularity is Granularity.BLOCK and k % scheme.block_size[1]:
        out.append(f"{what} [N, K]=[{n}, {k}]: in_features K={k} must be a multiple of the block width "
                   f"{scheme.block_size[1]} for {scheme.name}")
    if scheme.act_granularity is ActGranularity.TOKEN_GROUP and k % scheme.act_group_size:
        out.append(f"{what} [N, K]=[{n}, {k}]: in_features K={k} must be a multiple of the activation group "
                   f"{scheme.act_group_size} for {scheme.name}")
    return out


@dataclass
class Unit:
    """A quantizable unit: an nn.Linear or a fused experts block (``aliases``: its per-expert names)."""

    name: str
    module: nn.Module
    kind: str  # "linear" | "experts"
    shape: tuple[int, ...]  # (N, K) or (E, I, H)
    aliases: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> tuple[str, ...]:
        names = tuple(c.__name__ for c in type(self.module).__mro__)
        return names + ("Linear",) if self.kind == "experts" else names


def collect_units(model: nn.Module, adapter: MoEAdapter) -> list[Unit]:
    """Every nn.Linear and fused experts block of ``model``, in module order."""
    from dsq.nn import QuantExperts, QuantLinear

    experts = adapter.find_experts(model)
    units = []
    for name, mod in model.named_modules():
        if isinstance(mod, (QuantLinear, QuantExperts)):
            raise QuantInputError(f"module {name} is already quantized ({type(mod).__name__}); "
                                  "quantize a float model")
        if name in experts:
            e, i, h = adapter.expert_shape(mod)
            aliases = [v for d in adapter.expert_names(name, e) for v in d.values()]
            units.append(Unit(name, mod, "experts", (e, i, h), aliases))
        elif isinstance(mod, nn.Linear) and not any(name.startswith(f"{x}.") for x in experts):
            units.append(Unit(name, mod, "linear", (mod.out_features, mod.in_features)))
    return units


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _target_hit(target: str, unit: Unit) -> str:
    """'full', 'partial' (only some per-expert names) or 'none'."""
    if target_matches(target, unit.name, unit.class_names):
        return "full"
    if not unit.aliases or not target.startswith("re:") and target not in unit.aliases:
        return "none"
    hits = sum(target_matches(target, a) for a in unit.aliases)
    return "none" if hits == 0 else "full" if hits == len(unit.aliases) else "partial"


@dataclass
class PlanEntry:
    """One unit's fate. ``scheme`` None means it stays float (``reason`` says why)."""

    name: str
    kind: str
    class_name: str
    shape: tuple[int, ...]
    scheme: QuantScheme | None
    rule: int | None
    reason: str
    bytes_before: int
    bytes_after: int
    problems: list[str] = field(default_factory=list)  # scheme does not fit the shape
    unsupported: list[str] = field(default_factory=list)  # backend lacks the scheme x op

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "class": self.class_name, "shape": list(self.shape),
                "scheme": None if self.scheme is None else self.scheme.to_dict(), "rule": self.rule,
                "reason": self.reason, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
                "problems": list(self.problems), "unsupported": list(self.unsupported)}


@dataclass
class Plan:
    """What :func:`dsq.quantize` would do with a model and a recipe."""

    recipe: Recipe
    adapter: str
    entries: list[PlanEntry]
    unmatched: list[str]
    other_bytes: int  # parameters outside the units (embeddings, norms, routers, biases): unchanged
    backend: str | None = None

    @property
    def quantized(self) -> list[PlanEntry]:
        return [e for e in self.entries if e.scheme is not None]

    def scheme_of(self, name: str) -> QuantScheme | None:
        for e in self.entries:
            if e.name == name:
                return e.scheme
        raise KeyError(name)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per scheme name ('float' for kept units): units, linear modules, expert blocks, experts, bytes."""
        out: dict[str, dict[str, int]] = {}
        for e in self.entries:
            c = out.setdefault("float" if e.scheme is None else e.scheme.name,
                               {"units": 0, "linear": 0, "expert_blocks": 0, "experts": 0,
                                "bytes_before": 0, "bytes_after": 0})
            c["units"] += 1
            c["linear" if e.kind == "linear" else "expert_blocks"] += 1
            c["experts"] += e.shape[0] if e.kind == "experts" else 0
            c["bytes_before"] += e.bytes_before
            c["bytes_after"] += e.bytes_after
        return out

    def totals(self) -> dict[str, int]:
        """Whole-model parameter bytes before and after (units plus the unchanged rest)."""
        before = sum(e.bytes_before for e in self.entries) + self.other_bytes
        after = sum(e.bytes_after for e in self.entries) + self.other_bytes
        return {"bytes_before": before, "bytes_after": after}

    @property
    def problems(self) -> list[str]:
        """Everything that stops quantization, as ``"<module>: <why>"`` lines."""
        return [f"{e.name}: {p}" for e in self.entries for p in (*e.problems, *e.unsupported)]

    def check(self) -> None:
        """Raise when a unit cannot be quantized as planned (every problem is listed): SchemeError for a
        scheme that does not fit a layer's shape, UnsupportedError for a scheme the backend lacks."""
        shape = [f"{e.name}: {p}" for e in self.entries for p in e.problems]
        unsupported = [f"{e.name}: {p}" for e in self.entries for p in e.unsupported]
        if shape:
            raise SchemeError("scheme does not fit the layer shape:\n  " + "\n  ".join(shape))
        if unsupported:
            raise UnsupportedError("backend cannot run the planned schemes:\n  " + "\n  ".join(unsupported))

    def to_dict(self) -> dict:
        return {"recipe": self.recipe.to_dict(), "adapter": self.adapter, "backend": self.backend,
                "entries": [e.to_dict() for e in self.entries], "unmatched_targets": list(self.unmatched),
                "counts": self.counts(), "totals": self.totals(), "problems": self.problems}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self, modules: bool = True) -> str:
        """Human-readable plan: per-module table (optional), per-scheme summary, totals, warnings."""
        from dsq.cli.table import format_table

        lines = [f"recipe {self.recipe.name} (adapter {self.adapter}"
                 + (f", backend {self.backend})" if self.backend else ")")]
        if modules:
            rows = [[e.name, e.kind, "x".join(map(str, e.shape)), e.scheme.name if e.scheme else "float",
                     e.reason, _mib(e.bytes_before), _mib(e.bytes_after)] for e in self.entries]
            lines += ["", format_table(["module", "kind", "shape", "scheme", "why", "MiB before", "MiB after"],
                                       rows)]
        rows = [[s, c["linear"], c["expert_blocks"], c["experts"], _mib(c["bytes_before"]), _mib(c["bytes_after"])]
                for s, c in self.counts().items()]
        lines += ["", format_table(["scheme", "linear", "expert blocks", "experts", "MiB before", "MiB after"], rows)]
        t = self.totals()
        ratio = t["bytes_after"] / t["bytes_before"] if t["bytes_before"] else 1.0
        lines += ["", f"model parameters: {_mib(t['bytes_before'])} MiB -> {_mib(t['bytes_after'])} MiB "
                      f"({ratio:.3f}x; {_mib(self.other_bytes)} MiB outside Linear/experts unchanged)"]
        lines += [f"warning: target {t!r} matched no module" for t in self.unmatched]
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)

    __str__ = format


def _mib(n: int) -> str:
    return f"{n / 2**20:.3f}"


def resolve_unit(recipe: Recipe, unit: Unit, hits: dict[str, int]) -> tuple[QuantScheme | None, int | None, str]:
    """(scheme, rule index, reason) for one unit; counts target hits as a side effect."""
    ignored_by = None
    for target in recipe.ignore:
        names = [unit.name, *_ancestors(unit.name)]
        hit = "full" if any(target_matches(target, n, unit.class_names) for n in names) else _target_hit(target, unit)
        if hit == "partial":
            raise RecipeError(f"ignore entry {target!r} matches only some experts of the fused block {unit.name}; "
                              "a fused experts block is quantized or kept float as a whole")
        if hit == "full":
            hits[target] += 1
            ignored_by = ignored_by or target
    chosen: tuple[QuantScheme | None, int | None, str] | None = None
    for idx, rule in enumerate(recipe.rules):
        for target in rule.targets:
            hit = _target_hit(target, unit)
            if hit == "partial" and chosen is None and ignored_by is None:
                raise RecipeError(f"rule {idx} target {target!r} matches only some experts of the fused block "
                                  f"{unit.name}; a fused experts block takes one scheme")
            if hit == "full":
                hits[target] += 1
                if chosen is None:
                    chosen = (rule.scheme, idx, f"rule {idx}: {target}" + (f" ({rule.note})" if rule.note else ""))
    if ignored_by is not None:
        return None, None, f"ignored: {ignored_by}"
    return chosen or (None, None, "no rule matches")


def plan(model: nn.Module, recipe, backend=None, warn: bool = True) -> Plan:
    """Plan quantizing ``model`` with ``recipe`` (anything :func:`dsq.recipes.resolve_recipe` accepts).

    ``backend`` (name or Backend, optional) adds its capability checks to the problems. Targets that match
    nothing are listed in ``Plan.unmatched`` and, with ``warn``, reported as a :class:`RecipeWarning`.
    """
    from dsq.registry import get_backend

    recipe = resolve_recipe(recipe, model)
    adapter = get_adapter(model)
    be = get_backend(backend, require_available=False) if backend is not None else None
    units = collect_units(model, adapter)
    hits = {t: 0 for r in recipe.rules for t in r.targets} | {t: 0 for t in recipe.ignore}
    for t in recipe.ignore:  # an ignore entry may name any module (a router, a whole layer)
        hits[t] += sum(target_matches(t, n, [c.__name__ for c in type(m).__mro__]) for n, m in model.named_modules())
    entries = []
    unit_param_bytes = 0
    for u in units:
        scheme, rule, reason = resolve_unit(recipe, u, hits)
        if u.kind == "linear":
            w = u.module.weight
            before = w.numel() * w.element_size()
            mats = [("weight", u.shape[0], u.shape[1], 1)]
        else:
            e, i, h = u.shape
            before = sum(p.numel() * p.element_size() for p in (u.module.gate_up_proj, u.module.down_proj))
            mats = [("gate_up_proj", 2 * i, h, e), ("down_proj", h, i, e)]
        unit_param_bytes += before
        problems: list[str] = []
        unsupported: list[str] = []
        after = before
        if scheme is not None:
            after = sum(packed_nbytes(scheme, n, k, s) for _, n, k, s in mats)
            for what, n, k, _ in mats:
                problems += fit_problems(scheme, n, k, what)
            if u.kind == "experts":
                problems += _split_problems(scheme, u.shape[1])
            if be is not None:
                for op in ("calibrate", "pack", "matmul" if u.kind == "linear" else "moe"):
                    cap = be.supports(scheme, op)
                    if not cap:
                        unsupported.append(f"backend {be.name} does not support {op} for {scheme.name}: "
                                           f"{cap.reason}")
        entries.append(PlanEntry(u.name, u.kind, type(u.module).__name__, tuple(u.shape), scheme, rule, reason,
                                 before, after, problems, unsupported))
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    optional = set(recipe.optional)
    unmatched = [t for t, n in hits.items() if n == 0 and t not in optional]
    if warn and unmatched:
        warnings.warn(f"recipe {recipe.name}: target(s) matched no module of the model: {', '.join(unmatched)}",
                      RecipeWarning, stacklevel=2)
    return Plan(recipe, adapter.name, entries, unmatched, total - unit_param_bytes, None if be is None else be.name)


def _split_problems(scheme: QuantScheme, i: int) -> list[str]:
    """gate_up is stored per expert as separate gate and up: the cut at row I must fall on a scale row."""
    if scheme.weight_granularity is Granularity.BLOCK and i % scheme.block_size[0]:
        return [f"gate_up_proj: moe intermediate size I={i} must be a multiple of the block height "
                f"{scheme.block_size[0]} for {scheme.name} (gate and up are stored separately per expert)"]
    if not scheme.weight_symmetric and i % (32 // scheme.weight_bits):
        return [f"gate_up_proj: moe intermediate size I={i} must be a multiple of {32 // scheme.weight_bits} for "
                f"{scheme.name} (zero points are packed along the output dimension)"]
    return []
