"""calibrate + pack throughput of the cpu-reference backend, per scheme, on DeepSeek-V3 weight shapes.

Run apart from the tests (benchmarks/ is not in pytest's testpaths)::

    pytest benchmarks/cpu --benchmark-json=bench-cpu.json
    python benchmarks/cpu/summarize.py bench-cpu.json   (prints the table of docs/benchmarks/cpu-reference.md)

Throughput is MB of bf16 input weights (2 bytes per element, the checkpoint dtype) per second of
``calibrate`` + ``pack`` on one weight, with the shapes of DeepSeek-V3's layers ([N, K] = [out, in]).
"""

from __future__ import annotations

import pytest
import torch

import dsq

#: DeepSeek-V3 (hidden 7168, moe_intermediate 2048, q_lora 1536, kv_lora 512, 128 heads)
SHAPES = {
    "expert.gate_up_proj": (4096, 7168),  # 2 x moe_intermediate_size stacked (gate rows, then up rows)
    "expert.down_proj": (7168, 2048),
    "attn.q_a_proj": (1536, 7168),
    "attn.kv_b_proj": (32768, 512),  # 128 heads x (qk_nope 128 + v 128)
}


@pytest.fixture(scope="module")
def ref():
    return dsq.get_backend("cpu-reference")


@pytest.fixture(scope="module", params=list(SHAPES), ids=list(SHAPES))
def weight(request):
    n, k = SHAPES[request.param]
    w = (torch.randn(n, k, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    return request.param, w


@pytest.mark.parametrize("scheme_name", dsq.list_schemes())
def test_calibrate_pack(benchmark, ref, weight, scheme_name):
    layer, w = weight
    scheme = dsq.get_scheme(scheme_name)
    stats = dsq.ActStats(-4.0, 4.0) if scheme.static_activations else None

    def run():
        return ref.pack(w, ref.calibrate(w, scheme, stats), scheme)

    packed = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    mb = w.numel() * 2 / 1e6
    benchmark.extra_info.update({"layer": layer, "shape": list(w.shape), "scheme": scheme.name,
                                 "input_mb_bf16": mb, "packed_mb": packed.nbytes / 1e6})
    assert packed.shape == tuple(w.shape)
