"""Recipes: which module gets which quantization scheme.

A :class:`Recipe` is an ordered list of :class:`Rule` (targets -> scheme) plus an ``ignore`` list. A module
is resolved like this:

1. If the module, or any module it lives inside, matches an ``ignore`` entry it stays float.
2. Otherwise the *first* rule with a matching target gives its scheme; no matching rule -> it stays float.

Only quantizable units are resolved: every ``nn.Linear`` and every fused routed-experts block an MoE adapter
finds (:mod:`dsq.adapters`). A target is one of

* ``re:<regex>``: ``re.match`` on the module name, i.e. anchored at the start but not at the end, exactly
  as compressed-tensors matches ``ignore`` and ``targets`` (``re:.*mlp.gate$`` matches ``x.mlp.gate``);
* a class name: matches when the module's class or one of its base classes has that name. ``Linear``
  also matches fused expert blocks, because every expert is a set of linear projections (so the
  llm-compressor recipe ``targets="Linear"`` quantizes routed experts too);
* otherwise an exact module name.

Fused experts (``...mlp.experts``, weights ``[E, 2I, H]`` / ``[E, H, I]``) are also known by their
per-expert names on disk (``...mlp.experts.7.gate_proj`` for DeepSeek-V3). A name target matches the block
when it matches the fused name or *every* per-expert name; matching only some experts is an error, since one
fused block takes one scheme.

A rule's scheme is a preset name (``"W4A16"``), a :class:`~dsq.schemes.QuantScheme`, or a dict with
``scheme`` (or ``name``) plus field overrides (``{"scheme": "W4A16", "group_size": 64}``). Preset
recipes come from :func:`get_recipe`; recipe files (YAML or JSON) look like::

    name: my-recipe
    rules:
      - targets: ["re:.*self_attn\\..*"]
        scheme: W8A8
      - targets: [Linear]
        scheme: {scheme: W4A16, group_size: 64}
    ignore: [lm_head, "re:.*mlp.gate$"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from dsq.errors import SchemeError, UnknownNameError
from dsq.schemes import QuantScheme, get_scheme, list_schemes

__all__ = ["Rule", "Recipe", "RecipeError", "get_recipe", "list_recipes", "resolve_recipe", "target_matches",
           "DEFAULT_IGNORE"]

#: kept float by the presets: the output head and MoE router gates (routing is sensitive to quantization);
#: precautions, so models without them (a dense model, a bare nn.Sequential) get no warning
DEFAULT_IGNORE = ("lm_head", "re:.*mlp.gate$")


class RecipeError(SchemeError):
    """A recipe is malformed, cannot be read, or cannot be applied to a model."""


def _compile(target: str) -> re.Pattern | None:
    if not isinstance(target, str) or not target:
        raise RecipeError(f"a recipe target must be a non-empty string, got {target!r}")
    if not target.startswith("re:"):
        return None
    try:
        return re.compile(target[3:])
    except re.error as exc:
        raise RecipeError(f"target {target!r} is not a valid regular expression: {exc}") from None


def target_matches(target: str, name: str, class_names: Iterable[str] = ()) -> bool:
    """Whether one target matches a module called ``name`` whose class (and bases) are ``class_names``."""
    pattern = _compile(target)
    if pattern is not None:
        return pattern.match(name) is not None
    return target == name or target in class_names


def _as_scheme(spec) -> QuantScheme:
    """A rule's scheme from a name, a QuantScheme or a dict of overrides (see module docstring)."""
    if isinstance(spec, QuantScheme):
        return spec
    if isinstance(spec, str):
        return get_scheme(spec)
    if isinstance(spec, dict):
        spec = dict(spec)
        base = spec.pop("scheme", None) or spec.pop("name", None)
        if base is None:
            raise RecipeError(f"scheme dict {spec} needs a 'scheme' (or 'name') key naming a preset; "
                              f"known schemes: {', '.join(list_schemes())}")
        if "block_size" in spec:
            spec["block_size"] = tuple(spec["block_size"])
        try:
            return get_scheme(base, **spec)
        except (TypeError, SchemeError) as exc:
            raise RecipeError(f"scheme {base!r}: bad override in {spec}: {exc}") from None
    raise RecipeError(f"a rule's scheme must be a scheme name, a dict or a QuantScheme, got {type(spec).__name__}")


@dataclass(frozen=True)
class Rule:
    """``targets`` (any one may match) -> ``scheme``; ``note`` says what the targets are, for people."""

    targets: tuple[str, ...]
    scheme: QuantScheme
    note: str = ""

    def __post_init__(self) -> None:
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets:
            raise RecipeError("a rule needs at least one target")
        for t in targets:
            _compile(t)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "scheme", _as_scheme(self.scheme))

    def to_dict(self) -> dict:
        out = {"targets": list(self.targets), "scheme": self.scheme.to_dict()}
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Rule:
        if not isinstance(data, dict) or "targets" not in data or "scheme" not in data:
            raise RecipeError(f"a rule needs 'targets' and 'scheme' keys, got {data!r}")
        scheme = data["scheme"]
        if isinstance(scheme, dict) and set(scheme) >= {"name", "weight_dtype", "weight_granularity"}:
            scheme = QuantScheme.from_dict(scheme)  # the full form written by to_dict
        unknown = set(data) - {"targets", "scheme", "note"}
        if unknown:
            raise RecipeError(f"rule {data!r} has unknown keys {sorted(unknown)}; expected targets, scheme, note")
        return cls(data["targets"], scheme, str(data.get("note", "")))


