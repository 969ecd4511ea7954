#!/usr/bin/env bash
# Sourced by ci/*.sh and the README commands: create .venv and install dsq with its test extras.
# torch goes first and pinned: 2.13.0 is the CPU wheel on disk; any other spec may pull GBs of CUDA packages.
set -euo pipefail
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
source .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test,cuda,hf,plot]"
# vendor-style example backends live in their own packages with their own entry points
for plugin in examples/*/pyproject.toml; do
  if [ -f "$plugin" ]; then python -m pip install -q -e "$(dirname "$plugin")"; fi
done
