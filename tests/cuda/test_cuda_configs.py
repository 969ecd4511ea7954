"""The decode kernel's launch heuristic (dsq_cuda.configs.pick_mma) for a 132-SM GPU, checked on any machine."""

import pytest

import dsq_cuda.configs as configs


@pytest.fixture
def h200(monkeypatch):
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    monkeypatch.setattr(configs, "_sm_count", lambda index: 132)


@pytest.mark.parametrize("m,k,n,split,stages", [
    (1, 7168, 18432, 2, 3),    # 288 row blocks: 528 / 288 = 1.8 splits for 4 programs per SM -> 2
    (16, 18432, 7168, 4, 3),   # 112 row blocks: 4.7 -> 4
    (1, 7168, 2048, 14, 3),    # 32 row blocks: 16.5 -> 16, capped at half the 28 K tiles
    (1, 2048, 7168, 4, 3),     # 8 K tiles: split 4 leaves 2 a program
    (1, 1024, 7168, 2, 3),     # 4 K tiles
    (1, 256, 7168, 1, 2),      # one K tile: no split, nothing to pipeline, 2 stages
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


def test_stream_k_above_m16_only_for_large_weights(h200):
    big = configs.pick_mma(64, 18432, 7168, 32, 4, "cuda:0")  # 144 row blocks x 28 tiles: 30 a program
    assert configs.mma_stream_programs(big, 18432, 7168, 4, "cuda:0") == 132
    small = configs.pick_mma(64, 2048, 7168, 32, 4, "cuda:0")  # 16 x 28 tiles: 3.4 a program
    assert configs.mma_stream_programs(small, 2048, 7168, 4, "cuda:0") == 0
    decode = configs.pick_mma(16, 18432, 7168, 32, 4, "cuda:0")
    assert configs.mma_stream_programs(decode, 18432, 7168, 4, "cuda:0") == 0


@pytest.mark.parametrize("m,k,n,want", [
    (128, 7168, 18432, (128, 128, 1, 2)),   # 144 row blocks x 28 tiles: one block of 128 tokens, stream-K
    (100, 18432, 7168, (128, 128, 1, 2)),   # 56 x 72 tiles: stream-K too
    (128, 7168, 2048, (64, 128, 4, 3)),     # 16 x 28 tiles, too few: 2 token blocks of 64, 32 programs -> split 4
    (128, 2048, 7168, (64, 128, 1, 3)),     # 56 x 8 tiles: 2 token blocks x 56 = 112 programs, no split
    (192, 7168, 18432, (64, 128, 1, 3)),    # more tokens than one block: 3 token blocks x 144, no split
])
def test_prefill_takes_one_block_under_stream_k_or_token_blocks(h200, m, k, n, want):
    cfg = configs.pick_mma(m, n, k, 32, 4, "cuda:0")
    assert (cfg.block_m, cfg.block_n, cfg.split_k, cfg.num_stages) == want
    streamed = configs.mma_stream_programs(cfg, n, k, 4, "cuda:0", m)
    assert streamed == (132 if cfg.block_m >= m else 0)