@dataclass(frozen=True)
class Recipe:
    """An ordered list of rules plus an ignore list (module docstring). ``optional`` lists targets (of rules or
    ignore) that may match nothing without a warning: presets use it for parts some checkpoints lack, such
    as DeepSeek's MTP layers, which transformers does not build."""

    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = ()
    name: str = "custom"
    description: str = ""
    optional: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        ignore = (self.ignore,) if isinstance(self.ignore, str) else tuple(self.ignore)
        for t in ignore:
            _compile(t)
        object.__setattr__(self, "ignore", ignore)
        object.__setattr__(self, "optional", tuple(self.optional))

    # -- resolution ---------------------------------------------------------------------------------
    def is_ignored(self, names: Iterable[str], class_names: Iterable[str] = ()) -> str | None:
        """The first ignore entry matching any of ``names`` (a module and its ancestors), or None."""
        class_names = tuple(class_names)
        for target in self.ignore:
            if any(target_matches(target, n, class_names) for n in names):
                return target
        return None

    def schemes(self) -> list[QuantScheme]:
        """Distinct schemes the rules use, in rule order."""
        seen: dict[str, QuantScheme] = {}
        for r in self.rules:
            seen.setdefault(json.dumps(r.scheme.to_dict(), sort_keys=True), r.scheme)
        return list(seen.values())

    def with_scale_dtype(self, scale_dtype: str) -> Recipe:
        """The same recipe with every rule's scheme storing its weight scales in ``scale_dtype``.

        compressed-tensors (vLLM, SGLang, transformers) keeps weight scales in the model dtype, so a bf16
        model saved in that format needs bf16 scales *before* its weights are quantized for the stored codes
        and scales to agree; ``dsq.quantize(..., scale_dtype="auto")`` does this for you.
        """
        rules = tuple(dataclasses.replace(r, scheme=r.scheme.replace(scale_dtype=scale_dtype)) for r in self.rules)
        return dataclasses.replace(self, rules=rules)

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "rules": [r.to_dict() for r in self.rules], "ignore": list(self.ignore),
                "optional": list(self.optional)}

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe must be a mapping with 'rules' (and 'ignore'), got {type(data).__name__}")
        unknown = set(data) - {"name", "description", "rules", "ignore", "optional"}
        if unknown:
            raise RecipeError(f"recipe has unknown keys {sorted(unknown)}; expected name, description, rules, "
                              "ignore, optional")
        rules = data.get("rules")
        if not isinstance(rules, list) or not rules:
            raise RecipeError("recipe needs a non-empty 'rules' list of {targets, scheme}")
        return cls(tuple(Rule.from_dict(r) for r in rules), tuple(data.get("ignore") or ()),
                   str(data.get("name", "custom")), str(data.get("description", "")),
                   tuple(data.get("optional") or ()))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Recipe:
        """Load a recipe from a ``.yaml``/``.yml`` or ``.json`` file."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise RecipeError(f"cannot read recipe file {path}: {exc}") from None
        try:
            if path.endswith(".json"):
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # yaml.YAMLError / json.JSONDecodeError carry the line number
            raise RecipeError(f"recipe file {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                              f"{exc}") from None
        try:
            recipe = cls.from_dict(data)
        except (SchemeError, UnknownNameError) as exc:
            raise RecipeError(f"recipe file {path}: {exc}") from None
        if recipe.name == "custom":
            recipe = dataclasses.replace(recipe, name=os.path.basename(path))
        return recipe

    def save(self, path: str | os.PathLike) -> None:
        """Write the recipe as YAML or JSON (by extension), atomically."""
        path = os.fspath(path)
        if path.endswith(".json"):
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)


# -- presets -----------------------------------------------------------------------------------------

def _model_layers(model) -> tuple[int, int]:
    """(num_hidden_layers, number of MTP layers) from a transformers config; DeepSeek-V3's (61, 1) without one."""
    cfg = getattr(model, "config", None)
    layers = int(getattr(cfg, "num_hidden_layers", 61) or 61)
    mtp = getattr(cfg, "num_mtp_layers", None)
    if mtp is None:
        mtp = getattr(cfg, "num_nextn_predict_layers", 1)
    return layers, int(mtp or 0)


def _every_linear(scheme: str, name: str, description: str):
    def build(model=None) -> Recipe:
        return Recipe((Rule(("Linear",), get_scheme(scheme)),), DEFAULT_IGNORE, name, description,
                      optional=DEFAULT_IGNORE)
    return build


def _mtp_target(model) -> str:
    """MTP layers sit after the decoder layers: DeepSeek-V3 checkpoints name them model.layers.61.*"""
    layers, mtp = _model_layers(model)
    ids = "|".join(str(i) for i in range(layers, layers + max(mtp, 1)))
    return rf"re:model\.layers\.({ids})\."


