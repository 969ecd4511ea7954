#!/usr/bin/env bash
# The README's first command: install dsq into .venv, then quantize the embedded tiny DeepSeek model with every
# preset, evaluate, save, reload, and print the comparison table (dsq demo). Extra arguments go to `dsq demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/install.sh
dsq demo "$@"
