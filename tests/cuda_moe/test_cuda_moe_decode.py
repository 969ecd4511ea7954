"""The decode path's slab layout and its launch variants (split-K, swapped operands) vs the numpy reference."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from moe_cases import DEVICE, make_experts, reference, rel_err  # noqa: E402

from dsq_cuda.moe import run_moe  # noqa: E402
from dsq_cuda.moe_layout import slab_words  # noqa: E402


def test_slab_words_put_slab_j_in_field_j():
    # 3 rows, K = 40 (not a multiple of the 16-wide tile): canonical word c holds k = 8c + j in bits 4j.
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (3, 40), generator=g, dtype=torch.int32)
    padded = torch.cat([codes, torch.full((3, 8), 15, dtype=torch.int32)], 1)  # junk fields past K
    canon = sum(padded.reshape(3, 6, 8)[:, :, j].to(torch.int64) << (4 * j) for j in range(8))
    canon = torch.where(canon >= 2**31, canon - 2**32, canon).to(torch.int32)
    w = slab_words(canon, 40, 4, 16)  # tiles of 16 inputs: SL = 2 words, slab j = inputs k0 + 2j .. 2j+1
    assert w.shape == (3, 3 * 2)
    for t in range(3):
        for c in range(2):
            for j in range(8):
                k = t * 16 + 2 * j + c
                want = int(codes[1, k]) if k < 40 else 8  # padding decodes to code 0
                assert (int(w[1, t * 2 + c]) >> (4 * j)) & 15 == want, (t, c, j)


@pytest.mark.parametrize("scheme_name", ["W4A16_ASYM", "W8A8", "W4A8_DYNAMIC", "FP8_BLOCK", "W8A16"])
@pytest.mark.parametrize("cfg", [dict(swap=1, mma=0), dict(sl1=32, lbk4=256, lbk8=128, target_programs=10**6, mma=0),
                                 dict(shared=0)])
def test_decode_variants_match_reference(scheme_name, cfg):
    # Ragged H/I; the second config splits K over several programs (atomic float32 partial sums). mma=0 keeps
    # symmetric int4 experts (W4A8_DYNAMIC) on the slab kernel these variants configure.
    t, e, k, h, i = 5, 6, 3, 1000, 96
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=4)
    g = torch.Generator().manual_seed(2)
    ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    w = torch.rand(t, k, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    r = reference().moe(x, ids, w, cpu, scheme)
    y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e, path="decode",
                decode_cfg=cfg)
    assert rel_err(y, r) < 4e-3, rel_err(y, r)


@pytest.mark.parametrize("scheme_name", ["W4A16", "W4A16_ASYM", "W8A16", "W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC",
                                         "W4AFP8"])
@pytest.mark.parametrize("top_k", [1, 4])
def test_one_token_gemv_path_matches_reference(scheme_name, top_k):
    # T = 1 with integer weights: one CUDA-core GEMV per (token, expert) pair (moe_gemv.py); ragged H/I.
    # Quantized-activation schemes multiply codes (static W8A8: q - zp per pair, with non-zero zero points).
    from dsq_cuda import moe_gemv

    e, h, i = 6, 520, 48
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=5)
    assert moe_gemv.eligible(scheme, 1)
    g = torch.Generator().manual_seed(3)
    ids = torch.randperm(e, generator=g)[:top_k].view(1, top_k)
    w = torch.rand(1, top_k, generator=g) + 0.1
    x = torch.randn(1, h, generator=g).to(torch.bfloat16)
    r = reference().moe(x, ids, w, cpu, scheme)
    y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)  # auto -> gemv
    assert rel_err(y, r) < 4e-3, rel_err(y, r)
    # expert parallelism: a rank owning experts [2, 5) adds only its experts' share; the ranks sum to y
    parts = [run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e,
                     expert_range=rng, path="gemv") for rng in ((0, 2), (2, 5), (5, 6))]
    r_mid = reference().moe(x, ids, w, cpu, scheme, expert_range=(2, 5))
    if r_mid.abs().sum() > 0:
        assert rel_err(parts[1], r_mid) < 4e-3, rel_err(parts[1], r_mid)
    else:
        assert not parts[1].float().abs().sum()
    total = sum(p.float() for p in parts)
    assert rel_err(total.to(torch.bfloat16), r) < 8e-3


@pytest.mark.parametrize("scheme_name", ["W4A16", "W4A8_DYNAMIC", "W4AFP8", "W8A16"])
@pytest.mark.parametrize("t,top_k,skew,split", [(5, 3, False, False), (19, 1, True, True), (7, 4, False, True)])
def test_mma_variant_matches_reference(scheme_name, t, top_k, skew, split):
    # The dense decode kernel in MOE mode (decode_cfg mma=1; W8A16's int8 words with mma8=1): ragged H/I, a
    # token block of 16 overflowing into a second block (T = 19 all on one expert), split-K, and one rank's
    # expert range.
    from dsq_cuda.moe_decode import mma_eligible

    e, h, i = 6, 300, 96
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=6)
    int8 = scheme_name == "W8A16"
    assert mma_eligible(scheme, torch.bfloat16, int8=int8) and mma_eligible(scheme, torch.bfloat16) != int8
    g = torch.Generator().manual_seed(4)
    ids = torch.full((t, top_k), 2) if skew else torch.stack([torch.randperm(e, generator=g)[:top_k] for _ in range(t)])
    w = torch.rand(t, top_k, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    cfg = dict(mma=1, mma8=1, target_programs=10**6 if split else 1)
    r = reference().moe(x, ids, w, cpu, scheme)
    y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e, path="decode",
                decode_cfg=cfg)
    assert rel_err(y, r) < 4e-3, rel_err(y, r)
    if not split:
        return
    parts = [run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e, path="decode",
                     decode_cfg=cfg, expert_range=rng) for rng in ((0, 3), (3, 6))]
    assert rel_err(parts[0].float() + parts[1].float(), r) < 4e-3


def test_mma_variant_eligibility():
    from dsq.schemes import get_scheme
    from dsq_cuda.moe_decode import mma_eligible

    assert mma_eligible(get_scheme("W4A16"), torch.float16)
    assert not mma_eligible(get_scheme("W4A16"), torch.float32)  # fp32 x keeps the float32 path
    assert not mma_eligible(get_scheme("W4A16_ASYM"), torch.bfloat16)  # zero points: not in MOE mode
    assert not mma_eligible(get_scheme("W8A16"), torch.bfloat16)  # unless int8=True (decode_cfg mma8)
    assert not mma_eligible(get_scheme("W8A8_DYNAMIC"), torch.bfloat16, int8=True)  # int8 codes not in words
    assert not mma_eligible(None, torch.bfloat16)


@pytest.mark.parametrize("scheme_name", ["W4A16", "W8A16", "W8A8"])
@pytest.mark.parametrize("shared", [1, 0])
def test_prepare_builds_the_moe_layouts(scheme_name, shared, monkeypatch):
    # Backend.prepare on experts builds the GEMV's row tiles (integer weights, per-token or static activations)
    # and, for decode, nothing more where the decode kernels share them (packed experts, moe_decode DEFAULTS
    # shared=1: 2x the canonical bytes in all); otherwise pair tiles for symmetric int4 experts, the slab layout
    # (W8A8: the canonical bytes themselves) for the rest, never both. Calls then add none.
    import dsq
    from dsq_cuda import moe_decode
    from dsq_cuda.moe_memory import device_bytes

    monkeypatch.setitem(moe_decode.DEFAULTS, "shared", shared)
    e, h, i = 4, 256, 128
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=7)
    backend = dsq.get_backend("cuda")
    backend.prepare(dev, scheme)
    keys = set(dev.gate_up.device_layout)
    packed = scheme_name != "W8A8"
    own = not (shared and packed)
    assert any(k.startswith("dsq_cuda_moe_pt:") for k in keys) == (own and scheme_name == "W4A16")
    assert any(k.startswith("dsq_cuda_moe:") for k in keys) == (own and scheme_name != "W4A16")
    assert any(k.startswith("dsq_cuda_moe_gemv:") for k in keys)
    b = device_bytes(dev)
    # (own layouts: 2x, a bit more where pair tiles pad I = 128 to a 256-input tile)
    assert 0.9 < b["layouts"] / b["canonical"] < (2.5 if own and packed else 1.1), b
    assert own and packed or b["layouts"] < 1.1 * b["canonical"]
    x = torch.randn(1, h).to(torch.bfloat16)
    ids = torch.tensor([[0, 2]])
    w = torch.tensor([[0.6, 0.4]])
    for t in (1, 3):
        y = run_moe(x.expand(t, h).contiguous().to(DEVICE), ids.expand(t, 2).to(DEVICE), w.expand(t, 2).to(DEVICE),
                    dev.gate_up, dev.down, scheme, e)
        r = reference().moe(x.expand(t, h).contiguous(), ids.expand(t, 2), w.expand(t, 2), cpu, scheme)
        assert rel_err(y, r) < 4e-3
    assert set(dev.gate_up.device_layout) == keys


@pytest.mark.parametrize("bits_sw", [(4, 16), (4, 4)])
def test_pair_order_matches_the_tensor_core_field_decode(bits_sw):
    # mma_decode_kernel (ROW_TILES) decodes field F of a row-tile word tile as pairs (2p, 2p + 1) from word
    # 2p + F // 4, fields F % 4 and F % 4 + 4 (its _field_ref, in torch here); multiplied by the activations
    # that pair_order puts at t*LBK + F*SW + c, the products sum to x @ codes^T.
    from dsq_cuda.slab import pair_order, to_row_tiles
    from dsq_cuda.unpack import unpack_words

    _, sw = bits_sw
    g = torch.Generator().manual_seed(4)
    n, k = 3, 200
    words = torch.randint(-2**31, 2**31 - 1, (n, -(-k // 8)), generator=g, dtype=torch.int64).to(torch.int32)
    x = torch.randn(2, k, generator=g, dtype=torch.float64)
    rt = to_row_tiles(words, k, 4, 0, sw)  # [tiles, N, SW]
    xo = pair_order(x, sw)
    lbk = 8 * sw
    u = rt.to(torch.int64) & 0xFFFFFFFF
    y = torch.zeros(2, n, dtype=torch.float64)
    for t in range(rt.shape[0]):
        for f in range(8):
            wsel = u[t, :, (f // 4)::2]  # words 2p + h, h = F // 4: [N, SW/2]
            lo = ((wsel >> (4 * (f % 4))) & 15) - 8
            hi = ((wsel >> (4 * (f % 4) + 16)) & 15) - 8
            a = torch.stack([lo, hi], dim=-1).reshape(n, sw).to(torch.float64)  # element 2p + e
            if t * lbk < xo.shape[1]:
                y += xo[:, t * lbk + f * sw: t * lbk + (f + 1) * sw] @ a.T
    codes = unpack_words(words, 4, k).to(torch.float64)
    torch.testing.assert_close(y, x @ codes.T, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("scheme_name,block_m", [("W4A16", 32), ("W4AFP8", 64)])
@pytest.mark.parametrize("skew", [True, False])
def test_mma_wider_blocks_match_reference(scheme_name, block_m, skew):
    # decode_cfg mma_block_m: pairs per block of the MOE-mode kernel. 40 tokens on one expert fill one block
    # of 64 or a block and a part of 32; uniform top-2 leaves most blocks nearly empty.
    e, h, i, t = 6, 300, 96, 40
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=8)
    g = torch.Generator().manual_seed(5)
    ids = torch.full((t, 1), 4) if skew else torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(t)])
    w = torch.rand(*ids.shape, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    r = reference().moe(x, ids, w, cpu, scheme)
    y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e, path="decode",
                decode_cfg=dict(mma_block_m=block_m))
    assert rel_err(y, r) < 4e-3, rel_err(y, r)


def test_mma_block_m_must_be_known():
    scheme, cpu, dev = make_experts("W4A16", 2, 64, 32, seed=1)
    x = torch.randn(1, 64).to(torch.bfloat16).to(DEVICE)
    ids, w = torch.tensor([[1]]).to(DEVICE), torch.tensor([[1.0]]).to(DEVICE)
    with pytest.raises(ValueError, match="mma_block_m=24"):
        run_moe(x, ids, w, dev.gate_up, dev.down, scheme, 2, path="decode", decode_cfg=dict(mma_block_m=24))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("top_k", [1, 8])
def test_combine_rounds_each_expert_output_before_its_weight(dtype, top_k):
    """combine_kernel: y[t] = round(sum_j w[t, j] * round(o[t * top_k + j])), as the torch ops it replaced
    computed it: apart by at most one unit in the output's last place plus float32 summation error (the
    kernel sums in order and may fuse multiply and add; torch's sum may pair terms differently)."""
    from dsq_cuda.moe_decode_kernels import combine_kernel
    from dsq_cuda.moe_plan import OUT_KIND

    t, h = 3, 100  # h not a power of two: a masked tail
    g = torch.Generator().manual_seed(7)
    o = (torch.randn(t * top_k, h, generator=g) * 3).to(DEVICE)
    w = torch.rand(t, top_k, generator=g).to(DEVICE)
    y = torch.empty(t, h, dtype=dtype, device=DEVICE)
    combine_kernel[(t, 1)](o, w, y, h, o.stride(0), y.stride(0), TOP_K=top_k, OUT_KIND=OUT_KIND[dtype], BLOCK=128)
    want = (o.view(t, top_k, h).to(dtype).float() * w.view(t, top_k, 1)).sum(1).to(dtype)
    ulp = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10, torch.float32: 2.0**-23}[dtype]
    terms = (o.view(t, top_k, h).to(dtype).float() * w.view(t, top_k, 1)).abs().sum(1)
    assert ((y.float() - want.float()).abs() <= ulp * want.float().abs() + top_k * 2.0**-23 * terms).all()
    if dtype != torch.float32:  # rounding each output first is visible: without it the sums differ
        unrounded = (o.view(t, top_k, h) * w.view(t, top_k, 1)).sum(1).to(dtype)
        assert (unrounded != want).any()


