"""``dsq quantize MODEL_DIR --recipe R --backend B --out DIR``: quantize a Hugging Face folder and save it.

MODEL_DIR is a local Hugging Face model folder with safetensors weights (never pickles). The model loads on
the CPU in its stored dtype, is planned (``--dry-run`` stops there and prints the plan), checked against the
output format before any weight is touched, quantized with :func:`dsq.quantize` and written with
:func:`dsq.save` (atomic; tokenizer and generation config carried over).

``--scale-dtype auto`` (default) sets every scheme's ``scale_dtype`` to the model dtype for
compressed-tensors output (that format stores scales in the model dtype; see
:mod:`dsq.checkpoint.compressed_tensors`) and keeps the recipe's own for ``--format ascend``.

``--calib FILE`` (static activation schemes) holds calibration token ids: ``.json`` / ``.jsonl`` (a list of
token-id lists, or objects with ``input_ids``), ``.safetensors`` (an ``input_ids`` tensor [B, S]), or
``.txt`` (one sample per non-empty line, tokenized with MODEL_DIR's tokenizer, at most 512 tokens each).
"""

from __future__ import annotations

import json
from pathlib import Path

from dsq.errors import CheckpointError, DsqError

_SCALE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_parser(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a Hugging Face model folder and save a checkpoint",
                       description="Quantize a local Hugging Face model folder (safetensors) with a recipe on a "
                                   "backend and write a compressed-tensors or ascend (msModelSlim) checkpoint.")
    p.add_argument("model", help="Hugging Face model folder with config.json and *.safetensors")
    p.add_argument("--recipe", "-r", required=True, help="preset, scheme name, or .yaml/.json recipe file")
    p.add_argument("--backend", "-b", default="cpu", help="backend that quantizes the weights (default cpu)")
    p.add_argument("--out", "-o", help="output checkpoint directory (required unless --dry-run)")
    p.add_argument("--calib", help="calibration token ids (.json/.jsonl/.safetensors/.txt) for static schemes")
    p.add_argument("--format", "-f", default="compressed-tensors", choices=["compressed-tensors", "ascend"])
    p.add_argument("--scale-dtype", default="auto", choices=_SCALE_DTYPES,
                   help="dtype of weight scales (auto: the model dtype for compressed-tensors)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit without quantizing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--max-shard-gb", type=float, default=4.0, help="largest safetensors shard (GiB)")
    p.set_defaults(func=run)


def load_calibration(path: str, model_dir: str) -> list:
    """Calibration batches ([1, S] int64 token-id tensors) from a file; see the module docstring."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"calibration file {p} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        ids = load_file(str(p)).get("input_ids")
        if ids is None or ids.ndim != 2:
            raise CheckpointError(f"{p} must hold an integer tensor 'input_ids' of shape [B, S]")
        return [ids[i: i + 1].long() for i in range(ids.shape[0])]
    if p.suffix == ".txt":
        from transformers import AutoTokenizer

        lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
        if not lines:
            raise CheckpointError(f"calibration file {p} holds no samples (expected one text sample per line)")
        try:
            tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        except Exception as exc:  # OSError (no tokenizer files), ValueError (no usable backend), ...
            raise CheckpointError(
                f"calibration file {p} is text, but no tokenizer loads from {model_dir} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); give token ids "
                "instead: a .json/.jsonl list of token-id lists or a .safetensors 'input_ids' [B, S]") from None
        return [tok(ln, return_tensors="pt", truncation=True, max_length=512)["input_ids"] for ln in lines]
    try:
        text = p.read_text()
        rows = [json.loads(ln) for ln in text.splitlines() if ln.strip()] if p.suffix == ".jsonl" else json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"calibration file {p} is not valid JSON ({exc})") from exc
    batches = []
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        ids = row.get("input_ids") if isinstance(row, dict) else row
        if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
            raise CheckpointError(f"calibration file {p}: sample {i} is not a non-empty list of token ids")
        batches.append(torch.tensor([ids], dtype=torch.long))
    if not batches:
        raise CheckpointError(f"calibration file {p} holds no samples (expected a list of token-id lists)")
    return batches


def _load_model(model_dir: str):
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as exc:
        raise DsqError(f"dsq quantize needs transformers: {exc}") from None
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json; expected a Hugging Face model folder")
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder} has no *.safetensors weights (dsq never loads pickled .bin files)")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto", use_safetensors=True,
                                                     local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot load the model in {folder}: {exc}") from exc
    return model.eval()


def run(args) -> int:
    import dsq
    from dsq.checkpoint import preflight
    from dsq.checkpoint.model_io import model_dtype
    from dsq.recipes import resolve_recipe

    if not args.dry_run and not args.out:
        raise CheckpointError("--out is required (or use --dry-run)")
    if args.out and Path(args.out).exists() and not args.overwrite and not args.dry_run:
        raise CheckpointError(f"output directory {args.out} already exists; pass --overwrite to replace it")
    model = _load_model(args.model)
    recipe = resolve_recipe(args.recipe, model)
    dtype_name = str(model_dtype(model)).removeprefix("torch.")
    scale_dtype = args.scale_dtype
    if scale_dtype == "auto":
        scale_dtype = dtype_name if args.format == "compressed-tensors" else None
    if scale_dtype is not None:
        recipe = recipe.with_scale_dtype(scale_dtype)
    plan = dsq.plan(model, recipe, args.backend)
    if args.dry_run:
        print(plan.format())
        return 0
    plan.check()
    preflight({e.name: e.scheme for e in plan.quantized}, args.format, model_dtype(model))
    calib = load_calibration(args.calib, args.model) if args.calib else None
    dsq.quantize(model, recipe, backend=args.backend, calib_data=calib, scale_dtype=None, progress=True)
    out = dsq.save(model, args.out, format=args.format, overwrite=args.overwrite,
                   max_shard_bytes=int(args.max_shard_gb * 1024**3), progress=True)
    from dsq.checkpoint.summary import format_summary

    print(format_summary(dsq.checkpoint.inspect(out)))
    return 0
