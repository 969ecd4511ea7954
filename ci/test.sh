#!/usr/bin/env bash
# The test command (README "Run the tests"): installs everything into .venv, then lint + tests.
# CPU only: the cuda backend's Triton kernels run in the Triton interpreter (TRITON_INTERPRET=1).
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/install.sh
ruff check .
export TRITON_INTERPRET=1
python -m pytest -q -p no:cacheprovider tests conformance "$@"