@pytest.mark.parametrize("scheme_name", ["W4A16", "W4A8_DYNAMIC"])
def test_mma_x_left_to_the_pipeliner_gives_the_same_bits(scheme_name):
    # decode_cfg mma_x_ahead=0 / mma_stages=3: each field's x slab is loaded where it is used and the pipeliner
    # schedules it. Same products in the same order as x loaded a field ahead by hand, so the same bits; H of
    # 1000 is not a whole number of K tiles (the masked last tile), and 12 tokens on 6 experts split K.
    e, h, i, t = 6, 1000, 96, 12
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=9)
    g = torch.Generator().manual_seed(6)
    ids = torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(t)])
    w = torch.rand(*ids.shape, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    args = (x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)
    y_ahead = run_moe(*args, path="decode", decode_cfg=dict(mma_x_ahead=1, mma_stages=2))
    y_piped = run_moe(*args, path="decode", decode_cfg=dict(mma_x_ahead=0, mma_stages=3))
    assert torch.equal(y_piped, y_ahead)
    assert rel_err(y_piped, reference().moe(x, ids, w, cpu, scheme)) < 4e-3


@pytest.mark.parametrize("block_m", [16, 32])
def test_static_codes_once_per_position_give_the_same_bits(block_m):
    # decode_cfg static_codes=1 (the default) quantizes x and the intermediate once per padded position and the
    # GEMMs read int8 codes; 0 quantizes on load in every N tile. Same codes, exact int32 sums, one program per
    # output tile (no split-K): the same bits. Ragged H/I; skewed routing puts more pairs on expert 0 than one
    # block holds, so it spans two blocks.
    t, e, k, h, i = 20, 6, 2, 1000, 96
    scheme, cpu, dev = make_experts("W8A8", e, h, i, seed=11)
    g = torch.Generator().manual_seed(8)
    ids = torch.stack([torch.tensor([0, 1 + int(torch.randint(0, e - 1, (1,), generator=g))]) for _ in range(t)])
    w = torch.rand(t, k, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    args = (x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)
    cfg = dict(block_m=block_m, target_programs=1)
    y_once = run_moe(*args, path="decode", decode_cfg=dict(cfg, static_codes=1))
    y_load = run_moe(*args, path="decode", decode_cfg=dict(cfg, static_codes=0))
    assert torch.equal(y_once, y_load)
    assert rel_err(y_once, reference().moe(x, ids, w, cpu, scheme)) < 4e-3


def test_slab_block_m_must_be_known():
    scheme, _, dev = make_experts("W8A16", 2, 64, 32, seed=1)
    x = torch.randn(2, 64).to(torch.bfloat16).to(DEVICE)
    ids = torch.tensor([[0], [1]]).to(DEVICE)
    with pytest.raises(ValueError, match="block_m=24"):
        run_moe(x, ids, torch.ones(2, 1).to(DEVICE), dev.gate_up, dev.down, scheme, 2, path="decode",
                decode_cfg=dict(block_m=24))


@pytest.mark.parametrize("t", [1, 5])
def test_static_experts_without_input_scale_name_it(t):
    # W8A8 experts that lost their static input scale: the one-token GEMV and the decode path both say which
    # tensor is missing, rather than a KeyError deep inside.
    from dsq.errors import QuantInputError
    from dsq.qtypes import PackedWeight

    scheme, _, dev = make_experts("W8A8", 3, 64, 32, seed=2)
    strip = [PackedWeight(p.scheme, p.shape, {k: v for k, v in p.tensors.items() if k != "input_scale"})
             for p in (dev.gate_up, dev.down)]
    x = torch.randn(t, 64).to(torch.bfloat16).to(DEVICE)
    ids = torch.zeros(t, 1, dtype=torch.int64).to(DEVICE)
    with pytest.raises(QuantInputError, match="input_scale"):
        run_moe(x, ids, torch.ones(t, 1).to(DEVICE), strip[0], strip[1], scheme, 3)


@pytest.mark.parametrize("name,h,i", [("W4A16", 264, 48), ("W8A8", 264, 48), ("W4A8_DYNAMIC", 264, 48),
                                      ("W4A16", 512, 256), ("W8A8", 512, 256), ("W8A8", 262, 50)])
def test_one_token_gemv_on_the_canonical_codes(name, h, i, monkeypatch):
    # moe_gemv.CANONICAL: the one-token GEMV reads the canonical tensors themselves (W8A8's int8 bytes viewed
    # as words), activations in tile order, so it holds no device copy of the codes; ragged H / I (partial tiles)
    # and whole tiles (where the byte count is not dominated by the decode layout's padding).
    import dsq
    from dsq_cuda import moe_gemv
    from dsq_cuda.moe_memory import device_bytes

    monkeypatch.setattr(moe_gemv, "CANONICAL", True)
    e = 4
    scheme, cpu, dev = make_experts(name, e, h, i, seed=3)
    dsq.get_backend("cuda").prepare(dev, scheme)
    for p in (dev.gate_up, dev.down):
        canon = p["weight_packed" if "weight_packed" in p else "weight"]
        lay = moe_gemv.prepare(p, scheme, canon.device)
        whole_words = p.shape[-1] % 4 == 0 or "weight_packed" in p  # else W8A8's bytes are packed into words
        assert (lay["w"].data_ptr() == canon.data_ptr()) == whole_words
        assert lay["signed"] == (name == "W8A8" and whole_words)
    b = device_bytes(dev)
    if i % 256 == 0:  # W8A8's decode path reads the canonical bytes too: only scales and code sums on top
        assert b["layouts"] < (0.1 if name == "W8A8" else 1.1) * b["canonical"], b
    x = torch.randn(1, h).to(torch.bfloat16)
    ids, w = torch.tensor([[1, 3]]), torch.tensor([[0.7, 0.3]])
    y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e, path="gemv")
    assert rel_err(y, reference().moe(x, ids, w, cpu, scheme)) < 4e-3


def test_no_gemv_layout_when_the_gemv_is_off(monkeypatch):
    # moe_gemv.GEMV_MAX_T = 0 (fewer device copies of the experts): prepare builds no row tiles and one token
    # runs the decode path, still matching the reference.
    import dsq
    from dsq_cuda import moe_gemv

    monkeypatch.setattr(moe_gemv, "GEMV_MAX_T", 0)
    e, h, i = 4, 256, 64
    scheme, cpu, dev = make_experts("W8A8", e, h, i, seed=3)
    dsq.get_backend("cuda").prepare(dev, scheme)
    assert not any(k.startswith("dsq_cuda_moe_gemv:") for k in dev.gate_up.device_layout)
    x = torch.randn(1, h).to(torch.bfloat16)
    ids, w = torch.tensor([[1, 3]]), torch.tensor([[0.7, 0.3]])
    y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)
    assert not any(k.startswith("dsq_cuda_moe_gemv:") for k in dev.gate_up.device_layout)
    assert rel_err(y, reference().moe(x, ids, w, cpu, scheme)) < 4e-3