_MLA = r"re:.*self_attn\.(q_proj|q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj)$"
_SHARED = r"re:.*mlp\.shared_experts?\.(gate|up|down)_proj$"
_DENSE = r"re:.*mlp\.(gate|up|down)_proj$"
_ROUTED = r"re:.*mlp\.experts$"
# DeepSeek MTP layers carry their own output head (shared_head.head); it stays float like lm_head.
_MTP_HEAD = r"re:.*shared_head\.head$"
_DS_IGNORE = DEFAULT_IGNORE + (_MTP_HEAD,)


def _deepseek_w4a8(model=None) -> Recipe:
    # msModelSlim's mix writes int8 scales as amax/127 and Ascend rounds static activations half away from zero.
    w8a8 = get_scheme("W8A8", scale_rule="qmax", act_rounding="half_away")
    w8a8_dyn = get_scheme("W8A8_DYNAMIC", scale_rule="qmax")
    rules = (
        Rule((_mtp_target(model),), w8a8_dyn, note="MTP layers"),
        Rule((_MLA,), w8a8, note="MLA attention projections"),
        Rule((_SHARED,), w8a8_dyn, note="shared experts"),
        Rule((_ROUTED,), get_scheme("W4A8_DYNAMIC"), note="routed experts"),
        Rule((_DENSE,), w8a8_dyn, note="dense first-k MLPs"),
    )
    return Recipe(rules, _DS_IGNORE, "deepseek-w4a8",
                  "msModelSlim mix for Ascend: MLA W8A8 static, shared experts / dense MLPs / MTP W8A8 dynamic, "
                  "routed experts W4A8 dynamic; lm_head, router gates, embeddings and norms float",
                  optional=(_mtp_target(model), *_DS_IGNORE))


def _deepseek_w4afp8(model=None) -> Recipe:
    rules = (
        Rule((_ROUTED,), get_scheme("W4AFP8"), note="routed experts"),
        Rule(("Linear",), get_scheme("FP8_BLOCK"), note="every other Linear"),
    )
    return Recipe(rules, _DS_IGNORE, "deepseek-w4afp8",
                  "SGLang W4AFP8: routed experts int4 g128 with FP8 activations, every other Linear FP8 block "
                  "128x128; lm_head and router gates float", optional=_DS_IGNORE)


_PRESETS = {
    "w8a16": _every_linear("W8A16", "w8a16", "every Linear int8 per channel, activations float "
                                             "(the llm-compressor recipe); lm_head and router gates float"),
    "w4a16": _every_linear("W4A16", "w4a16", "every Linear int4 group 128, activations float; "
                                             "lm_head and router gates float"),
    "w8a8-dynamic": _every_linear("W8A8_DYNAMIC", "w8a8-dynamic",
                                  "every Linear int8 per channel, int8 per-token dynamic activations; "
                                  "lm_head and router gates float"),
    "deepseek-w4a8": _deepseek_w4a8,
    "deepseek-w4afp8": _deepseek_w4afp8,
}


def list_recipes() -> list[str]:
    """Names of the preset recipes."""
    return list(_PRESETS)


def get_recipe(name: str, model=None) -> Recipe:
    """A preset recipe by name (case-insensitive; ``_`` and ``-`` are the same). ``model`` lets presets that
    depend on the architecture (MTP layer indices) read its config; without it DeepSeek-V3's are assumed."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _PRESETS:
        raise UnknownNameError("recipe", str(name), list_recipes(),
                               "a scheme name, a Recipe or a .yaml/.json recipe file also work")
    return _PRESETS[key](model)


def resolve_recipe(recipe, model=None) -> Recipe:
    """Accept a Recipe, a preset recipe name, a scheme name (every Linear, default ignore list), a
    QuantScheme, a dict, or a path to a YAML/JSON file."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, QuantScheme):
        return Recipe((Rule(("Linear",), recipe),), DEFAULT_IGNORE, recipe.name.lower(), optional=DEFAULT_IGNORE)
    if isinstance(recipe, dict):
        return Recipe.from_dict(recipe)
    if isinstance(recipe, (str, os.PathLike)):
        text = os.fspath(recipe)
        if text.endswith((".yaml", ".yml", ".json")) or os.path.sep in text:
            if not os.path.exists(text):
                raise RecipeError(f"recipe file {text} does not exist")
            return Recipe.from_file(text)
        key = text.strip().lower().replace("_", "-")
        if key in _PRESETS:
            return get_recipe(key, model)
        if key.replace("-", "_") in {s.lower() for s in list_schemes()}:
            return resolve_recipe(get_scheme(text), model)
        raise UnknownNameError("recipe", text, list_recipes(),
                               f"schemes also work as recipes: {', '.join(list_schemes())}; "
                               "or give a .yaml/.json recipe file")
    raise RecipeError(f"recipe must be a name, a Recipe, a QuantScheme, a dict or a file path, "
                      f"got {type(recipe).__name__}")

