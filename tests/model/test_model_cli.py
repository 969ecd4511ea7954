"""``dsq recipes`` and ``dsq plan`` (model built from a config folder on the meta device)."""

from __future__ import annotations

import json

from model_builders import deepseek_config

from dsq.cli import main


def test_recipes_lists_and_shows(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("w8a16", "w4a16", "w8a8-dynamic", "deepseek-w4a8", "deepseek-w4afp8"):
        assert name in out
    assert main(["recipes", "deepseek-w4a8"]) == 0
    out = capsys.readouterr().out
    assert "W4A8_DYNAMIC" in out and "re:.*mlp\\.experts$" in out and "lm_head" in out
    assert main(["recipes", "w8a16", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ignore"] == ["lm_head", "re:.*mlp.gate$"] and data["rules"][0]["targets"] == ["Linear"]
    assert main(["recipes", "w9a9"]) == 2
    assert "known recipes: w8a16" in capsys.readouterr().err


def _config_dir(tmp_path, **overrides):
    deepseek_config(**overrides).save_pretrained(tmp_path)
    return str(tmp_path)


def test_plan_from_config_folder(tmp_path, capsys):
    folder = _config_dir(tmp_path)
    assert main(["plan", folder, "--recipe", "deepseek-w4afp8", "--backend", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.2.mlp.experts" in out and "W4AFP8" in out and "FP8_BLOCK" in out
    assert main(["plan", folder, "--recipe", "deepseek-w4a8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["W4A8_DYNAMIC"]["experts"] == 16
    assert data["totals"]["bytes_after"] < data["totals"]["bytes_before"]
    assert data["problems"] == [] and data["unmatched_targets"] == []


def test_plan_reports_a_misfit_with_exit_status_2(tmp_path, capsys):
    folder = _config_dir(tmp_path, moe_intermediate_size=96)  # down_proj K = 96: not whole groups of 128
    assert main(["plan", folder, "--recipe", "w4a16", "--summary"]) == 2
    out = capsys.readouterr().out
    assert "problem: model.layers.1.mlp.experts: down_proj [N, K]=[128, 96]: in_features K=96 must be a " \
           "multiple of group_size=128" in out


def test_plan_without_config_is_an_error(tmp_path, capsys):
    assert main(["plan", str(tmp_path), "--recipe", "w8a16"]) == 2
    assert "has no config.json" in capsys.readouterr().err