@pytest.mark.parametrize("name", ["W8A16", "W4A8_DYNAMIC"])
@pytest.mark.parametrize("width,load", [(32, 32), (32, 16), (16, 16)])
def test_int8_row_tile_widths_serve_gemv_and_decode(name, width, load, monkeypatch):
    # moe_gemv.INT8_TILE_WORDS: packed 8-bit experts' row tiles 32 (the default) or 16 words wide, read by the
    # one-token GEMV (whole, PACKED8_LOAD_WORDS = 32, the default, or as 16-word sub-tiles) and the slab decode
    # kernel; int4 experts keep 16. Both paths match the reference.
    import dsq
    from dsq_cuda import moe_gemv

    monkeypatch.setattr(moe_gemv, "INT8_TILE_WORDS", width)
    monkeypatch.setattr(moe_gemv, "PACKED8_LOAD_WORDS", load)
    e, h, i = 4, 320, 96
    scheme, cpu, dev = make_experts(name, e, h, i, seed=6)
    dsq.get_backend("cuda").prepare(dev, scheme)
    lay = moe_gemv.prepare(dev.gate_up, scheme, dev.gate_up["weight_packed"].device)
    assert lay["w"].shape[-1] == (width if name == "W8A16" else 16)
    g = torch.Generator().manual_seed(2)
    for t in (1, 5):
        x = torch.randn(t, h, generator=g).to(torch.bfloat16)
        ids = torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(t)])
        w = torch.rand(t, 2, generator=g) + 0.1
        y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)
        assert rel_err(y, reference().moe(x, ids, w, cpu, scheme)) < 4e-3


