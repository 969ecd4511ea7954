"""The emulated torch_npu ops against hand-computed results of their documented math."""

import math

import pytest
import torch

from dsq_ascend import emulated_ops as E
from dsq_ascend import layouts as L


def test_npu_quantize_rounds_half_away_and_saturates():
    x = torch.tensor([[2.5, -2.5, 0.5, -0.5, 1.4999999, 300.0, -300.0, 3.5]])
    q = E.npu_quantize(x, torch.tensor([1.0]), torch.tensor([0.0]), torch.qint8, -1, True)
    assert q.dtype == torch.int8
    assert q.tolist() == [[3, -3, 1, -1, 1, 127, -128, 4]]  # torch.round would give 2, -2, 0, -0, ..., 4


def test_npu_quantize_div_mode_zero_point_and_axis():
    x = torch.tensor([[1.0, 3.0], [5.0, -7.0]])
    # div_mode True: x / s + zp with per-column s = [2, 4], zp = [1, -1]: [[1.5, -0.25], [3.5, -2.75]]
    q = E.npu_quantize(x, torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0]), torch.qint8, -1, True)
    assert q.tolist() == [[2, 0], [4, -3]]
    # div_mode False multiplies: x * 0.5 + 0 = [[0.5, 1.5], [2.5, -3.5]] -> half away
    q = E.npu_quantize(x, torch.tensor([0.5]), None, torch.qint8, -1, False)
    assert q.tolist() == [[1, 2], [3, -4]]
    with pytest.raises(ValueError, match="does not match"):
        E.npu_quantize(x, torch.tensor([1.0, 2.0, 3.0]), None, torch.qint8, -1, True)


