"""matmul of the cuda backend against the reference's exact float64 product, every scheme, odd shapes.

The kernels may differ from the exact result only by float32 accumulation order and the final rounding to
x's dtype: the error bound is a few units of the output dtype's rounding (bf16: 2**-8 relative).
"""

import pytest
import torch

import dsq
from dsq_cuda import fixup
from dsq_cuda.configs import Config
from dsq_cuda.mm import matmul as _mm_matmul

TOL = {torch.float32: 2e-6, torch.bfloat16: 4e-3, torch.float16: 1e-3}


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.cpu().double(), ref.cpu().double()
    assert torch.isfinite(y).all()
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


def raw_matmul(x, pw, scheme, bias=None, config=None):
    """dsq_cuda.mm.matmul (no Backend wrapper) with x and bias on the backend's device (the GPU when there is
    one, CPU tensors in the interpreter): the raw entry point launches kernels on x's device."""
    dev = torch.device(dsq.get_backend("cuda").device)
    return _mm_matmul(x.to(dev), pw, scheme, None if bias is None else bias.to(dev), config=config)


def _problem(name, n, k, m, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    scheme = dsq.get_scheme(name)
    w = (torch.randn(n, k, generator=g) * 0.05).to(dtype)
    x = (torch.randn(m, k, generator=g)).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    stats = dsq.ActStats.empty().update(x.float()) if scheme.static_activations else None
    return scheme, w, x, bias, stats


@pytest.mark.parametrize("name", dsq.list_schemes())
@pytest.mark.parametrize("m,n,k,dtype", [(5, 40, 300, torch.bfloat16), (1, 72, 256, torch.float32),
                                         (33, 24, 136, torch.float16)])
def test_matmul_matches_reference(cuda_backend, ref_backend, name, m, n, k, dtype):
    scheme, w, x, bias, stats = _problem(name, n, k, m, dtype)
    pr = ref_backend.quantize_weight(w, scheme, stats)  # conformance feeds the canonical pack
    y = cuda_backend.matmul(x, pr, scheme, bias)
    ref = ref_backend.matmul(x, pr, scheme, bias)
    assert y.dtype == dtype and tuple(y.shape) == (m, n)
    assert _rel(y, ref) < TOL[dtype], f"{name}: rel err {_rel(y, ref):.3g}"


@pytest.mark.parametrize("name", ["W4A16", "W8A8", "W4A8_DYNAMIC", "FP8_BLOCK"])
@pytest.mark.parametrize("split_k", [1, 3])
def test_split_k_and_tiles_agree(cuda_backend, ref_backend, name, split_k):
    scheme, w, x, bias, stats = _problem(name, 48, 512, 3, torch.float32, seed=2)
    pw = cuda_backend.quantize_weight(w, scheme, stats)
    ref = ref_backend.matmul(x, pw, scheme, bias)
    cfg = Config(16, 16, 32, split_k, 4, 1)
    y = raw_matmul(x, pw, scheme, bias, config=cfg)
    assert _rel(y, ref) < TOL[torch.float32]


def test_empty_batch_and_errors(cuda_backend):
    scheme = dsq.get_scheme("W4A16")
    pw = cuda_backend.quantize_weight(torch.randn(16, 128), scheme)
    assert cuda_backend.matmul(torch.zeros(0, 128), pw, scheme).shape == (0, 16)
    with pytest.raises(dsq.QuantInputError, match="K=128"):
        cuda_backend.matmul(torch.randn(2, 64), pw, scheme)
    with pytest.raises(dsq.QuantInputError, match="made for scheme W4A16"):
        cuda_backend.matmul(torch.randn(2, 128), pw, dsq.get_scheme("W8A16"))
    with pytest.raises(dsq.QuantInputError, match="NaN"):
        cuda_backend.matmul(torch.full((2, 128), float("nan")), pw, scheme)


def test_capabilities(cuda_backend):
    assert cuda_backend.supports(dsq.get_scheme("W4A16"), "matmul")
    assert not cuda_backend.supports(dsq.get_scheme("W4A16", group_size=100), "matmul")
    assert not cuda_backend.supports(dsq.get_scheme("W4A16"), "quantize_activation")
    assert dsq.get_backend("gpu") is cuda_backend
    ok, why = cuda_backend.is_available()
    assert ok, why


@pytest.mark.parametrize("n", [48, 50, 7])
def test_asymmetric_int8_weights_pack_but_do_not_multiply(cuda_backend, ref_backend, n):
    """Zero points of 8-bit codes are packed 4 a word, bit for bit as the reference packs them, and unpacked the
    same way; the GEMMs subtract int4 zero points only, so matmul and moe refuse such a weight with the reason
    (they used to accept it and multiply as if its zero points were int4: 0.65 relative error)."""
    from dsq.errors import UnsupportedError

    scheme = dsq.get_scheme("W8A16", weight_symmetric=False)
    assert cuda_backend.supports(dsq.get_scheme("W4A16_ASYM"), "matmul")
    for op in ("matmul", "moe"):
        cap = cuda_backend.supports(scheme, op)
        assert not cap and "int4" in cap.reason
    w = (torch.randn(n, 256) * 0.05 + 0.02).to(torch.bfloat16)
    qp = ref_backend.calibrate(w, scheme)
    want = ref_backend.pack(w, qp, scheme)
    got = cuda_backend.pack(w, qp, scheme)
    assert sorted(got.tensors) == sorted(want.tensors)
    assert all(torch.equal(got[name].cpu(), want[name]) for name in want.tensors), "pack differs from the reference"
    assert int(want["weight_zero_point"].abs().max()) > 0xFF  # more than one zero point a word: the width shows
    codes, deq = cuda_backend.unpack(want, scheme)
    ref_codes, ref_deq = ref_backend.unpack(want, scheme)
    assert torch.equal(codes.cpu(), ref_codes) and torch.equal(deq.cpu(), ref_deq)
    with pytest.raises(UnsupportedError, match="int4"):
        cuda_backend.matmul(torch.randn(2, 256), want, scheme)


@pytest.mark.parametrize("name", ["W4A16", "W4A16_ASYM", "W8A16"])
@pytest.mark.parametrize("path", ["mma", "mma_f16", "gemv", "gemv_split", "tiled", "dense"])
def test_weight_only_paths(cuda_backend, ref_backend, monkeypatch, name, path):
    """Each weight-only kernel path (tensor-core decode, CUDA-core GEMV, tiled tensor-core, dequantize + GEMM)
    against the reference."""
    import dsq_cuda.mm as mm

    dtype = torch.float16 if path == "mma_f16" else torch.bfloat16
    scheme, w, x, bias, _ = _problem(name, 40, 300, 3, dtype, seed=4)
    pw = ref_backend.quantize_weight(w, scheme)
    ref = ref_backend.matmul(x, pw, scheme, bias)
    cfg = None
    if path in ("mma", "mma_f16"):  # the default path at this M for deep int4 weights; int8 when enabled
        monkeypatch.setattr(mm, "MMA_MAX_M", {4: 64, 8: 64})
        monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    elif path == "gemv":
        monkeypatch.setattr(mm, "MMA_MAX_M", {4: 0, 8: 0})
        monkeypatch.setattr(mm, "GEMV_MAX_M", 4)  # the kernel takes any M (one program row per token)
    elif path == "gemv_split":  # -32 / -64: row tiles 32 / 64 words wide (a tile holds 2 scale groups)
        cfg = Config(4, 16, -32 if name != "W8A16" else -64, 3, 4, 1)
    elif path == "tiled":
        monkeypatch.setattr(mm, "MMA_MAX_M", {4: 0, 8: 0})
    elif path == "dense":
        monkeypatch.setattr(mm, "DENSE_MIN_M", 1)
    y = raw_matmul(x, pw, scheme, bias, config=cfg)
    assert y.dtype == dtype
    assert _rel(y, ref) < TOL[dtype], f"{name} {path}: {_rel(y, ref):.3g}"


@pytest.mark.parametrize("name", ["W4A8_DYNAMIC", "W4AFP8"])
@pytest.mark.parametrize("path", ["mma", "tiled"])
@pytest.mark.parametrize("m", [1, 7])
def test_quantized_activation_decode_paths(cuda_backend, ref_backend, monkeypatch, name, path, m):
    """W4A8 (two-level) and W4AFP8 at decode M: the tensor-core decode kernel (int8 / e4m3 codes fed as bf16,
    exact) and the tiled int8 / fp8 kernel both match the reference."""
    import dsq_cuda.mm as mm

    if path == "tiled":
        monkeypatch.setattr(mm, "MMA_ACT_MAX_M", 0)
    scheme, w, x, bias, _ = _problem(name, 72, 1280, m, torch.bfloat16, seed=11)
    pw = ref_backend.quantize_weight(w, scheme)
    y = raw_matmul(x, pw, scheme, bias)
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16], f"{name} {path} m={m}"


