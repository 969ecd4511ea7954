"""Calibration: activation statistics for schemes with static activation scales (W8A8).

The float model runs over ``calib_data`` while hooks record, for every module that needs it, the running
``min``/``max`` of its input (:class:`dsq.qtypes.ActStats`); the backend's ``calibrate`` turns a range into
``input_scale``/``input_zero_point`` (asymmetric: ``scale = (max(hi, 0) - min(lo, 0)) / 255``).

``calib_data`` is one batch or an iterable of batches; a batch is a tensor (``model(batch)``, e.g. token ids
[B, S]), a tuple (``model(*batch)``) or a dict (``model(**batch)``, e.g. ``input_ids`` + ``attention_mask``).

MoE layers (fused experts ``gate_up`` [E, 2I, H], ``down`` [E, H, I]): a forward hook on the experts block
sees the routed call ``(hidden_states[T, H], top_k_index, top_k_weights)``. It leaves the block's output
untouched -- the layer output is exactly that of normal routing, so later layers see the same activations as
without calibration -- and, on the side, runs the float experts to record statistics:

* ``expert_mode="all"`` (default): every expert sees every token of the layer. Its ``gate_up`` input range
  is that of all T tokens and its ``down`` input range is that of ``silu(gate_e(x)) * up_e(x)`` over all T
  tokens, so rarely routed experts still get ranges from real activations.
* ``expert_mode="routed"``: each expert sees only the tokens routed to it (what it sees when serving).

The report counts the tokens routed to each expert in either mode. Fallback (never a NaN or zero scale):
an expert whose statistics saw no token (only possible in ``"routed"`` mode) gets the union range of the
other experts of its layer (min of their minima, max of their maxima) and is listed under ``fallbacks``.
A module or experts block that never ran at all has no range to fall back on: that is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dsq.errors import QuantInputError
from dsq.qtypes import ActStats

__all__ = ["collect_act_stats", "iter_batches", "run_batch"]

EXPERT_MODES = ("all", "routed")


def iter_batches(calib_data) -> Iterable:
    """One batch (tensor or dict) as itself, a 1-D token tensor as one sequence, else the iterable's items."""
    if isinstance(calib_data, torch.Tensor):
        yield calib_data.unsqueeze(0) if calib_data.ndim == 1 and not calib_data.is_floating_point() else calib_data
    elif isinstance(calib_data, dict):
        yield calib_data
    else:
        yield from calib_data


def run_batch(model: nn.Module, batch) -> None:
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, (list, tuple)):
        model(*batch)
    else:
        model(batch)


