"""Load a script of benchmarks/ as a module, so its pure functions can be tested on the committed results."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load(relpath: str):
    """The module at ROOT / relpath (e.g. "benchmarks/cuda/ncu_stalls.py"), executed fresh."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
