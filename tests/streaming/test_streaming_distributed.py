"""torchrun with 2 CPU processes (gloo): ranks split the shards, rank 0 writes the index; same checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from streaming_helpers import assert_same_tensors, read_all

from dsq.streaming import quantize_checkpoint, verify_checkpoint
from dsq.streaming.manifest import Staging
from dsq.streaming.synthetic import write_synthetic


def _torchrun(src, dst, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dsq",
           "quantize-checkpoint", str(src), str(dst), "--recipe", "deepseek-w4afp8", "--no-progress", "--json",
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("src") / "ckpt"
    write_synthetic(d, "tiny")
    return d


def test_two_ranks_make_the_single_process_checkpoint(src, tmp_path):
    quantize_checkpoint(src, tmp_path / "one", "deepseek-w4afp8", progress=False)
    r = _torchrun(src, tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["world"] == 2 and summary["complete"]
    assert len(summary["peak_rss_per_rank"]) == 2 and summary["shards_done"] == 10
    assert_same_tensors(read_all(tmp_path / "two"), read_all(tmp_path / "one"))
    for f in ("model.safetensors.index.json", "dsq_manifest.json", "config.json"):
        a = json.loads((tmp_path / "one" / f).read_text())
        b = json.loads((tmp_path / "two" / f).read_text())
        assert a == b, f
    assert verify_checkpoint(tmp_path / "two")["tensors"] == 204


def test_a_failing_rank_stops_every_rank_and_the_rerun_resumes(src, tmp_path):
    import shutil

    from safetensors import safe_open

    from dsq.streaming.st_format import StreamWriter, read_header

    s2 = tmp_path / "src"
    shutil.copytree(src, s2)
    shard = next(p for p in sorted(s2.glob("*.safetensors"), reverse=True)
                 if any(i.dtype == "F8_E4M3" for i in read_header(p)[0].values()))
    good = shard.read_bytes()
    with safe_open(str(shard), framework="pt") as f:
        tensors = {n: f.get_tensor(n).clone() for n in read_header(shard)[0]}
    victim = next(n for n, t in tensors.items() if t.dtype == torch.float8_e4m3fn)
    w8 = tensors[victim].view(torch.uint8)
    w8[0, 0] = 0xFF  # NaN
    w = StreamWriter(shard, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()], {"format": "pt"})
    for n, t in tensors.items():
        w.write(n, t)
    w.close()
    r = _torchrun(s2, tmp_path / "out")
    assert r.returncode != 0
    assert f"tensor '{victim}'" in r.stderr and shard.name in r.stderr
    assert not (tmp_path / "out").exists()
    done = len(Staging(tmp_path / "out").finished())
    assert 0 < done < 10  # the healthy rank's shards (and the failing rank's earlier ones) are kept
    shard.write_bytes(good)
    r = _torchrun(s2, tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["shards_skipped"] == done and summary["complete"]
    verify_checkpoint(tmp_path / "out")


def test_ranks_beyond_the_gpu_count_share_gpus():
    """cuda:(LOCAL_RANK % device_count): 4 ranks on one GPU all use GPU 0; 8 ranks on 4 GPUs two per GPU."""
    from dsq.streaming.dist import Dist

    assert [Dist(r, 4, r, True).device_index(1) for r in range(4)] == [0, 0, 0, 0]
    assert [Dist(r, 8, r, True).device_index(4) for r in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert Dist(3, 8, 3, True).device_index(8) == 3
    with pytest.raises(ValueError):
        Dist().device_index(0)
