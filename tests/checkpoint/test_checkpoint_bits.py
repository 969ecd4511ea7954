"""dsq.checkpoint.bits against the reference backend's numpy packing and hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsq.checkpoint.bits import pack_int4_pairs, pack_words, unpack_int4_pairs, unpack_words
from dsq.errors import CheckpointError
from dsq_cpu_reference.packing import pack_codes, unpack_codes


@pytest.mark.parametrize("bits,k", [(4, 64), (4, 37), (8, 64), (8, 13)])
def test_words_match_reference(bits, k):
    rng = np.random.default_rng(bits * 100 + k)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
    q = rng.integers(lo, hi, size=(3, 5, k)).astype(np.int8)
    ours = pack_words(torch.from_numpy(q), bits)
    assert ours.dtype == torch.int32
    assert np.array_equal(ours.numpy(), pack_codes(q, bits))
    assert np.array_equal(unpack_words(ours, bits, k).numpy(), unpack_codes(pack_codes(q, bits), bits, k))
    assert np.array_equal(unpack_words(ours, bits, k).numpy(), q)


def test_words_hand_example():
    # codes 0..7 -> biased 8..15, element i in bits 4i: 0xFEDCBA98 as a signed int32
    w = pack_words(torch.arange(8, dtype=torch.int8).reshape(1, 8), 4)
    assert w.tolist() == [[0xFEDCBA98 - 2**32]]
    with pytest.raises(CheckpointError, match="4-bit range"):
        pack_words(torch.tensor([[8]], dtype=torch.int8), 4)


def test_int4_pairs_hand_example():
    q = torch.tensor([[1, -8], [-1, 7], [3, 0], [-4, -2]], dtype=torch.int8)  # [N=4, K=2]
    p = pack_int4_pairs(q)
    # byte = (row 2j+1 << 4) | (row 2j & 0xF): (-1 -> 0xF) << 4 | 1 = 0xF1; (7 << 4) | 0x8 = 0x78
    assert p.tolist() == [[0xF1 - 256, 0x78], [0xC3 - 256, 0xE0 - 256]]
    assert torch.equal(unpack_int4_pairs(p), q)
    with pytest.raises(CheckpointError, match="even N"):
        pack_int4_pairs(q[:3])