def _routed_args(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    names = ("hidden_states", "top_k_index", "top_k_weights")
    vals = list(args) + [kwargs[n] for n in names[len(args):] if n in kwargs]
    if len(vals) < 2:
        raise QuantInputError(f"experts block was called with {len(args)} positional args and kwargs "
                              f"{sorted(kwargs)}; expected (hidden_states, top_k_index, top_k_weights)")
    return vals[0], vals[1]


class _ExpertRecorder:
    """Forward hook of one fused experts block (module docstring)."""

    def __init__(self, name: str, module: nn.Module, gate_up: torch.Tensor, down: torch.Tensor, mode: str):
        self.name, self.module, self.mode = name, module, mode
        self.gate_up, self.down = gate_up, down
        e = gate_up.shape[0]
        self.gu = [ActStats.empty() for _ in range(e)]
        self.dn = [ActStats.empty() for _ in range(e)]
        self.routed = [0] * e
        self.tokens = 0
        act = getattr(module, "act_fn", None)
        self.act = act if act is not None else F.silu

    @torch.no_grad()
    def __call__(self, module, args, kwargs, output) -> None:
        hidden, ids = _routed_args(args, kwargs)
        x = hidden.reshape(-1, hidden.shape[-1])
        ids = ids.reshape(x.shape[0], -1)
        self.tokens += x.shape[0]
        counts = torch.bincount(ids.flatten().clamp(min=0), minlength=len(self.gu))
        for e in range(len(self.gu)):
            self.routed[e] += int(counts[e])
            xe = x if self.mode == "all" else x[(ids == e).any(dim=-1)]
            if xe.shape[0] == 0:
                continue
            self.gu[e].update(xe)
            gate, up = F.linear(xe.to(self.gate_up.dtype), self.gate_up[e]).chunk(2, dim=-1)
            self.dn[e].update(self.act(gate) * up)

    def finish(self) -> tuple[dict[str, list[ActStats]], dict, list[str]]:
        if self.tokens == 0:
            raise QuantInputError(f"experts block {self.name} never ran during calibration, so its static "
                                  "activation scales have no data; give calib_data that reaches it or use a "
                                  "dynamic scheme for it")
        fallbacks = []
        seen = [e for e, s in enumerate(self.gu) if s.num_tokens > 0]
        for e, (gu, dn) in enumerate(zip(self.gu, self.dn)):
            if gu.num_tokens > 0:
                continue
            # documented fallback: the union range of the experts of this layer that saw tokens
            for mine, pool in ((gu, self.gu), (dn, self.dn)):
                mine.min_val = min(pool[j].min_val for j in seen)
                mine.max_val = max(pool[j].max_val for j in seen)
            fallbacks.append(f"{self.name} expert {e}: no tokens; used the union range of its layer's experts")
        report = {"tokens": self.tokens, "routed_tokens": list(self.routed),
                  "stat_tokens": [s.num_tokens for s in self.gu],
                  "fallback_experts": [e for e, s in enumerate(self.gu) if s.num_tokens == 0]}
        return {"gate_up": self.gu, "down": self.dn}, report, fallbacks


def collect_act_stats(model: nn.Module, linears: dict[str, nn.Module], experts: dict[str, nn.Module],
                      calib_data, adapter, expert_mode: str = "all", progress: bool = True) -> tuple[dict, dict]:
    """Run ``model`` over ``calib_data`` and return ``(stats, report)``.

    ``stats[name]`` is an ActStats for each Linear in ``linears`` and ``{"gate_up": [E], "down": [E]}`` lists
    of ActStats for each experts block in ``experts``. ``report`` (plain JSON data) gives batches, tokens
    per module, routed tokens per expert, and the fallbacks taken.
    """
    from tqdm.auto import tqdm

    if expert_mode not in EXPERT_MODES:
        raise QuantInputError(f"expert_mode must be one of {EXPERT_MODES}, got {expert_mode!r}")
    if calib_data is None:
        names = sorted(linears) + sorted(experts)
        raise QuantInputError("static activation schemes need calib_data (token batches) for: "
                              + ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else ""))
    lin_stats = {n: ActStats.empty() for n in linears}
    recorders = {}
    handles = []
    for name, mod in linears.items():
        def pre_hook(module, args, _s=lin_stats[name]):
            x = args[0]
            _s.update(x.detach().reshape(-1, x.shape[-1]))
        handles.append(mod.register_forward_pre_hook(pre_hook))
    for name, mod in experts.items():
        gate_up, down = adapter.expert_tensors(mod, name)
        rec = _ExpertRecorder(name, mod, gate_up.detach(), down.detach(), expert_mode)
        recorders[name] = rec
        handles.append(mod.register_forward_hook(rec, with_kwargs=True))
    was_training = model.training
    model.eval()
    batches = 0
    try:
        with torch.no_grad():
            for batch in tqdm(iter_batches(calib_data), desc="calibrating", unit="batch", disable=not progress):
                run_batch(model, batch)
                batches += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    never = [n for n, s in lin_stats.items() if s.num_tokens == 0]
    if never:
        raise QuantInputError(f"module(s) never ran during calibration ({batches} batches), so their static "
                              f"activation scales have no data: {', '.join(never)}; give calib_data that reaches "
                              "them or use a dynamic scheme for them")
    stats: dict = dict(lin_stats)
    report = {"expert_mode": expert_mode, "batches": batches,
              "modules": {n: {"tokens": s.num_tokens, "min": s.min_val, "max": s.max_val}
                          for n, s in lin_stats.items()},
              "experts": {}, "fallbacks": []}
    for name, rec in recorders.items():
        stats[name], report["experts"][name], fallbacks = rec.finish()
        report["fallbacks"] += fallbacks
    return stats, report
