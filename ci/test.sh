#!/usr/bin/env bash
# The test command (README "Run the tests"): installs everything into .venv, then lint, tests and conformance.
# CPU only: the cuda backend's Triton kernels run in the Triton interpreter (TRITON_INTERPRET=1) and the ascend
# backend runs against its CPU emulation of the torch_npu ops (--emulate). Reports land in ci-reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/install.sh
ruff check .
export TRITON_INTERPRET=1
python -m pytest -q -p no:cacheprovider tests conformance "$@"
mkdir -p ci-reports
dsq conformance --backend cpu --report ci-reports/conformance-cpu.md
dsq conformance --backend example-torch --report ci-reports/conformance-example.md
dsq conformance --backend ascend --emulate --report ci-reports/conformance-ascend-emulated.md
dsq conformance --backend cuda --quick --report ci-reports/conformance-cuda-interpreter.md
echo "conformance reports: ci-reports/"