def test_npu_dynamic_quant_per_row_half_even():
    x = torch.tensor([[1.0, -2.0, 0.5, 1.0 / 127.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.bfloat16)
    q, s = E.npu_dynamic_quant(x)
    assert s.dtype == torch.float32 and s.shape == (2,)
    assert s[0].item() == (torch.tensor(2.0) / 127.0).item()  # float32 division
    xf = x.float()[0]
    want = torch.round(xf / s[0]).tolist()  # 63.5 -> 64 (even), -127, 31.75 -> 32
    assert q[0].tolist() == want and q[0, 0].item() == 64 and q[0, 1].item() == -127
    assert s[1].item() == 0.0 and q[1].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        E.npu_dynamic_quant(torch.ones(2, 2))


def test_npu_quant_matmul_epilogues():
    x1 = torch.tensor([[1, 2], [3, -4]], dtype=torch.int8)
    w = torch.tensor([[1, 0, 2], [0, 1, -1]], dtype=torch.int8)  # (k=2, n=3); acc = [[1, 2, 0], [3, -4, 10]]
    nz = E.npu_format_cast(w, 29)
    assert E.get_npu_format(nz) == 29
    acc = E.npu_quant_matmul(x1, nz, torch.tensor([1.0]), output_dtype=torch.int32)
    assert acc.tolist() == [[1, 2, 0], [3, -4, 10]]
    # int32 bias before the scale: (acc + b) * s
    y = E.npu_quant_matmul(x1, w, torch.tensor([0.5, 1.0, 2.0]), bias=torch.tensor([1, 0, -1], dtype=torch.int32),
                           output_dtype=torch.bfloat16)
    assert y.float().tolist() == [[1.0, 2.0, -2.0], [2.0, -4.0, 18.0]]
    # per-token scale and a float bias after it: acc * s * pts + b
    y = E.npu_quant_matmul(x1, w, torch.tensor([1.0]), pertoken_scale=torch.tensor([2.0, 0.5]),
                           bias=torch.tensor([0.25, 0.0, 0.0]), output_dtype=torch.float16)
    assert y.float().tolist() == [[2.25, 4.0, 0.0], [1.75, -2.0, 5.0]]
    # int64 scale = FP19: 0.1 loses its low 13 mantissa bits
    y = E.npu_quant_matmul(x1, w, L.trans_quant_param(torch.tensor([0.1])), output_dtype=torch.float16)
    fp19 = torch.tensor([0x3DCCC000], dtype=torch.int32).view(torch.float32)
    assert torch.equal(y, (torch.tensor([[1.0, 2, 0], [3, -4, 10]]) * fp19).to(torch.float16))
    with pytest.raises(ValueError, match="cannot produce"):
        E.npu_quant_matmul(x1, w, torch.tensor([1.0]), output_dtype=torch.float32)
    with pytest.raises(ValueError, match="int8 output"):
        E.npu_quant_matmul(x1, w, torch.tensor([1.0]))


def test_npu_weight_quant_batchmatmul_adds_offset():
    w = torch.tensor([[1, 3], [2, -1]], dtype=torch.int8)  # (K=2, N=2)
    x = torch.tensor([[2.0, 4.0]], dtype=torch.bfloat16)
    s = torch.tensor([0.5, 1.0], dtype=torch.bfloat16)
    off = torch.tensor([-1.0, 1.0], dtype=torch.bfloat16)  # weight -> [[0, 4], [0.5, 0]]
    y = E.npu_weight_quant_batchmatmul(x, w, s, off, bias=torch.tensor([0.0, 1.0]))
    assert y.dtype == torch.bfloat16 and y.float().tolist() == [[2.0, 9.0]]
    with pytest.raises(ValueError, match="x's dtype"):
        E.npu_weight_quant_batchmatmul(x, w, s.float())


def test_npu_weight_quant_batchmatmul_int4_per_group():
    g = torch.Generator().manual_seed(1)
    k, n, gs = 96, 16, 32
    q = torch.randint(-8, 8, (k, n), generator=g, dtype=torch.int32)
    packed = E.npu_convert_weight_to_int4pack(q)
    s = torch.rand(k // gs, n, generator=g).to(torch.float16) + 0.5
    x = torch.randn(3, k, generator=g).to(torch.float16)
    y = E.npu_weight_quant_batchmatmul(x, packed, s, antiquant_group_size=gs)
    w = (q.float() * s.float().repeat_interleave(gs, 0)).to(torch.float16).float()
    assert torch.equal(y, (x.float() @ w).to(torch.float16))
    with pytest.raises(ValueError, match="multiple of 32"):
        E.npu_weight_quant_batchmatmul(x, packed, s, antiquant_group_size=48)


def test_init_routing_v2_full_and_expert_range():
    x = torch.tensor([[1.0, 1.0], [2.0, -2.0]])
    ids = torch.tensor([[2, 0], [1, 2]], dtype=torch.int32)  # flat entries: 2, 0, 1, 2
    kw = dict(active_num=4, expert_num=3, expert_tokens_num_type=1, expert_tokens_num_flag=True, quant_mode=-1)
    ex, row_idx, counts, _ = E.npu_moe_init_routing_v2(x, ids, **kw)
    # stable sort by expert: entries 1 (e0), 2 (e1), 0 (e2), 3 (e2)
    assert row_idx.tolist() == [2, 0, 1, 3] and counts.tolist() == [1, 1, 2]
    assert ex.tolist() == [[1.0, 1.0], [2.0, -2.0], [1.0, 1.0], [2.0, -2.0]]
    ex, row_idx, counts, _ = E.npu_moe_init_routing_v2(x, ids, active_expert_range=[1, 3], **kw)
    assert row_idx.tolist() == [1, -1, 0, 2] and counts.tolist() == [1, 2]
    assert ex[:3].tolist() == [[2.0, -2.0], [1.0, 1.0], [2.0, -2.0]] and torch.isnan(ex[3]).all()
    q, _, _, scale = E.npu_moe_init_routing_v2(x, ids, **{**kw, "quant_mode": 1})
    assert q.dtype == torch.int8 and q[0].tolist() == [127, 127] and q[1].tolist() == [127, -127]
    assert scale.tolist() == pytest.approx([1 / 127, 2 / 127, 1 / 127, 2 / 127])


def test_grouped_matmul_int8_groups_and_undefined_rows():
    x = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=torch.int8)
    w = torch.stack([torch.eye(2, dtype=torch.int8), -torch.eye(2, dtype=torch.int8)])  # (E=2, K=2, N=2)
    y = E.npu_grouped_matmul([x], [w], scale=[torch.ones(2, 2, dtype=torch.bfloat16)],
                             per_token_scale=[torch.tensor([1.0, 2.0, 0.5, 9.0])], group_list=torch.tensor([1, 2]),
                             split_item=2, group_type=0, group_list_type=1, output_dtype=torch.bfloat16)[0]
    assert y[:3].float().tolist() == [[1.0, 2.0], [-6.0, -8.0], [-2.5, -3.0]]
    assert torch.isnan(y[3].float()).all()  # past the routed rows: undefined
    with pytest.raises(ValueError, match="cannot produce"):
        E.npu_grouped_matmul([x], [w], scale=[torch.ones(2, 2)], group_list=torch.tensor([1, 2]), split_item=2,
                             group_type=0, group_list_type=1, output_dtype=torch.bfloat16)


def test_grouped_matmul_a8w4_equals_plain_product():
    g = torch.Generator().manual_seed(2)
    q = torch.randint(-8, 8, (2, 16, 24), generator=g, dtype=torch.int8)  # [E, N, K]
    scale = torch.rand(2, 16, generator=g) + 0.1
    w = torch.stack([L.pack_int4_to_int32(q[e].T) for e in range(2)])  # (E, K, N/8)
    x = torch.randint(-128, 128, (5, 24), generator=g, dtype=torch.int8)
    pts = torch.rand(5, generator=g)
    bias = L.a8w4_scale_bias(q, scale)[..., 0]
    y = E.npu_grouped_matmul([x], [w], scale=[L.scale_to_int64_bits(scale)], bias=[bias], per_token_scale=[pts],
                             group_list=torch.tensor([2, 3]), split_item=2, group_type=0, group_list_type=1,
                             output_dtype=torch.float32)[0]
    want = torch.cat([(x[:2].double() @ q[0].double().T) * scale[0].double(),
                      (x[2:].double() @ q[1].double().T) * scale[1].double()]) * pts.double().unsqueeze(-1)
    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-3)


def test_swiglu_and_unpermute():
    h = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    a = E.npu_swiglu(h)
    assert a[0].tolist() == pytest.approx([0.0, 1.0 / (1.0 + math.exp(-1.0)) * 3.0])
    permuted = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    idx = torch.tensor([3, 0, 1, 2], dtype=torch.int32)  # token 0 <- rows 3, 0; token 1 <- rows 1, 2
    out = E.npu_moe_token_unpermute(permuted, idx, torch.tensor([[0.5, 2.0], [1.0, 0.1]]))
    assert out[:, 0].tolist() == pytest.approx([502.0, 20.0])
    with pytest.raises(ValueError, match="out of range"):
        E.npu_moe_token_unpermute(permuted, torch.tensor([-1, 0, 1, 2], dtype=torch.int32))
