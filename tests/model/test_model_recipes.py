"""Recipe matching, loading, and the errors for bad input (unknown preset, unmatched target, misfit, NaN)."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from model_builders import logits, tiny_deepseek, token_batches
from torch import nn

import dsq
from dsq.errors import QuantInputError, SchemeError, UnknownNameError, UnsupportedError
from dsq.nn import QuantLinear
from dsq.planning import RecipeWarning
from dsq.recipes import Recipe, RecipeError, Rule, get_recipe, resolve_recipe, target_matches


def test_target_forms():
    name = "model.layers.1.mlp.gate"
    assert target_matches("re:.*mlp.gate$", name)
    assert not target_matches("re:.*mlp.gate$", "model.layers.1.mlp.gate_proj")
    assert not target_matches("re:mlp", name)  # anchored at the start, like re.match
    assert target_matches("re:model\\.layers\\.1\\.", name)  # but not at the end
    assert target_matches(name, name) and not target_matches("mlp.gate", name)
    assert target_matches("Linear", "x", ("Linear", "Module")) and not target_matches("Linear", "Linear2")


def test_first_rule_wins_and_ignore_covers_children(float_deepseek):
    recipe = Recipe((Rule(("model.layers.1.self_attn.o_proj",), "W8A16"), Rule(("Linear",), "W4A16")),
                    ignore=("model.layers.2",), name="t")
    p = dsq.plan(float_deepseek, recipe)
    assert p.scheme_of("model.layers.1.self_attn.o_proj").name == "W8A16"
    assert p.scheme_of("model.layers.1.self_attn.q_a_proj").name == "W4A16"
    assert p.scheme_of("model.layers.1.mlp.experts").name == "W4A16"  # "Linear" covers fused experts
    assert p.scheme_of("model.layers.2.mlp.experts") is None  # inside an ignored layer
    assert p.scheme_of("model.layers.2.self_attn.o_proj") is None
    entry = next(e for e in p.entries if e.name == "model.layers.2.self_attn.o_proj")
    assert entry.reason == "ignored: model.layers.2"


def test_per_expert_names_select_the_fused_block(float_deepseek):
    every = "re:.*mlp\\.experts\\.\\d+\\.(gate|up|down)_proj$"
    p = dsq.plan(float_deepseek, Recipe((Rule((every,), "W4A16"),), name="t"))
    assert p.scheme_of("model.layers.1.mlp.experts").name == "W4A16"
    assert p.scheme_of("model.layers.1.self_attn.o_proj") is None
    with pytest.raises(RecipeError, match="only some experts of the fused block model.layers.1.mlp.experts"):
        dsq.plan(float_deepseek, Recipe((Rule(("re:.*experts\\.0\\.",), "W4A16"),), name="t"))


def test_scheme_overrides_and_file_round_trip(tmp_path, float_deepseek):
    recipe = Recipe.from_dict({"name": "mine", "rules": [
        {"targets": ["re:.*self_attn\\."], "scheme": {"scheme": "W4A16", "group_size": 64}},
        {"targets": ["Linear"], "scheme": "w8a8-dynamic"}], "ignore": ["lm_head"]})
    assert recipe.rules[0].scheme.group_size == 64
    for ext in ("yaml", "json"):
        path = tmp_path / f"r.{ext}"
        recipe.save(path)
        again = resolve_recipe(str(path))
        assert again == recipe and again.to_dict() == recipe.to_dict()
    text = "rules:\n  - targets: [Linear]\n    scheme: {scheme: W4A16, group_size: 64}\nignore: [lm_head]\n"
    (tmp_path / "hand.yaml").write_text(text)
    r = resolve_recipe(str(tmp_path / "hand.yaml"))
    assert r.name == "hand.yaml" and r.rules[0].scheme.group_size == 64
    p = dsq.plan(float_deepseek, r)
    assert p.scheme_of("model.layers.1.mlp.experts").group_size == 64


def test_recipe_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - targets: [Linear]\n    scheme: W5A16\n")
    with pytest.raises(RecipeError, match=r"bad.yaml.*unknown scheme 'W5A16'.*W4A16"):
        resolve_recipe(str(bad))
    (tmp_path / "broken.json").write_text("{rules: ")
    with pytest.raises(RecipeError, match="broken.json is not valid JSON"):
        resolve_recipe(str(tmp_path / "broken.json"))
    with pytest.raises(RecipeError, match="missing.yaml does not exist"):
        resolve_recipe(str(tmp_path / "missing.yaml"))
    with pytest.raises(RecipeError, match="unknown keys"):
        Recipe.from_dict({"rules": [{"targets": ["Linear"], "scheme": "W4A16"}], "ignored": []})


def test_unknown_preset_lists_known():
    with pytest.raises(UnknownNameError) as info:
        get_recipe("deepseek-w3a8")
    msg = str(info.value)
    assert "deepseek-w3a8" in msg and all(n in msg for n in dsq.list_recipes())
    with pytest.raises(UnknownNameError, match="w8a16, w4a16"):
        dsq.quantize(nn.Linear(128, 8), "nonsense", progress=False)


def test_unmatched_target_warns_with_its_name(float_deepseek):
    recipe = Recipe((Rule(("re:.*no_such_proj$",), "W8A16"), Rule(("Linear",), "W8A16")),
                    ignore=("lm_head", "re:.*not_there$"), name="t")
    with pytest.warns(RecipeWarning, match=r"no_such_proj\$, re:\.\*not_there\$"):
        p = dsq.plan(float_deepseek, recipe)
    assert p.unmatched == ["re:.*no_such_proj$", "re:.*not_there$"]
    # presets stay quiet about DeepSeek MTP parts that a transformers-built model lacks
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dsq.plan(tiny_deepseek(mtp=False), "deepseek-w4a8").unmatched == []


def test_scheme_that_does_not_fit_names_module_and_constraint():
    model = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32))
    with pytest.raises(SchemeError, match=r"(?s)\n  2: weight \[N, K\]=\[32, 64\]: in_features K=64 must be a "
                                          r"multiple of group_size=128 for W4A16"):
        dsq.quantize(model, "W4A16", progress=False)
    assert isinstance(model[0], nn.Linear)  # nothing was touched
    with pytest.raises(SchemeError, match="block width 128 for FP8_BLOCK"):
        dsq.quantize(model, "FP8_BLOCK", progress=False)


def test_nan_or_inf_weight_names_the_tensor(deepseek):
    with torch.no_grad():
        deepseek.model.layers[0].self_attn.q_b_proj.weight[3, 5] = float("nan")
    with pytest.raises(QuantInputError, match=r"model\.layers\.0\.self_attn\.q_b_proj\.weight has 1 NaN"):
        dsq.quantize(deepseek, "w8a16", progress=False)
    with torch.no_grad():
        deepseek.model.layers[0].self_attn.q_b_proj.weight[3, 5] = 0.0
        deepseek.model.layers[2].mlp.experts.down_proj[1, 2, 3] = float("inf")
    with pytest.raises(QuantInputError, match=r"model\.layers\.2\.mlp\.experts\.down_proj has 0 NaN and 1 Inf"):
        dsq.quantize(deepseek, "w8a16", progress=False)


def test_any_linear_model_with_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.GELU(), nn.Linear(128, 16))
    x = torch.randn(3, 5, 256)
    ref = model(x).detach()
    dsq.quantize(model, "w8a8-dynamic", progress=False)
    assert isinstance(model[0], QuantLinear) and isinstance(model[2], QuantLinear)
    out = model(x)
    assert out.shape == (3, 5, 16)
    # exactly the backend's matmul on the flattened input, bias included
    be = dsq.get_backend("cpu")
    h = be.matmul(x.reshape(-1, 256), model[0].packed, model[0].scheme, model[0].bias)
    want = be.matmul(torch.nn.functional.gelu(h), model[2].packed, model[2].scheme, model[2].bias)
    assert torch.equal(out.reshape(-1, 16), want)
    assert float((out - ref).norm() / ref.norm()) < 0.02
    with pytest.raises(QuantInputError, match="already quantized"):
        dsq.quantize(model, "w8a16", progress=False)
    assert json.loads(json.dumps(model.dsq_info))["modules"].keys() == {"0", "2"}


class _NoMoeBackend(dsq.Backend):
    """A backend whose capability matrix lacks fused MoE (it delegates nothing: planning only asks supports)."""

    name = "no-moe"

    def supports(self, scheme, op):
        return dsq.Capability(False, "no fused MoE kernel yet") if op == "moe" else dsq.Capability(True)


def test_backend_without_the_scheme_is_refused_before_any_work(deepseek):
    p = dsq.plan(deepseek, "w4a16", backend=_NoMoeBackend())
    assert p.problems == [f"model.layers.{i}.mlp.experts: backend no-moe does not support moe for W4A16: "
                          "no fused MoE kernel yet" for i in (1, 2, 3)]
    with pytest.raises(UnsupportedError, match="model.layers.1.mlp.experts: backend no-moe does not support moe"):
        dsq.quantize(deepseek, "w4a16", backend=_NoMoeBackend(), progress=False)
    assert isinstance(deepseek.model.layers[0].self_attn.o_proj, nn.Linear)


def test_bfloat16_model(float_deepseek):
    model = copy.deepcopy(float_deepseek).to(torch.bfloat16)
    ids = token_batches(n=1)[0]
    ref = logits(model, ids).float()
    dsq.quantize(model, "w8a16", progress=False)
    assert model.model.layers[1].self_attn.o_proj.out_dtype == torch.bfloat16
    out = logits(model, ids)
    assert out.dtype == torch.bfloat16
    per_token = (out.float() - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert float(per_token.median()) < 0.05


@pytest.mark.parametrize("preset", ["w8a16", "deepseek-w4a8", "deepseek-w4afp8"])
def test_presets_survive_a_file_round_trip(preset, tmp_path):
    recipe = get_recipe(preset)
    path = tmp_path / "r.yaml"
    recipe.save(path)
    again = resolve_recipe(str(path))
    assert again == recipe  # scheme overrides (scale_rule, act_rounding) included
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
