"""dsq.quantize on an accelerator backend vs the cpu reference, on a pure-torch DeepSeek-shaped toy MoE model.

Not collected by pytest (needs a GPU; no transformers needed). On a GPU machine, from the repository root:

    PYTHONPATH=backends:conformance:. python3 tests/model/gpu_quantize_check.py [--backend cuda] [--out DIR]

For each preset it quantizes one copy of the float model with ``cpu`` and one with ``--backend``, then reports
(1) whether every packed tensor is bit-identical (calibrate and pack must be, by the conformance contract)
and (2) the relative difference of the two quantized models' outputs and of each against the float model.
The toy model names its modules like DeepSeek-V3 (``layers.i.self_attn.*``, ``layers.i.mlp.{gate, experts,
shared_experts.*}``) so the DeepSeek presets apply; routed experts are a fused ``gate_up_proj``/``down_proj``
block handled by the generic MoE adapter.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import dsq
from dsq.nn import QuantExperts, QuantLinear

H, I, E, TOPK = 256, 128, 8, 2


class ToyExperts(nn.Module):
    """transformers-style fused experts: gate_up_proj [E, 2I, H], down_proj [E, H, I]."""

    def __init__(self):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(E, 2 * I, H) * 0.05)
        self.down_proj = nn.Parameter(torch.randn(E, H, I) * 0.05)
        self.act_fn = nn.SiLU()

    def forward(self, x, top_k_index, top_k_weights):
        out = torch.zeros_like(x)
        for e in range(E):
            rows, slot = torch.where(top_k_index == e)
            if rows.numel():
                gate, up = F.linear(x[rows], self.gate_up_proj[e]).chunk(2, dim=-1)
                y = F.linear(self.act_fn(gate) * up, self.down_proj[e])
                out.index_add_(0, rows, y * top_k_weights[rows, slot, None])
        return out


class ToyMLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(H, width, bias=False), nn.Linear(H, width, bias=False)
        self.down_proj = nn.Linear(width, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ToyMoE(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = nn.Linear(H, E, bias=False)  # router: kept float by the presets (re:.*mlp.gate$)
        self.experts = ToyExperts()
        self.shared_experts = ToyMLP(I)

    def forward(self, x):
        probs = F.softmax(self.gate(x).float(), dim=-1)
        w, ids = probs.topk(TOPK, dim=-1)
        return self.experts(x, ids, (w / w.sum(-1, keepdim=True)).to(x.dtype)) + self.shared_experts(x)


class ToyAttention(nn.Module):
    """Not attention: the MLA projection names in sequence, enough for recipes to target them."""

    def __init__(self):
        super().__init__()
        self.q_a_proj, self.kv_b_proj = nn.Linear(H, 128, bias=False), nn.Linear(128, H, bias=False)
        self.o_proj = nn.Linear(H, H, bias=False)

    def forward(self, x):
        return self.o_proj(torch.tanh(self.kv_b_proj(self.q_a_proj(x))))


class ToyLayer(nn.Module):
    def __init__(self, dense: bool):
        super().__init__()
        self.self_attn = ToyAttention()
        self.mlp = ToyMLP(2 * I) if dense else ToyMoE()

    def forward(self, x):
        x = x + self.self_attn(x)
        return x + self.mlp(x)


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([ToyLayer(dense=True), ToyLayer(dense=False), ToyLayer(dense=False)])
        self.lm_head = nn.Linear(H, 64, bias=False)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(x)


def packed_of(model) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            out[name] = m.packed.tensors
        elif isinstance(m, QuantExperts):
            out[name + ".gate_up"] = m.weights.gate_up.tensors
            out[name + ".down"] = m.weights.down.tensors
    return out


def _ensure_backends(name: str) -> None:
    """Without `pip install -e .` (a bare GPU machine) the entry points are missing: register in-process."""
    try:
        dsq.get_backend(name), dsq.get_backend("cpu")
    except dsq.DsqError:
        import importlib

        from dsq.plugins import register_plugin
        from dsq.registry import refresh

        for ep, module in (("cpu-reference", "dsq_cpu_reference"), (name, f"dsq_{name}")):
            register_plugin(importlib.import_module(module), ep)
        refresh()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--out", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    _ensure_backends(args.backend)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    fm = ToyModel().to(dtype).eval()
    x = torch.randn(64, H, dtype=dtype)
    calib = [torch.randn(64, H, dtype=dtype) for _ in range(2)]
    be = dsq.get_backend(args.backend)
    with torch.no_grad():
        ref = fm(x).float()
    rel = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())  # noqa: E731
    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "backend": be.name, "dtype": args.dtype, "presets": {}}
    for preset in dsq.list_recipes():
        row: dict = {}
        try:
            mc, mg = copy.deepcopy(fm), copy.deepcopy(fm)
            dsq.quantize(mc, preset, backend="cpu", calib_data=calib, progress=False)
            t = time.time()
            dsq.quantize(mg, preset, backend=be, calib_data=calib, progress=False)
            row["quantize_s"] = round(time.time() - t, 3)
            pc, pg = packed_of(mc), packed_of(mg)
            diff = [f"{n}.{k}" for n in pc for k in pc[n]
                    if not torch.equal(pc[n][k].cpu().view(torch.uint8) if pc[n][k].dtype == torch.float8_e4m3fn
                                       else pc[n][k].cpu(),
                                       pg[n][k].cpu().view(torch.uint8) if pg[n][k].dtype == torch.float8_e4m3fn
                                       else pg[n][k].cpu())]
            row["packed_bit_identical"] = not diff
            row["packed_differs"] = diff[:10]
            with torch.no_grad():
                oc, og = mc(x), mg(x)
            row["rel_backend_vs_cpu"] = rel(og, oc)
            row["rel_cpu_vs_float"] = rel(oc, ref)
            row["rel_backend_vs_float"] = rel(og, ref)
        except Exception as exc:  # report every preset, even when one fails
            row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        results["presets"][preset] = row
        print(preset, json.dumps(row), flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_quantize_check.json"), "w") as f:
            json.dump(results, f, indent=2)
    return 0 if all("error" not in r for r in results["presets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