@pytest.mark.parametrize("bits,sl,k", [(4, 32, 600), (4, 16, 256), (8, 32, 300), (8, 16, 64)])
def test_pair_tile_layout(bits, sl, k):
    """Pair tiles hold exactly the canonical codes: words 2p, 2p+1 of a row's tile t hold inputs 2p, 2p+1 of
    every field as nibbles at bit 4f + 16e (int4: word 2p+h has fields 4h+f; int8: low / high nibble planes)."""
    from dsq_cuda.slab import to_pair_tiles
    from dsq_cuda.unpack import unpack_words

    g = torch.Generator().manual_seed(12)
    epw = 32 // bits
    words = torch.randint(-2**31, 2**31 - 1, (5, -(-k // epw)), generator=g, dtype=torch.int64).to(torch.int32)
    pt = to_pair_tiles(words, k, bits, sl)
    tiles = -(-k // (epw * sl))
    assert pt.shape == (5, tiles * sl)
    codes = unpack_words(words, bits, k).to(torch.int64)
    w = pt.to(torch.int64) & 0xFFFFFFFF
    nib = (w.view(5, tiles, sl // 2, 2, 1, 1) >> (torch.arange(4).view(4, 1) * 4 + torch.tensor([0, 16]))) & 15
    # nib[r, t, p, h, f, e]: nibble f of word 2p+h, half e
    if bits == 4:  # field 4h + f, input 2p + e
        u = nib.permute(0, 1, 3, 4, 2, 5).reshape(5, tiles * epw * sl)
    else:  # u = low + 16 * high, field f, input 2p + e
        u = (nib[:, :, :, 0] + 16 * nib[:, :, :, 1]).permute(0, 1, 3, 2, 4).reshape(5, tiles * epw * sl)
    back = u - (1 << (bits - 1))
    assert torch.equal(back[:, :k], codes)
    assert not back[:, k:].any()  # padding is code 0


_GEMV_VARIANTS = [("W4A16", "MANT_DECODE", True), ("W4A16_ASYM", "MANT_DECODE", True), ("W8A16", "MANT_DECODE", True),
                  ("W4A16", "PAIR_DECODE", True), ("W4A16_ASYM", "PAIR_DECODE", True),
                  ("W4A16", "PAIR_DECODE", False), ("W4A16_ASYM", "PAIR_DECODE", False)]


@pytest.mark.parametrize(("name", "switch", "value"), _GEMV_VARIANTS)
def test_gemv_decode_variants(cuda_backend, ref_backend, monkeypatch, name, switch, value):
    """The M = 1 kernel's decode variants match the reference: MANT (codes in the top mantissa bits of 1.0),
    int4 fields two at a time (PAIR_DECODE, the default where a scale group spans whole tiles) and one at a
    time; K = 300 ends in a partial tile."""
    import dsq_cuda.gemv_kernel as gk
    import dsq_cuda.mm as mm

    assert gk.pairs_apply(4, 128, 16) and not gk.pairs_apply(4, 128, 32) and not gk.pairs_apply(8, 0, 16)
    monkeypatch.setattr(gk, switch, value)
    monkeypatch.setattr(mm, "MMA_MAX_M", {4: 0, 8: 0})  # M = 1 would take the tensor-core kernel for int4
    scheme, w, x, bias, _ = _problem(name, 40, 300, 1, torch.bfloat16, seed=9 if switch == "MANT_DECODE" else 12)
    pw = ref_backend.quantize_weight(w, scheme)
    y = raw_matmul(x, pw, scheme, bias)
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("m", [1, 2, 9])
def test_small_group_size(cuda_backend, ref_backend, m):
    """group 32 (shallower than one MMA after unpacking) on a deep weight: the decode kernel at M <= 16."""
    scheme = dsq.get_scheme("W4A16", group_size=32)
    _, w, x, bias, _ = _problem("W4A16", 24, 1056, m, torch.bfloat16, seed=5)
    pw = ref_backend.quantize_weight(w, scheme)
    y = cuda_backend.matmul(x, pw, scheme, bias)
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("bits,sl,k", [(4, 32, 600), (4, 16, 256), (8, 32, 300)])
def test_slab_layout_round_trip(bits, sl, k):
    """The slab layout holds exactly the canonical codes, with word s of tile t / field j = input t*LBK+j*SL+s."""
    from dsq_cuda.slab import from_slabs, to_slabs
    from dsq_cuda.unpack import unpack_words

    g = torch.Generator().manual_seed(7)
    epw = 32 // bits
    words = torch.randint(-2**31, 2**31 - 1, (5, -(-k // epw)), generator=g, dtype=torch.int64).to(torch.int32)
    slabs = to_slabs(words, k, bits, sl)
    lbk = epw * sl
    assert slabs.shape == (-(-k // lbk) * sl, 5)
    codes = unpack_words(words, bits, k)
    assert torch.equal(from_slabs(slabs, k, bits, sl), codes)
    # one element by hand: input k0 = LBK + 2*SL + 3 of row 4 sits in word LBK/EPW... of tile 1, field 2
    kk = lbk + 2 * sl + 3
    if kk < k:
        field = (int(slabs[sl + 3, 4]) >> (2 * bits)) & ((1 << bits) - 1)
        assert field - (1 << (bits - 1)) == int(codes[4, kk])


@pytest.mark.parametrize("bits,sw,k,group", [(4, 16, 600, 128), (4, 16, 200, 96), (8, 16, 300, 0)])
def test_row_tile_layout(bits, sw, k, group):
    """Row tiles hold exactly the canonical codes: word s of (tile t, row n), field j = input t*LBK + j*SW + s;
    K is padded with code 0 to whole chunks (lcm of the tile and the scale group)."""
    from dsq_cuda.slab import gemv_chunk, to_row_tiles
    from dsq_cuda.unpack import unpack_words

    g = torch.Generator().manual_seed(8)
    epw = 32 // bits
    words = torch.randint(-2**31, 2**31 - 1, (5, -(-k // epw)), generator=g, dtype=torch.int64).to(torch.int32)
    tiles = to_row_tiles(words, k, bits, group, sw)
    lbk = epw * sw
    chunk = gemv_chunk(bits, group, sw)
    assert chunk % lbk == 0 and (not group or chunk % group == 0)
    assert tiles.shape == (-(-k // chunk) * chunk // lbk, 5, sw)
    codes = unpack_words(words, bits, k)
    u = (tiles.to(torch.int64) & 0xFFFFFFFF).unsqueeze(-1) >> (torch.arange(epw) * bits)  # [T, N, SW, EPW]
    back = ((u & ((1 << bits) - 1)) - (1 << (bits - 1))).permute(1, 0, 3, 2).reshape(5, -1)
    assert torch.equal(back[:, :k], codes.to(torch.int64))
    assert not back[:, k:].any()  # padding is code 0
    kk = lbk + 2 * sw + 3  # one element by hand: tile 1, field 2, word 3
    field = (int(tiles[1, 4, 3]) >> (2 * bits)) & ((1 << bits) - 1)
    assert field - (1 << (bits - 1)) == int(codes[4, kk])


@pytest.mark.parametrize("bits,sw,k", [(4, 16, 600), (4, 4, 200), (8, 16, 300), (8, 8, 64)])
def test_tile_order_pairs_each_field_with_its_input(bits, sw, k):
    """tile_order puts the activation of input t*LBK + EPW*s + j (field j of canonical word t*SW + s) at
    t*LBK + j*SW + s, zeros past K: so the GEMV's field-j products over a tile's contiguous activations are
    exactly the dot product of the row's codes with x."""
    from dsq_cuda.slab import tile_order
    from dsq_cuda.unpack import unpack_words

    g = torch.Generator().manual_seed(8)
    epw, lbk = 32 // bits, (32 // bits) * sw
    kw = -(-k // epw)
    words = torch.randint(-2**31, 2**31 - 1, (5, kw), generator=g, dtype=torch.int64).to(torch.int32)
    x = torch.randn(3, k, generator=g, dtype=torch.float64)
    xo = tile_order(x, bits, sw)
    kp = -(-k // lbk) * lbk
    assert xo.shape == (3, kp)
    kk = lbk + 3 * epw + 2  # one element by hand: tile 1, word 3, field 2
    if kk < k:
        assert xo[1, lbk + 2 * sw + 3] == x[1, kk]
    # the GEMV's sum: field j of word c (tile t = c // SW, s = c % SW) times xo[t*LBK + j*SW + s]
    u = (words.to(torch.int64) & 0xFFFFFFFF).unsqueeze(-1) >> (torch.arange(epw) * bits)
    q = ((u & ((1 << bits) - 1)) - (1 << (bits - 1))).to(torch.float64)  # [N, KW, EPW]
    c = torch.arange(kw)
    pos = (c // sw * lbk).unsqueeze(1) + torch.arange(epw).unsqueeze(0) * sw + (c % sw).unsqueeze(1)  # [KW, EPW]
    gemv = torch.einsum("nce,rce->rn", q, xo[:, pos])
    codes = unpack_words(words, bits, k).to(torch.float64)
    torch.testing.assert_close(gemv, x @ codes.T, rtol=1e-12, atol=1e-9)


def test_gemv_tile_words_keep_a_tile_inside_a_group():
    from dsq_cuda.slab import gemv_chunk, gemv_tile_words

    assert gemv_tile_words(4, 128) == 16 and gemv_tile_words(8, 128) == 16 and gemv_tile_words(8, 0, 64) == 64
    assert gemv_tile_words(4, 96) == 4 and gemv_tile_words(4, 64, 32) == 8 and gemv_tile_words(4, 16) == 2
    assert gemv_chunk(8, 128, 16) == 128 and gemv_chunk(4, 0, 16) == 128


@pytest.mark.parametrize("name,group", [("W4A16", 512), ("W8A16", 256), ("W4A16_ASYM", 64), ("W4A16", 96)])
@pytest.mark.parametrize("path", ["mma", "mma-chained", "gemv", "tiled"])
def test_groups_wider_than_a_tile(cuda_backend, ref_backend, monkeypatch, name, group, path):
    """Scale groups spanning several layout tiles (or one slab pair) scale each group exactly once; also with
    the decode kernel's fields chained per MMA (x pipelined: 8 fields a chain at group 512, 4 at int8's 256, 2
    at 64, 1 at 96)."""
    import dsq_cuda.mm as mm

    scheme = dsq.get_scheme(name, group_size=group)
    _, w, x, bias, _ = _problem(name, 24, 1100, 2, torch.bfloat16, seed=6)
    pw = ref_backend.quantize_weight(w, scheme)
    mma = path.startswith("mma")
    monkeypatch.setattr(mm, "MMA_X_AHEAD", False if path == "mma-chained" else None)
    monkeypatch.setattr(mm, "MMA_MAX_M", {4: 64 if mma else 0, 8: 64 if mma else 0})
    monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    monkeypatch.setattr(mm, "GEMV_MAX_M", 4 if path == "gemv" else 0)
    y = raw_matmul(x, pw, scheme, bias)
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("name,m,k,expect", [
    ("W4A16", 1, 2048, "mma"), ("W4A16", 16, 512, "mma"), ("W4A16", 1, 256, "other"), ("W4A16", 64, 2048, "mma"),
    ("W4A16", 64, 1536, "other"), ("W4A16", 128, 4096, "mma"), ("W4A16", 129, 2048, "other"),
    ("W4A16", 100, 1536, "other"), ("W8A16", 1, 1024, "mma"), ("W8A16", 16, 512, "other"),
    ("W8A16", 64, 2048, "mma"), ("W8A16", 100, 2048, "mma"), ("W4A8_DYNAMIC", 16, 512, "mma"),
    ("W4A8_DYNAMIC", 64, 1024, "mma"), ("W4A8_DYNAMIC", 64, 512, "other"), ("W4AFP8", 100, 2048, "mma"),
    ("W4AFP8", 100, 1024, "other")])
def test_decode_dispatch(cuda_backend, ref_backend, monkeypatch, name, m, k, expect):
    """Which kernel serves a packed scheme by default: the decode kernel on weights deep enough for M (int4 K >=
    512 and int8 K >= 1024 to M = 16; K >= 2048 above, 1024 for W4A8 to M = 64; K >= 2048 to M = 128), else the
    GEMV, the tiled kernel, dequantize + cuBLAS or the expanded codes."""
    import dsq_cuda.mm as mm

    calls = []
    real = mm._mma_decode
    monkeypatch.setattr(mm, "_mma_decode", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    scheme, w, x, bias, _ = _problem(name, 16, k, m, torch.bfloat16, seed=13)
    pw = ref_backend.quantize_weight(w, scheme)
    y = raw_matmul(x, pw, scheme, bias)
    assert ("mma" if calls else "other") == expect
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]


def test_layouts_are_made_on_first_use(cuda_backend, ref_backend, monkeypatch):
    """A packed weight holds only the layouts its calls used: decode-only use never builds the slab layout."""
    import dsq_cuda.mm as mm

    monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    scheme, w, x, bias, _ = _problem("W4A16", 16, 256, 2, torch.bfloat16, seed=14)
    pw = ref_backend.quantize_weight(w, scheme)
    raw_matmul(x, pw, scheme, bias)  # M = 2: decode kernel
    (lay,) = pw.device_layout.values()
    assert "pt32" in lay and "w" not in lay and "wt16" not in lay
    monkeypatch.setattr(mm, "MMA_MAX_M", {4: 0, 8: 0})
    y = raw_matmul(x, pw, scheme, bias)  # the tiled kernel now: slabs appear
    assert "w" in lay
    assert _rel(y, ref_backend.matmul(x, pw, scheme, bias)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("name,k,expect", [("W4A16", 1024, {"w", "pt32"}), ("W8A16", 1024, {"w", "pt32"}),
                                            ("W8A16", 512, {"w", "wt16"}), ("W8A8", 1024, set())])
def test_prepare_builds_every_layout_before_capture(cuda_backend, ref_backend, monkeypatch, name, k, expect):
    """Backend.prepare builds the layouts the dispatch can use, so calls afterwards build nothing; a layout
    missing under CUDA graph capture is refused with the fix instead of being recorded into the graph."""
    import dsq_cuda.mm as mm

    scheme, w, x, bias, stats = _problem(name, 16, k, 2, torch.bfloat16, seed=15)
    pw = ref_backend.quantize_weight(w, scheme, stats)
    cuda_backend.prepare(pw, scheme)
    (lay,) = pw.device_layout.values()
    built = set(lay) & {"w", "pt32", "wt16"}
    assert expect <= built
    for m in (1, 2, 40):
        raw_matmul(x[:1].expand(m, -1).contiguous(), pw, scheme, bias)
    assert set(lay) & {"w", "pt32", "wt16"} == built  # nothing new at any M

    fresh = ref_backend.quantize_weight(w, scheme, stats)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="backend.prepare"):
        mm.prepare(fresh, scheme, torch.device(cuda_backend.device))


def test_prepare_for_graphs_walks_the_model(cuda_backend, ref_backend):
    import dsq

    scheme = dsq.get_scheme("W4A16")
    model = torch.nn.Sequential(torch.nn.Linear(1024, 16), torch.nn.Linear(16, 8))
    model[0] = dsq.QuantLinear.from_linear(model[0], scheme, cuda_backend)
    assert dsq.prepare_for_graphs(model) == 1
    (lay,) = model[0].packed.device_layout.values()
    assert "pt32" in lay and "w" in lay
    ref = torch.nn.Sequential(dsq.QuantLinear.from_linear(torch.nn.Linear(256, 8), scheme, ref_backend))
    assert dsq.prepare_for_graphs(ref) == 1  # the reference has nothing to build; the call is still valid


@pytest.mark.parametrize("name,path", [(n, p) for n in ("W4A16", "W4A16_ASYM") for p in ("mma", "gemv", "tiled", "dense")]
                         + [("W4AFP8", "mma"), ("W4AFP8", "tiled")])
def test_padding_past_k_reads_no_scale_past_the_last_group(cuda_backend, ref_backend, monkeypatch, name, path):
    """K = 300 with groups of 128: the last 256-input tile runs past K, into a group (index 3) that does not
    exist. The kernels must look up an existing group there (x is 0 past K); the scales here are followed in
    memory by NaN, so a read past the last group poisons the output. (On the H200 the tiled kernel read past
    the end of the scale tensor and wrote NaN in the last output column: conformance random[7x33x300].)"""
    import dsq_cuda.mm as mm

    scheme, w, x, bias, _ = _problem(name, 33, 300, 7, torch.bfloat16, seed=5)
    pw = ref_backend.quantize_weight(w, scheme)
    ref = ref_backend.matmul(x, pw, scheme, bias)
    dev = torch.device(cuda_backend.device)
    lay = mm.prepare(pw, scheme, dev)
    ws = lay["ws"]
    buf = torch.full((ws.numel() + 1024,), float("nan"), device=ws.device)
    buf[: ws.numel()] = ws.flatten()
    lay["ws"] = buf[: ws.numel()].view(ws.shape)  # same values, NaN right after the last row's last group
    monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    monkeypatch.setattr(mm, "MMA_ACT_MAX_M", 16 if path == "mma" else 0)
    monkeypatch.setattr(mm, "MMA_MAX_M", {4: 16 if path == "mma" else 0, 8: 0})
    monkeypatch.setattr(mm, "GEMV_MAX_M", 16 if path == "gemv" else 0)
    monkeypatch.setattr(mm, "DENSE_MIN_M", 1 if path == "dense" else None)
    y = raw_matmul(x, pw, scheme, bias)
    assert _rel(y, ref) < TOL[torch.bfloat16], f"{name} {path}: {_rel(y, ref):.3g}"


@pytest.mark.parametrize("split,slots", [("fixup", True), ("fixup", False), ("stream", True), ("stream", False),
                                         ("atomic", False)])
@pytest.mark.parametrize("name,n,k,m,bias", [("W4A16", 200, 1100, 3, True), ("W4A16", 96, 2048, 1, False),
                                              ("W8A16", 72, 1200, 16, True), ("W4A8_DYNAMIC", 130, 1024, 5, True)])
def test_decode_split_modes(cuda_backend, ref_backend, monkeypatch, split, slots, name, n, k, m, bias):
    """The decode kernel's ways of sharing K between programs agree with the reference: split-K finished in
    the kernel (fixup), stream-K runs that cross row blocks (1 and 3 programs per SM: with the interpreter's
    2 SMs, runs of several blocks and runs of a few tiles), and atomics into a zeroed buffer. The in-kernel
    finish with a slot per partial sum (mm.FIXUP_SLOTS) reads only slots written in the same call: its sums
    workspace is filled with NaN before each call and the output stays finite and the same; without slots the
    workspace is left zeroed. Either way the counts are left zeroed, so a second call gives the same bits."""
    import dsq_cuda.mm as mm

    monkeypatch.setattr(mm, "MMA_SPLIT", split)
    monkeypatch.setattr(mm, "FIXUP_SLOTS", slots)
    monkeypatch.setattr(mm, "MMA_MAX_M", {4: 64, 8: 64})
    monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    monkeypatch.setattr(fixup, "WORKSPACES", {})
    scheme, w, x, b, _ = _problem(name, n, k, m, torch.bfloat16, seed=21)
    pw = ref_backend.quantize_weight(w, scheme)
    ref = ref_backend.matmul(x, pw, scheme, b if bias else None)
    for per_sm in (1, 3) if split == "stream" else (1,):  # programs per SM matter to stream-K alone
        monkeypatch.setattr(mm, "MMA_STREAM_PER_SM", per_sm)
        y = raw_matmul(x, pw, scheme, b if bias else None)
        assert _rel(y, ref) < TOL[torch.bfloat16]
        if slots:
            assert fixup.WORKSPACES or split == "atomic"
            for sums, _ in fixup.WORKSPACES.values():
                sums.fill_(float("nan"))
        assert torch.equal(raw_matmul(x, pw, scheme, b if bias else None), y)
        for sums, counts in fixup.WORKSPACES.values():
            assert not counts.any()
            assert slots or not sums.any()


def test_deterministic_mode_takes_the_slots(cuda_backend, ref_backend, monkeypatch):
    """mm.FIXUP_SLOTS None (the default) follows torch.use_deterministic_algorithms: on, the split-K finish keeps a
    slot per partial sum (a workspace of split_k slots); off, it adds them with atomics (one slot, left zeroed)."""
    import dsq_cuda.mm as mm

    monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    monkeypatch.setattr(fixup, "WORKSPACES", {})
    assert mm.FIXUP_SLOTS is None
    scheme, w, x, _, _ = _problem("W4A16", 64, 1024, 2, torch.bfloat16, seed=5)
    pw = ref_backend.quantize_weight(w, scheme)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        y_slots = raw_matmul(x, pw, scheme)
        torch.use_deterministic_algorithms(False)
        y_atomics = raw_matmul(x, pw, scheme)
    finally:
        torch.use_deterministic_algorithms(was)
    assert sorted(key[-2] for key in fixup.WORKSPACES) == [1, 2]  # slots per workspace: atomics, then 2 splits
    assert _rel(y_slots, ref_backend.matmul(x, pw, scheme)) < TOL[torch.bfloat16]
    assert torch.equal(y_slots, y_atomics)  # two partials: the same sum in either order


def test_fixup_slots_bound_the_programs_of_a_row_block():
    """fixup_slots is at least the number of stream-K programs whose runs touch one row block (the kernel's
    p1 - p0 + 1), for every row block of a range of launches, and never more than the programs."""
    from dsq_cuda.fixup import fixup_slots

    for blocks in (1, 3, 7, 40):
        for tiles in (1, 2, 5, 28):
            units = blocks * tiles
            for programs in range(1, units + 1):
                owner = [p for p in range(programs) for _ in range(p * units // programs, (p + 1) * units // programs)]
                most = max(owner[(b + 1) * tiles - 1] - owner[b * tiles] + 1 for b in range(blocks))
                assert most <= fixup_slots(1, programs, tiles, blocks) <= programs
                for b in range(blocks):  # the kernel's closed form of the first and last owner
                    x0, x1 = b * tiles, (b + 1) * tiles - 1
                    assert ((x0 + 1) * programs + units - 1) // units - 1 == owner[x0]
                    assert ((x1 + 1) * programs + units - 1) // units - 1 == owner[x1]
    assert fixup_slots(8, 0, 28, 288) == 8


@pytest.mark.parametrize("name,k,m", [("W4A16", 1100, 3), ("W4A16", 1024, 16), ("W4A8_DYNAMIC", 1100, 1)])
def test_decode_x_left_to_the_pipeliner(cuda_backend, ref_backend, monkeypatch, name, k, m):
    """X_AHEAD = False (each field's x loaded where it is used; the GPU default at 3 stages) computes what
    X_AHEAD = True (x loaded a field ahead by hand) does, with K a whole number of tiles or not."""
    import dsq_cuda.mm as mm

    monkeypatch.setattr(mm, "MMA_MAX_M", {4: 64, 8: 64})
    monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    scheme, w, x, b, _ = _problem(name, 80, k, m, torch.bfloat16, seed=22)
    pw = ref_backend.quantize_weight(w, scheme)
    monkeypatch.setattr(mm, "MMA_X_AHEAD", True)
    y = raw_matmul(x, pw, scheme, b)
    monkeypatch.setattr(mm, "MMA_X_AHEAD", False)
    y_pipelined = raw_matmul(x, pw, scheme, b)
    assert _rel(y_pipelined, ref_backend.matmul(x, pw, scheme, b)) < TOL[torch.bfloat16]
    assert torch.equal(y_pipelined, y)  # same products, same order


@pytest.mark.parametrize("name,k,m", [("W4A16", 1100, 3), ("W4A16_ASYM", 1024, 16), ("W8A16", 1100, 5),
                                      ("W4A8_DYNAMIC", 600, 1)])
def test_decode_fields_chained_per_mma(cuda_backend, ref_backend, monkeypatch, name, k, m):
    """DOT_FIELDS > 1 (a run of fields of one scale group multiplied in one MMA chain) computes the reference's
    product, like one field per chain, with K a whole number of tiles or not."""
    import dsq_cuda.mm as mm

    monkeypatch.setattr(mm, "MMA_MAX_M", {4: 64, 8: 64})
    monkeypatch.setattr(mm, "MMA_MIN_K", {4: 0, 8: 0})
    monkeypatch.setattr(mm, "MMA_X_AHEAD", False)
    monkeypatch.setattr(mm, "MMA_INT8", False)  # W4A8 on the bf16 tensor cores: the path with fields
    scheme, w, x, b, _ = _problem(name, 80, k, m, torch.bfloat16, seed=23)
    pw = ref_backend.quantize_weight(w, scheme)
    ref = ref_backend.matmul(x, pw, scheme, b)
    launched = []
    real = mm.mma_dot_fields
    monkeypatch.setattr(mm, "mma_dot_fields", lambda *a: launched.append(real(*a)) or launched[-1])
    for fields in (1, 0, 2):
        monkeypatch.setattr(mm, "MMA_DOT_FIELDS", fields)
        assert _rel(raw_matmul(x, pw, scheme, b), ref) < TOL[torch.bfloat16]
    assert launched == [1, 4, 2]


def test_dot_fields_stay_inside_a_scale_group(monkeypatch):
    import dsq_cuda.mm as mm
    from dsq_cuda.mm import mma_dot_fields

    monkeypatch.setattr(mm, "MMA_DOT_FIELDS", 0)

    assert mma_dot_fields(4, 128, 32, False) == 4  # 4 fields of 32 inputs: one group of a 256-input tile
    assert mma_dot_fields(4, 64, 32, False) == 2
    assert mma_dot_fields(4, 0, 32, False) == 8  # per channel: the whole tile
    assert mma_dot_fields(8, 0, 32, False) == 4
    assert mma_dot_fields(4, 512, 32, False) == 8  # a group spans two tiles
    assert mma_dot_fields(4, 96, 32, False) == 1  # a group that neither divides nor holds a tile
    assert mma_dot_fields(4, 128, 32, True) == 1  # x loaded ahead by hand: one field at a time


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a race between threads needs a GPU (and a large grid)")
@pytest.mark.parametrize("m", [4, 5, 12])
def test_decode_fixup_repeats_on_a_large_grid(cuda_backend, monkeypatch, m):
    """Many calls of the split-K fixup at token counts that are not a multiple of 16, on a weight wide enough
    for hundreds of row blocks, each against the atomics path (no fixup). On the H200 a missing barrier
    between the fixup's loads of the sums and their zeroing made 1-13 calls in 15-25 wrong at 7168x18432,
    M = 4 (docs/benchmarks/cuda.md v11); test_cuda_fixup_ordering checks the barrier in the PTX on CPU."""
    import dsq_cuda.mm as mm

    scheme = dsq.get_scheme("W4A16")
    g = torch.Generator(device="cuda").manual_seed(31)
    w = (torch.randn(18432, 7168, device="cuda", generator=g) * 0.05).to(torch.bfloat16)
    x = torch.randn(m, 7168, device="cuda", generator=g).to(torch.bfloat16)
    pw = cuda_backend.quantize_weight(w, scheme)
    monkeypatch.setattr(mm, "MMA_SPLIT", "atomic")
    ref = raw_matmul(x, pw, scheme)
    monkeypatch.setattr(mm, "MMA_SPLIT", "fixup")
    wrong = sum(_rel(raw_matmul(x, pw, scheme), ref) > 1e-3 for _ in range(25))
    assert wrong == 0, f"{wrong} of 25 fixup calls differ from the atomics path"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the order programs arrive in varies on a GPU only")
@pytest.mark.parametrize("name,k,n,m", [("W4A16", 2048, 1536, 16), ("W4AFP8", 2048, 1536, 16),
                                        ("W4A16", 7168, 18432, 64), ("W8A16", 2048, 2048, 4)])
def test_decode_split_k_repeats_bit_for_bit(cuda_backend, monkeypatch, name, k, n, m):
    """With a slot per partial sum (mm.FIXUP_SLOTS, taken under torch.use_deterministic_algorithms) the split-K /
    stream-K finish adds them in slot order, so 30 calls give one output, where row blocks have 3 or more float partials (split 4 at 1536 x 2048,
    M = 16; stream-K at M = 64 on 7168 x 18432). With float32 atomics in arrival order these cells gave 2
    distinct outputs in 30 calls on the H200 (benchmarks/cuda/repeat_probe.py, cuda.md v16)."""
    import dsq_cuda.mm as mm
    from dsq_cuda import configs

    monkeypatch.setattr(mm, "FIXUP_SLOTS", True)
    scheme = dsq.get_scheme(name)
    g = torch.Generator(device="cuda").manual_seed(k + m)
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.05).to(torch.bfloat16)
    x = torch.randn(m, k, device="cuda", generator=g).to(torch.bfloat16)
    pw = cuda_backend.quantize_weight(w, scheme)
    cfg = configs.pick_mma(m, n, k, 32, scheme.weight_bits, "cuda:0")
    assert cfg.split_k >= 3 or configs.mma_stream_programs(cfg, n, k, scheme.weight_bits, "cuda:0")
    first = raw_matmul(x, pw, scheme)
    assert all(torch.equal(raw_matmul(x, pw, scheme), first) for _ in range(29))


@pytest.mark.parametrize("k,m,n", [(600, 1, 80), (1024, 5, 64), (2048, 16, 130), (1024, 40, 96)])
def test_w4a8_decode_on_int8_tensor_cores_is_exact(cuda_backend, ref_backend, monkeypatch, k, m, n):
    """W4A8_DYNAMIC's decode path multiplies ``16 q`` by int8 x on the int8 tensor cores (dsq_cuda.int4_int8_mma):
    its int32 sums are the reference's integer sums, so y equals the reference's bit for bit (K padded to whole
    tiles or not, split-K and stream-K row blocks alike). It reads the row tiles, not pair tiles; the bf16 path
    (MMA_INT8 off) reads pair tiles and agrees within the tolerance."""
    import dsq_cuda.mm as mm

    scheme, w, x, b, _ = _problem("W4A8_DYNAMIC", n, k, m, torch.bfloat16, seed=k + m)
    pw = ref_backend.quantize_weight(w, scheme)
    ref = ref_backend.matmul(x, pw, scheme, b)
    y = raw_matmul(x, pw, scheme, b)
    assert torch.equal(y.cpu(), ref.cpu())
    lay = next(iter(pw.device_layout.values()))
    assert "wt16" in lay and not any(key.startswith("pt") for key in lay)
    monkeypatch.setattr(mm, "MMA_INT8", False)
    assert _rel(raw_matmul(x, pw, scheme, b), ref) < TOL[torch.bfloat16]
    assert any(key.startswith("pt") for key in lay)


def test_int8_mma_order_is_a_permutation_of_each_tile():
    """Every input of a 128-input tile has exactly one MMA position, and x is zero-filled to whole tiles."""
    from dsq_cuda.int4_int8_mma import LBK, mma_position_source
    from dsq_cuda.slab import int8_mma_order

    src = mma_position_source(torch.arange(LBK))
    assert torch.equal(src.sort().values, torch.arange(LBK))
    x = torch.arange(1, 301, dtype=torch.float32).reshape(1, 300)
    out = int8_mma_order(x)
    assert out.shape == (1, 384)
    assert torch.equal(out[0, :128], x[0, src])
    assert torch.equal(out[0, 256:][src >= 44], torch.zeros(int((src >= 44).sum())))


@pytest.mark.parametrize("m,k", [(1, 300), (3, 1024)])
def test_per_token_int8_codes_in_mma_order(m, k):
    """quantize_per_token_int8(mma_order=True) stores each code at its int8 MMA position (one pass), the same
    codes as quantizing first and reordering after, zero-filled to whole tiles."""
    from dsq_cuda import act_quant
    from dsq_cuda.slab import int8_mma_order

    dev = torch.device(dsq.get_backend("cuda").device)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k)).to(torch.bfloat16).to(dev)
    q, s = act_quant.quantize_per_token_int8(x)
    qo, so = act_quant.quantize_per_token_int8(x, mma_order=True)
    assert torch.equal(so, s)
    assert qo.shape == (m, -(-k // 128) * 128)
    assert torch.equal(qo.cpu(), int8_mma_order(q.cpu()))


@pytest.mark.parametrize("k,fp8", [(300, False), (256, True), (1000, True)])
def test_int8_slices_hold_x_in_balanced_digits(k, fp8):
    """act_quant.int8_slices: per tile three int8 digit slices (and a zero one) in int8 MMA order whose value
    ``scale * (65536 d0 + 256 d1 + d2)`` is x: exactly for per-token e4m3 codes (W4AFP8), and for bf16 x wherever
    an element is at least 2**-14 of its row's amax (within 2**-22 amax elsewhere)."""
    from dsq_cuda import act_quant
    from dsq_cuda.slab import int8_mma_order

    dev = torch.device(dsq.get_backend("cuda").device)
    g = torch.Generator().manual_seed(k)
    x = (torch.randn(3, k, generator=g) * torch.logspace(-6, 2, k)).to(torch.bfloat16)
    x[1] = 0.0  # an all-zero row
    if fp8:
        codes, xs = act_quant.quantize_per_token_fp8(x.to(dev))
        q, s = act_quant.int8_slices(codes, xs)
        want = codes.cpu().double() * xs.cpu().double()
    else:
        q, s = act_quant.int8_slices(x.to(dev))
        want = x.float()
    kp = -(-k // 128) * 128
    assert q.shape == (3, 4 * kp) and s.shape == (3,)
    d = q.cpu().reshape(3, kp // 128, 4, 128).to(torch.int64)
    assert d[:, :, 3].abs().sum() == 0 and d[:, :, 0].abs().max() < 128
    big = (d[:, :, 0] * 65536 + d[:, :, 1] * 256 + d[:, :, 2]).reshape(3, kp)
    got = big.double() * s.cpu().double()[:, None]
    ordered = int8_mma_order(want.double())
    amax = want.abs().amax(dim=1, keepdim=True).double()
    if fp8:
        assert torch.equal(got, ordered)
    else:
        exact = ordered.abs() >= amax * 2.0**-14
        assert torch.equal(got[exact], ordered[exact])
        assert ((got - ordered).abs() <= amax * 2.0**-21).all()
        assert not got[1].any()