@pytest.mark.parametrize("bits,sw,block_k", [(4, 16, 128), (4, 16, 64), (8, 32, 128), (8, 32, 64)])
def test_row_tile_byte_order_pairs_each_byte_with_its_inputs(bits, sw, block_k):
    # The prefill kernel reads a row's row-tile bytes in order, block_k / 2 (int4) or block_k (int8) a step, and
    # multiplies int4 low / high fields by the two halves of each block_k block of the reordered activations;
    # int8 bytes by the block itself. Decoding the bytes that way against row_tile_byte_order(x) gives x @ q^T.
    from dsq_cuda.slab import row_tile_byte_order, to_row_tiles
    from dsq_cuda.unpack import unpack_words

    g = torch.Generator().manual_seed(5)
    n, k = 3, 300
    epw = 32 // bits
    words = torch.randint(-2**31, 2**31 - 1, (n, -(-k // epw)), generator=g, dtype=torch.int64).to(torch.int32)
    x = torch.randn(2, k, generator=g, dtype=torch.float64)
    rt = to_row_tiles(words, k, bits, 0, sw)  # [tiles, N, SW]
    b = rt.contiguous().view(torch.uint8).permute(1, 0, 2).reshape(n, -1).to(torch.int64)  # each row's bytes in order
    xo = row_tile_byte_order(x, bits, sw, block_k)
    if bits == 4:
        lo, hi = (b & 15) - 8, (b >> 4) - 8
        y = torch.zeros(2, n, dtype=torch.float64)
        for k0 in range(0, xo.shape[1], block_k):
            cb = slice(k0 // 2, k0 // 2 + block_k // 2)
            y += xo[:, k0:k0 + block_k // 2] @ lo[:, cb].T.double() + xo[:, k0 + block_k // 2:k0 + block_k] @ hi[:, cb].T.double()
    else:
        y = xo @ (b - 128).T.double()  # offset binary: q = u - 128
    codes = unpack_words(words, bits, k).to(torch.float64)
    torch.testing.assert_close(y, x @ codes.T, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", ["W4A16", "W4A8_DYNAMIC", "W4AFP8", "W8A16", "W4A16_ASYM", "W8A8"])
def test_release_canonical_leaves_every_path_on_the_row_tiles(name, monkeypatch):
    # moe.release_canonical moves the canonical codes off the device once the one-token GEMV, decode and prefill
    # all read the row tiles. Moved to the meta device here (no data at all): one token, decode and prefill
    # still match the reference, so none of them reads the codes. W4A16_ASYM (prefill unpacks the canonical
    # words) and W8A8 (decode reads the canonical bytes) refuse, naming why.
    import dsq
    import dsq_cuda.moe as moe_mod
    from dsq.errors import UnsupportedError
    from dsq_cuda.moe_memory import release_canonical

    e, h, i = 4, 200, 72
    scheme, cpu, dev = make_experts(name, e, h, i, seed=8)
    dsq.get_backend("cuda").prepare(dev, scheme)
    # with the row-tile prefill off, prefill reads the codes (W8A8: decode does)
    monkeypatch.setattr(moe_mod, "PREFILL_ROW_TILES", False)
    with pytest.raises(UnsupportedError, match="own layout" if name == "W8A8" else "PREFILL_ROW_TILES"):
        release_canonical(dev, scheme, to="meta")
    monkeypatch.setattr(moe_mod, "PREFILL_ROW_TILES", True)  # the default
    if name in ("W4A16_ASYM", "W8A8"):
        with pytest.raises(UnsupportedError, match=name):
            release_canonical(dev, scheme, to="meta")
        return
    codes = dev.gate_up["weight_packed"]
    assert release_canonical(dev, scheme, to="meta") >= codes.numel() * 4
    assert dev.gate_up["weight_packed"].is_meta and dev.down["weight_packed"].is_meta
    g = torch.Generator().manual_seed(1)
    for t in (1, 8, 70):
        x = torch.randn(t, h, generator=g).to(torch.bfloat16)
        ids = torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(t)])
        w = torch.rand(t, 2, generator=g) + 0.1
        y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)
        assert rel_err(y, reference().moe(x, ids, w, cpu, scheme)) < 4e-3, (name, t)


@pytest.mark.parametrize("name,on,mode", [("W4A8_DYNAMIC", 1, 1), ("W4A16", 2, 4), ("W4AFP8", 2, 4)])
@pytest.mark.parametrize("t,skew", [(5, False), (19, True), (40, False)])
def test_int4_experts_on_the_int8_tensor_cores(name, on, mode, t, skew, monkeypatch):
    # decode_cfg int8_mma: W4A8_DYNAMIC (int8_mma = 1, the default) multiplies 16 q by int8 x on the int8 tensor
    # cores (dsq_cuda.int4_int8_mma), x and the intermediate quantized into slab.int8_mma_order, with exact
    # int32 sums. int8_mma = 2 also sends W4A16's bf16 x and W4AFP8's e4m3 codes there as int8 digit slices
    # (act_quant.int8_slices, the kernel's I8 = 4), which int8_mma = 1 leaves on bf16 MMAs. Each matches the
    # reference and the bf16-MMA path (int8_mma = 0). Ragged H and I (partial tiles), a block of 16
    # overflowing (T = 19 on one expert) and blocks of 64 pairs (T = 40).
    import dsq_cuda.moe_decode as moe_decode

    taken = []
    real = moe_decode._int8_mma
    monkeypatch.setattr(moe_decode, "_int8_mma", lambda *a: taken.append(real(*a)) or taken[-1])
    e, h, i = 6, 300, 200
    scheme, cpu, dev = make_experts(name, e, h, i, seed=9)
    g = torch.Generator().manual_seed(t)
    ids = torch.full((t, 2), 2) if skew else torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(t)])
    w = torch.rand(t, 2, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    r = reference().moe(x, ids, w, cpu, scheme)
    ys, modes = [], []
    for c in (on, 1, 0):
        taken.clear()
        ys.append(run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e,
                          path="decode", decode_cfg=dict(int8_mma=c)))
        modes.append(taken[0])
    assert modes == [mode, 1 if mode == 1 else 0, 0]
    assert rel_err(ys[0], r) < 4e-3, rel_err(ys[0], r)
    assert rel_err(ys[0], ys[2]) < 4e-3


@pytest.mark.parametrize("name,mode", [("W4A8_DYNAMIC", 1), ("W4A16", 3), ("W4AFP8", 3)])
@pytest.mark.parametrize("h,i", [(520, 48), (256, 200)])
def test_one_token_int4_gemv_with_dp4a(name, mode, h, i, monkeypatch):
    # T = 1: the GEMV multiplies the int4 codes with dp4a (moe_gemv.DP4A, the default): by W4A8's int8 codes
    # (mode 1), or by x as int8 digit slices (DP4A_SLICES, mode 3: W4A16's bf16 x, W4AFP8's e4m3 codes), each
    # sum an exact int32, so the experts' outputs are those of the float GEMV (DP4A off) to their last
    # rounding, and the layer matches the reference. Ragged H / I: partial tiles, x zero-filled past K.
    from dsq_cuda import gemv_kernel, moe_gemv

    seen = []
    real = gemv_kernel.launch
    monkeypatch.setattr(gemv_kernel, "launch", lambda *a, **kw: seen.append(kw.get("dp4a")) or real(*a, **kw))
    e = 6
    scheme, cpu, dev = make_experts(name, e, h, i, seed=12)
    g = torch.Generator().manual_seed(h)
    ids = torch.randperm(e, generator=g)[:4].view(1, 4)
    w = torch.rand(1, 4, generator=g) + 0.1
    x = torch.randn(1, h, generator=g).to(torch.bfloat16)
    r = reference().moe(x, ids, w, cpu, scheme)
    y = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e, path="gemv")
    monkeypatch.setattr(moe_gemv, "DP4A", False)
    y_float = run_moe(x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e, path="gemv")
    assert seen == [mode, mode, 0, 0]
    assert rel_err(y, r) < 4e-3, rel_err(y, r)
    assert rel_err(y, y_float) < 1e-2  # (one bf16 rounding of the intermediate may differ)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("mma_order,i", [(True, 200), (False, 200), (True, 256)])
