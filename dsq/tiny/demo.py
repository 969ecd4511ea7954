"""``dsq demo``: quantize the embedded tiny DeepSeek-V3 model with every preset recipe and compare.

For each preset recipe (``dsq.list_recipes()``) on one backend: copy the float model, ``dsq.quantize`` it
(static-activation presets calibrate on 8 windows of the *training* text), measure held-out perplexity,
``dsq.save`` it (compressed-tensors; msModelSlim layout for ``deepseek-w4a8``), ``dsq.load`` it back on the same backend and check that the reloaded
model gives bit-identical logits on a probe (the first ``min(256, max_tokens // 4)`` held-out bytes, at least 2).
Reported per preset:

* bits per weight: ``8 * (bytes of every on-disk tensor of quantized modules, scales and zero points
  included) / (number of weights those modules replace)``;
* checkpoint size: bytes of every file in the checkpoint folder (unquantized tensors are stored in the
  model's compute dtype, float32);
* perplexity on the first ``max_tokens`` bytes of the held-out text and its change against the shipped
  bf16 weights evaluated the same way (float32 compute), in percent;
* quantize time and eval time (wall seconds on this machine).

The report (``report.md``, ``size_vs_ppl.png`` and ``results.json``) goes to the output folder, which is
refused when it already holds a report unless ``overwrite`` is set.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dsq.errors import DsqError
from dsq.tiny.data import load_heldout_bytes, load_train_bytes
from dsq.tiny.evaluate import perplexity, unigram_perplexity
from dsq.tiny.model import CONTEXT, default_model_dir, load_model

#: issue 4's targets: largest acceptable perplexity increase over bf16, percent
TARGETS = {"w8a16": 0.2, "w8a8-dynamic": 1.0, "w4a16": 5.0, "deepseek-w4a8": 3.0, "deepseek-w4afp8": 3.0}
#: checkpoint format per preset: the msModelSlim mix is written in its native (Ascend) layout, where its
#: routed experts stay 4-bit; compressed-tensors stores W4A8's two-level weights as their exact int8 product
FORMATS = {"deepseek-w4a8": "ascend"}
#: backends tried, in order, when none is given
PREFERENCE = ("cuda", "ascend", "cpu-reference")
DEFAULT_MAX_TOKENS = 4096


@dataclass
class Row:
    preset: str
    bits_per_weight: float | None
    size_bytes: int | None
    ppl: float | None
    delta_pct: float | None
    quantize_s: float | None
    eval_s: float | None
    reload: str  #: "identical", "max |diff| ..." or "-" (baseline)
    target_pct: float | None
    error: str = ""

    @property
    def met(self) -> str:
        if self.error:
            return "error"
        if self.target_pct is None or self.delta_pct is None:
            return "-"
        return "yes" if self.delta_pct <= self.target_pct else "no"


def pick_backend(name: str | None):
    """The named backend (must be available), else the first available of :data:`PREFERENCE`."""
    import dsq

    if name is not None:
        be = dsq.get_backend(name)
        ok, why = be.is_available()
        if not ok:
            raise DsqError(f"backend {be.name} cannot run here: {why}")
        return be
    for cand in PREFERENCE:
        try:
            be = dsq.get_backend(cand)
        except DsqError:
            continue
        # an accelerator backend that is "available" only through an emulator or the Triton interpreter on
        # the CPU (DSQ_EMULATE=1, TRITON_INTERPRET=1) is for testing, not the best choice for the demo
        emulated = be.name != "cpu-reference" and str(be.device).startswith("cpu")
        if be.is_available()[0] and not emulated:
            return be
    raise DsqError(f"none of the backends {PREFERENCE} is available")


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def _quantized_params(float_model: torch.nn.Module, modules: dict) -> int:
    total = 0
    for name in modules:
        mod = float_model.get_submodule(name)
        total += sum(p.numel() for n, p in mod.named_parameters() if not n.endswith("bias"))
    return total


def _calibration(train: bytes, n: int = 8) -> list[torch.Tensor]:
    """``n`` windows of CONTEXT bytes spread evenly over the training text (deterministic)."""
    step = (len(train) - CONTEXT) // n
    return [torch.tensor(list(train[i * step:i * step + CONTEXT]), dtype=torch.int64)[None] for i in range(n)]


def _probe_logits(model, probe: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = model(input_ids=probe)
    return (out.logits if hasattr(out, "logits") else out).float()


def run_preset(preset: str, float_model, backend, held: bytes, calib, probe, out: Path,
               max_tokens: int, base_ppl: float, progress: bool) -> Row:
    import dsq
    from dsq.checkpoint import inspect

    target = TARGETS.get(preset)
    try:
        model = copy.deepcopy(float_model)
        t0 = time.perf_counter()
        model = dsq.quantize(model, preset, backend=backend, calib_data=calib, progress=False)
        q_s = time.perf_counter() - t0
        res = perplexity(model, held, max_tokens=max_tokens, progress=progress, desc=f"eval {preset}")
        ckpt = out / "checkpoints" / preset
        dsq.save(model, ckpt, format=FORMATS.get(preset, "compressed-tensors"), overwrite=True)
        reloaded = dsq.load(ckpt, backend=backend)
        a, b = _probe_logits(model, probe), _probe_logits(reloaded, probe)
        diff = float((a - b).abs().max())
        reload = "identical" if torch.equal(a, b) else f"max |diff| {diff:.3g}"
        info = inspect(ckpt)
        qbytes = sum(s["bytes"] for label, s in info["schemes"].items() if label != "float")
        nparams = _quantized_params(float_model, model.dsq_info["modules"])
        return Row(preset, 8 * qbytes / nparams, _dir_bytes(ckpt), res.ppl, 100 * (res.ppl / base_ppl - 1),
                   q_s, res.seconds, reload, target)
    except DsqError as exc:
        return Row(preset, None, None, None, None, None, None, "-", target, error=str(exc))


def run_demo(backend: str | None = None, out: str | Path = "dsq-demo", overwrite: bool = False,
             presets: list[str] | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
             progress: bool = True, log=print) -> dict:
    """Run the whole demo; returns the results dict also written to ``out/results.json``."""
    import dsq
    from dsq.tiny.report import write_report

    out = Path(out)
    if (out / "report.md").exists() and not overwrite:
        raise DsqError(f"{out / 'report.md'} already exists; pass --overwrite to replace it or --out DIR")
    if max_tokens < 2:
        raise DsqError(f"--max-tokens must be at least 2, got {max_tokens}")
    names = presets or dsq.list_recipes()
    known = dsq.list_recipes()
    for n in names:
        if n not in known:
            raise dsq.UnknownNameError("recipe", n, known)
    be = pick_backend(backend)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    log(f"dsq demo: backend {be.name}; presets {', '.join(names)}; {max_tokens} held-out bytes; output {out}")
    held, train = load_heldout_bytes(), load_train_bytes()
    float_model = load_model()
    probe_len = max(2, min(CONTEXT, max_tokens // 4))  # short runs keep the (slow, exact) check short
    probe = torch.tensor(list(held[:probe_len]), dtype=torch.int64)[None]
    base = perplexity(float_model, held, max_tokens=max_tokens, progress=progress, desc="eval bf16")
    base_row = Row("bf16", 16.0, (default_model_dir() / "model.safetensors").stat().st_size, base.ppl, 0.0,
                   None, base.seconds, "-", None)
    rows = [base_row]
    calib = _calibration(train)
    for name in names:
        row = run_preset(name, float_model, be.name, held, calib, probe, out, max_tokens, base.ppl, progress)
        rows.append(row)
        log(f"  {name}: " + (f"ppl {row.ppl:.4f} ({row.delta_pct:+.3f}%), {row.bits_per_weight:.2f} bits/weight, "
                             f"reload {row.reload}" if not row.error else f"failed: {row.error}"))
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "backend": be.name,
        "machine": {"platform": platform.platform(), "cpu": _cpu(), "cores": __import__("os").cpu_count(),
                    "torch": torch.__version__, "dsq": dsq.__version__},
        "max_tokens": max_tokens, "heldout_bytes": len(held), "probe_bytes": probe_len,
        "unigram_ppl": unigram_perplexity(train, held, max_tokens),
        "total_seconds": time.perf_counter() - t_start,
        "rows": [asdict(r) | {"met": r.met} for r in rows],
    }
    write_report(out, results, rows)
    return results


def _cpu() -> str:
    from dsq.tiny.train import _cpu_name

    return _cpu_name()


def load_results(out: str | Path) -> dict:
    return json.loads((Path(out) / "results.json").read_text())
