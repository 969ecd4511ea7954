"""Bounded memory: peak RSS does not grow with the number of shards (each run in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys

from dsq.streaming.synthetic import SyntheticSpec, write_synthetic

SPEC = SyntheticSpec(hidden=1024, intermediate=2048, moe_intermediate=512, q_lora=256, kv_lora=128, heads=4, nope=64,
                     rope=32, v_head=64, vocab=1024, first_dense=1, experts=16, topk=2, mtp=0,
                     shard_bytes=24_000_000)


def _peak_rss(src, dst) -> tuple[int, dict]:
    code = ("import json, sys; from dsq.streaming import quantize_checkpoint; "
            "s = quantize_checkpoint(sys.argv[1], sys.argv[2], 'w4a16', progress=False, workers=1); "
            "print(json.dumps(s))")
    r = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    return s["peak_rss"], s


def test_peak_rss_does_not_grow_with_the_checkpoint(tmp_path):
    small = write_synthetic(tmp_path / "small", SPEC, exact=False, layers=2)
    large = write_synthetic(tmp_path / "large", SPEC, exact=False, layers=10)
    assert large["bytes"] > 4 * small["bytes"] and large["shards"] >= 4 * small["shards"] - 2
    rss_small, s1 = _peak_rss(tmp_path / "small", tmp_path / "o1")
    rss_large, s2 = _peak_rss(tmp_path / "large", tmp_path / "o2")
    assert s1["complete"] and s2["complete"]
    # 8x the data, same per-shard size: the peak may move by noise, not by the ~200 MB more data
    assert rss_large - rss_small < 60_000_000, (rss_small, rss_large, large["bytes"])
    assert rss_large - rss_small < (large["bytes"] - small["bytes"]) / 4