def test_swiglu_quantized_in_one_kernel_gives_the_same_codes(dtype, mma_order, i):
    # act_quant.quantize_swiglu_per_token_int8: the SwiGLU of h rounded to the activation dtype and its per-token
    # int8 codes in one kernel, against swiglu_kernel then quantize_per_token_int8 (I = 200 leaves a partial tile)
    from dsq_cuda.act_quant import quantize_per_token_int8, quantize_swiglu_per_token_int8
    from dsq_cuda.moe_decode_kernels import swiglu_kernel
    from dsq_cuda.moe_plan import OUT_KIND

    g = torch.Generator().manual_seed(i)
    h = (torch.randn(5, 2 * i, generator=g) * 3).to(DEVICE)
    h[2] = 0.0  # an all-zero row: the scale is the smallest normal float
    inter = torch.empty((5, i), dtype=dtype, device=DEVICE)
    swiglu_kernel[(5, 1)](h, inter, i, h.stride(0), inter.stride(0), OUT_KIND=OUT_KIND[dtype], BLOCK=256)
    want = quantize_per_token_int8(inter, mma_order=mma_order)
    got = quantize_swiglu_per_token_int8(h, OUT_KIND[dtype], mma_order=mma_order)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert int(got[0][0].abs().max()) == 127  # the codes span the range (not all zero)


