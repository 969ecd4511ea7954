"""The decode kernel's launch heuristic (dsq_cuda.configs.pick_mma) for a 132-SM GPU, checked on any machine."""

import pytest

import dsq_cuda.configs as configs


@pytest.fixture
def h200(monkeypatch):
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    monkeypatch.setattr(configs, "_sm_count", lambda index: 132)


@pytest.mark.parametrize("m,k,n,split,stages", [
    (1, 7168, 18432, 4, 3),    # 288 row blocks: split 4 (about 8 programs per SM), 7 tiles a program
    (16, 18432, 7168, 16, 3),  # 112 row blocks: split 16, 5 tiles a program
    (1, 7168, 2048, 16, 3),    # 28 tiles over a split of 16: 2 tiles a program, still 3 stages
    (1, 2048, 7168, 8, 2),     # 8 tiles over a split of 8: one tile a program, nothing to pipeline: 2 stages
])
def test_decode_stages_follow_the_tiles_each_program_sums(h200, m, k, n, split, stages):
    cfg = configs.pick_mma(m, n, k, 32, 4, "cuda:0")
    assert (cfg.block_m, cfg.block_n, cfg.num_warps) == (16, 64, 4)
    assert (cfg.split_k, cfg.num_stages) == (split, stages)


def test_wide_decode_uses_eight_warps_and_three_stages(h200):
    cfg = configs.pick_mma(64, 18432, 7168, 32, 4, "cuda:0")
    assert (cfg.block_m, cfg.block_n, cfg.split_k, cfg.num_warps, cfg.num_stages) == (64, 128, 2, 8, 3)
    assert configs.pick_mma(64, 2048, 7168, 32, 4, "cuda:0").split_k == 8  # 16 row blocks: split more


def test_interpreter_keeps_small_tiles(monkeypatch):
    monkeypatch.setattr(configs, "interpreting", lambda: True)
    cfg = configs.pick_mma(3, 80, 1100, 32, 4, "cpu")
    assert (cfg.block_m, cfg.block_n, cfg.num_stages) == (16, 32, 1)
