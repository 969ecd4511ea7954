"""``dsq plan MODEL --recipe R``: which module gets which scheme, counts and bytes, without loading weights.

MODEL is a Hugging Face model folder (or its config.json). The model is built from the config on the
``meta`` device, so planning a 671B checkpoint takes seconds and no memory; weights are never read.
"""

from __future__ import annotations

import os
import warnings

from dsq.errors import CheckpointError, DsqError


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="show which module gets which scheme, with bytes before/after",
                       description="Resolve a recipe against a model built from its config (no weights are "
                                   "read) and print every Linear / routed-experts block with its scheme, the "
                                   "rule that chose it, and weight bytes before and after. Exit status 2 when "
                                   "a scheme does not fit a layer or the backend lacks it.")
    p.add_argument("model", help="Hugging Face model folder or config.json")
    p.add_argument("--recipe", "-r", required=True, help="preset, scheme name, or .yaml/.json recipe file")
    p.add_argument("--backend", "-b", help="also check that this backend supports every planned scheme")
    p.add_argument("--summary", action="store_true", help="per-scheme summary only, no per-module table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def model_from_config(path: str):
    """A transformers model built from ``path`` (folder or config.json) on the meta device."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as exc:
        raise DsqError(f"dsq plan needs transformers to build the model from its config: {exc}") from None
    folder = os.path.dirname(path) if path.endswith(".json") else path
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointError(f"{folder} has no config.json; expected a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError for unknown or broken configs
        raise CheckpointError(f"{folder}/config.json could not be read by transformers: {exc}") from None
    # a checkpoint that is already quantized (DeepSeek's native FP8) is planned from its float architecture
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype or torch.bfloat16)


def run(args) -> int:
    from dsq.planning import plan

    model = model_from_config(args.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unmatched targets are printed by Plan.format / listed in JSON
        p = plan(model, args.recipe, backend=args.backend)
    if args.json:
        print(p.to_json())
    else:
        print(p.format(modules=not args.summary))
    return 2 if p.problems else 0
