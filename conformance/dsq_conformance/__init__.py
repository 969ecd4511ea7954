"""dsq conformance suite: prove that a backend computes what the numpy reference computes.

calibrate, pack, unpack and quantize_activation must match the reference bit for bit; matmul and moe must
lie within per-scheme tolerances of a float64 computation on the reference's quantized operands
(:mod:`dsq_conformance.tolerances`, docs/conformance.md). Entry points::

    dsq conformance --backend NAME [--report FILE] [--emulate] [--quick] [--json]
    pytest conformance --backend NAME [--emulate] [--quick]

or from Python: ``dsq_conformance.run_conformance("cuda", quick=True).passed``.
"""

from .report import CellResult, ConformanceReport
from .runner import VARIANTS, load_backend, run_cell, run_conformance, schemes_under_test

__all__ = ["run_conformance", "run_cell", "schemes_under_test", "load_backend", "ConformanceReport",
           "CellResult", "VARIANTS"]
