"""Turn a pytest-benchmark JSON file of test_bench_cpu_calibrate_pack.py into the markdown table of
docs/benchmarks/cpu-reference.md: MB/s of bf16 input per scheme and layer (best of the rounds, and mean).

    python benchmarks/cpu/summarize.py bench-cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarize(data: dict) -> str:
    mi = data["machine_info"]
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    layers: list[str] = []
    for b in data["benchmarks"]:
        info = b["extra_info"]
        mb = info["input_mb_bf16"]
        label = f"{info['layer']} {info['shape'][0]}x{info['shape'][1]}"
        if label not in layers:
            layers.append(label)
        rows.setdefault(info["scheme"], {})[label] = (mb / b["stats"]["min"], mb / b["stats"]["mean"])
    head = "| scheme | " + " | ".join(layers) + " |"
    rule = "|" + "---|" * (len(layers) + 1)
    body = [f"| {s} | " + " | ".join(f"{v[label][0]:.0f} ({v[label][1]:.0f})" if label in v else "-"
                                     for label in layers) + " |" for s, v in rows.items()]
    cpu = mi.get("cpu", {})
    return "\n".join([
        f"- machine: {cpu.get('brand_raw', mi.get('processor', '?'))}, {cpu.get('count', '?')} logical cores, "
        f"{mi.get('system')} {mi.get('release')}",
        f"- python {mi.get('python_version')}; date {data.get('datetime', '?')}",
        "", head, rule, *body, ""])


def main(argv: list[str]) -> int:
    data = json.loads(Path(argv[1]).read_text())
    print(summarize(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
