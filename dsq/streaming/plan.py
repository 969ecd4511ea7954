"""What happens to every source tensor, decided from headers and the recipe before any data is read.

Without a model object, modules are recognised by tensor names (``<module>.weight``):

* a 2-D floating-point (or float8) ``<m>.weight`` is a linear layer, except embeddings (last name part
  ``embed_tokens``, ``wte``, ``word_embeddings``, ``embeddings``) and MoE routers (``<x>.gate`` next to
  ``<x>.experts.*``, or any module carrying ``e_score_correction_bias``), which transformers does not build
  as ``nn.Linear`` either;
* ``<x>.experts.<e>.{gate,up,down}_proj`` are the routed experts of the fused block ``<x>.experts``; the
  recipe is resolved once per block (a target matches the block's name, its class, or every per-expert
  name), exactly as :func:`dsq.plan` does for the fused module, so both paths pick the same scheme;
* a ``float8_e4m3fn`` weight must have its DeepSeek block-scale partner ``<m>.weight_scale_inv`` (float32,
  one scale per 128x128 block, multiplied in); the partner is consumed, never copied.

Each linear gets a :class:`Job`: ``quantize`` (its recipe scheme), ``dequant`` (a float8 weight the recipe
keeps float: written in the model dtype, since the output's quantization_config replaces DeepSeek's fp8 one)
or ``copy``. Every other tensor (norms, embeddings, routers and their ``e_score_correction_bias``, biases,
MTP extras) is copied byte for byte. Schemes that need calibration data (static activation scales) are
refused with a clear error, or kept float with ``skip_calibrated=True``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

from dsq.errors import CheckpointError, SchemeError
from dsq.planning import fit_problems, resolve_unit
from dsq.recipes import Recipe, resolve_recipe, target_matches
from dsq.schemes import QuantScheme

from .source import SourceCheckpoint

__all__ = ["Job", "ShardPlan", "StreamPlan", "make_plan", "model_dtype", "output_name", "natural_key", "EXPERT_RE"]

EXPERT_RE = re.compile(r"^(?P<block>.*\.experts)\.(?P<e>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)$")
_EMBEDDINGS = ("embed_tokens", "wte", "word_embeddings", "embeddings")
_FLOAT_CODES = ("F32", "F16", "BF16", "F64")
_FP8 = "F8_E4M3"
SCALE_SUFFIX = "_scale_inv"


@dataclass
class Job:
    """One output unit of a shard. ``kind``: quantize | dequant | copy."""

    kind: str
    name: str  # module name (quantize/dequant) or tensor name (copy)
    tensor: str  # source tensor
    scheme: QuantScheme | None = None
    scale_inv: str | None = None  # float8 partner tensor
    src_bytes: int = 0


@dataclass
class ShardPlan:
    index: int
    source: str
    output: str
    jobs: list[Job]
    src_bytes: int


@dataclass
class StreamPlan:
    recipe: Recipe
    shards: list[ShardPlan]
    model_dtype: str
    float_linears: list[str]  # 2-D float modules kept float (compressed-tensors ``ignore``)
    linears: dict[str, QuantScheme] = field(default_factory=dict)
    experts: dict[str, tuple[QuantScheme, int]] = field(default_factory=dict)
    skipped_calibrated: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


@dataclass
class _Unit:
    """Duck-typed stand-in for dsq.planning.Unit (name, class names, per-expert aliases)."""

    name: str
    kind: str
    aliases: list[str]
    class_names: tuple[str, ...]


def _prefixes(tensor: str) -> list[str]:
    parts = tensor.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _module_of(tensor: str) -> str | None:
    return tensor[: -len(".weight")] if tensor.endswith(".weight") else None


def _is_router(module: str, names: set[str], block_prefixes: set[str]) -> bool:
    parent, _, last = module.rpartition(".")
    if f"{module}.e_score_correction_bias" in names:
        return True
    return last == "gate" and f"{parent}.experts" in block_prefixes


def model_dtype(src: SourceCheckpoint) -> str:
    """The model's float dtype: config.json ``torch_dtype``/``dtype``, else the first float tensor's."""
    cfg = src.config()
    name = cfg.get("torch_dtype") or cfg.get("dtype")
    if name in ("float32", "bfloat16", "float16"):
        return name
    codes = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
    for s in src.shards:  # the first float tensor (an embedding or norm) tells the model dtype
        for t in s.tensors.values():
            if t.dtype in codes:
                return codes[t.dtype]
    return "bfloat16"


def _recipe_model(cfg: dict) -> SimpleNamespace:
    """What preset recipes read from a model (MTP layer indices), from config.json."""
    keys = ("num_hidden_layers", "num_nextn_predict_layers", "num_mtp_layers", "model_type")
    return SimpleNamespace(config=SimpleNamespace(**{k: cfg[k] for k in keys if k in cfg}))


def _expert_classes(cfg: dict) -> tuple[str, ...]:
    from dsq.adapters import list_adapters

    mt = cfg.get("model_type")
    for a in list_adapters():
        if mt is not None and mt in a.model_types:
            return tuple(a.expert_classes)
    return ()


def make_plan(src: SourceCheckpoint, recipe, prefix: str = "model", scale_dtype: str | None = None,
              skip_calibrated: bool = False) -> StreamPlan:
    """Resolve ``recipe`` against the source's tensor names; check every quantized shape fits its scheme.

    ``scale_dtype`` (if given) replaces every rule's scale dtype. Raises before anything is written.
    """
    cfg = src.config()
    recipe = resolve_recipe(recipe, _recipe_model(cfg))
    if scale_dtype is not None:
        recipe = recipe.with_scale_dtype(scale_dtype)
    names = set(src.where)
    # float8 weights and their scale partners
    scale_of: dict[str, str] = {}
    for t in names:
        info = src.info(t)
        if t.endswith(SCALE_SUFFIX):
            base = t[: -len(SCALE_SUFFIX)]
            if base not in names or src.info(base).dtype != _FP8:
                raise CheckpointError(f"tensor {t!r} in {src.where[t]} is a block scale, but {base!r} is not a "
                                      "float8_e4m3fn weight of this checkpoint")
        elif info.dtype == _FP8:
            partner = t + SCALE_SUFFIX
            if partner not in names:
                raise CheckpointError(f"tensor {t!r} in {src.where[t]} is float8_e4m3fn but its scale partner "
                                      f"{partner!r} is missing from the checkpoint")
            scale_of[t] = partner
    # linear modules, expert blocks
    linears: dict[str, str] = {}  # module -> weight tensor
    blocks: dict[str, list[str]] = {}
    for t in sorted(names):
        m = _module_of(t)
        info = src.info(t)
        if m is None or len(info.shape) != 2 or info.dtype not in _FLOAT_CODES + (_FP8,):
            continue
        hit = EXPERT_RE.match(m)
        if hit:
            blocks.setdefault(hit.group("block"), []).append(m)
        elif m.rpartition(".")[2] not in _EMBEDDINGS:
            linears[m] = t
    block_prefixes = set(blocks)
    routers = [m for m in linears if _is_router(m, names, block_prefixes)]
    linears = {m: t for m, t in linears.items() if m not in routers}
    recipe_units: list[_Unit] = [_Unit(m, "linear", [], ("Linear",)) for m in linears]
    ecls = _expert_classes(cfg)
    for b, members in blocks.items():
        recipe_units.append(_Unit(b, "experts", members, ecls + ("Linear",)))
    hits = {t: 0 for r in recipe.rules for t in r.targets} | {t: 0 for t in recipe.ignore}
    chosen: dict[str, QuantScheme] = {}
    problems: list[str] = []
    plan = StreamPlan(recipe, [], model_dtype(src), list(routers))
    modules = {p for t in names for p in _prefixes(t)}
    for target in recipe.ignore:  # an ignore entry may name any module (a router, a whole layer)
        hits[target] += sum(target_matches(target, m) for m in modules)
    for u in recipe_units:
        scheme, _, _ = resolve_unit(recipe, u, hits)
        members = u.aliases or [u.name]
        if scheme is not None and scheme.static_activations:
            if not skip_calibrated:
                raise SchemeError(
                    f"module {u.name}: the recipe {recipe.name} gives it {scheme.name} ({scheme.describe()}), whose "
                    "activation scales come from calibration data; `dsq quantize-checkpoint` is data-free. Use "
                    "`dsq quantize` with calibration data, a recipe with dynamic activations, or "
                    "--skip-calibrated to keep such modules float")
            plan.skipped_calibrated.append(u.name)
            scheme = None
        if scheme is None:
            if u.kind == "linear":
                plan.float_linears.append(u.name)
            continue
        for m in members:
            n, k = src.info(f"{m}.weight").shape
            problems += [f"{m}: {p}" for p in fit_problems(scheme, n, k)]
            chosen[m] = scheme
        if u.kind == "linear":
            plan.linears[u.name] = scheme
        else:
            plan.experts[u.name] = (scheme, len({EXPERT_RE.match(m).group("e") for m in members}))
    if problems:
        raise SchemeError("scheme does not fit the layer shape:\n  " + "\n  ".join(problems))
    optional = set(recipe.optional)
    plan.unmatched = [t for t, n in hits.items() if n == 0 and t not in optional]
    plan.float_linears.sort(key=natural_key)
    plan.shards = _shard_jobs(src, chosen, scale_of, prefix)
    return plan


def natural_key(name: str) -> list:
    """Sort key that orders ``layers.10`` after ``layers.9``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split(".")]


def output_name(prefix: str, i: int, n: int) -> str:
    return f"{prefix}.safetensors" if n == 1 else f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors"


def _shard_jobs(src: SourceCheckpoint, chosen: dict[str, QuantScheme], scale_of: dict[str, str],
                prefix: str) -> list[ShardPlan]:
    out = []
    n = len(src.shards)
    for i, shard in enumerate(src.shards):
        jobs = []
        for t, info in shard.tensors.items():
            if t.endswith(SCALE_SUFFIX):
                continue  # consumed by its weight's job
            m = _module_of(t)
            partner = scale_of.get(t)
            nbytes = info.nbytes + (src.info(partner).nbytes if partner else 0)
            if m is not None and m in chosen:
                jobs.append(Job("quantize", m, t, chosen[m], partner, nbytes))
            elif partner is not None:
                jobs.append(Job("dequant", m or t, t, None, partner, nbytes))
            else:
                jobs.append(Job("copy", t, t, None, None, nbytes))
        src_bytes = shard.size
        out.append(ShardPlan(i, shard.name, output_name(prefix, i, n), jobs, src_bytes))
    return out