@pytest.mark.parametrize("scheme_name,t", [("W4A8_DYNAMIC", 1), ("W4A8_DYNAMIC", 8), ("W8A8_DYNAMIC", 8)])
def test_fused_swiglu_quant_layer_gives_the_same_bits(scheme_name, t, monkeypatch):
    # moe_decode.FUSED_SWIGLU_QUANT: the decode path (T = 8: tensor-core I8 or slab kernel) and the one-token GEMV
    # (T = 1, dp4a) quantize the intermediate straight from the gate / up output: the same layer output
    from dsq_cuda import act_quant, moe_decode

    e, h, i = 6, 256, 256
    calls, fused = [], act_quant.quantize_swiglu_per_token_int8

    def spy(*a, **kw):
        calls.append(kw.get("mma_order"))
        return fused(*a, **kw)

    monkeypatch.setattr(moe_decode, "quantize_swiglu_per_token_int8", spy)
    monkeypatch.setattr(act_quant, "quantize_swiglu_per_token_int8", spy)
    scheme, cpu, dev = make_experts(scheme_name, e, h, i, seed=10)
    g = torch.Generator().manual_seed(t)
    ids = torch.stack([torch.randperm(e, generator=g)[:2] for _ in range(t)])
    w = torch.rand(*ids.shape, generator=g) + 0.1
    x = torch.randn(t, h, generator=g).to(torch.bfloat16)
    args = (x.to(DEVICE), ids.to(DEVICE), w.to(DEVICE), dev.gate_up, dev.down, scheme, e)
    y_fused = run_moe(*args)
    assert calls == [scheme_name == "W4A8_DYNAMIC"]  # the fused kernel ran, with the int8 MMA order for W4A8
    monkeypatch.setattr(moe_decode, "FUSED_SWIGLU_QUANT", False)
    y_two = run_moe(*args)
    assert len(calls) == 1 and torch.equal(y_fused, y_two)
    assert rel_err(y_fused, reference().moe(x, ids, w, cpu, scheme)) < 4e-2
