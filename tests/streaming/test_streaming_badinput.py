"""Bad input: a clear error naming the file and tensor, nothing half-written at DST, and a rerun resumes."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch
from safetensors import safe_open
from streaming_helpers import assert_same_tensors, read_all

from dsq.errors import CheckpointError, SchemeError
from dsq.streaming import quantize_checkpoint
from dsq.streaming.manifest import Staging
from dsq.streaming.source import SourceCheckpoint
from dsq.streaming.st_format import StreamWriter, read_header
from dsq.streaming.synthetic import write_synthetic

RECIPE = "deepseek-w4afp8"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    d = tmp_path_factory.mktemp("pristine") / "ckpt"
    write_synthetic(d, "tiny")
    out = tmp_path_factory.mktemp("clean") / "out"
    quantize_checkpoint(d, out, RECIPE, progress=False)
    return d, out


@pytest.fixture
def src(pristine, tmp_path):
    d = tmp_path / "src"
    shutil.copytree(pristine[0], d)
    return d


def _nothing_at(dst) -> None:
    assert not dst.exists()
    staging = Staging(dst)
    if staging.dir.exists():
        assert not [p for p in staging.dir.iterdir() if ".tmp-" in p.name]


def _rewrite_shard(path, transform) -> None:
    """Rewrite one source shard with ``transform(dict of tensors) -> dict``."""
    with safe_open(str(path), framework="pt") as f:  # clones: the file is rewritten below
        tensors = {n: f.get_tensor(n).clone() for n in read_header(path)[0]}
    tensors = transform(tensors)
    w = StreamWriter(path, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()], {"format": "pt"})
    for n, t in tensors.items():
        w.write(n, t)
    w.close()


def test_truncated_shard(src, pristine, tmp_path):
    shard = src / "model-00003-of-00010.safetensors"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="model-00003-of-00010.safetensors is truncated.*tensor '"):
        quantize_checkpoint(src, tmp_path / "out", RECIPE, progress=False)
    _nothing_at(tmp_path / "out")
    shard.write_bytes(good)
    assert quantize_checkpoint(src, tmp_path / "out", RECIPE, progress=False)["complete"]
    assert_same_tensors(read_all(tmp_path / "out"), read_all(pristine[1]))


def test_corrupt_header(src, tmp_path):
    shard = src / "model-00005-of-00010.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:20] = b"\xff" * 12
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model-00005-of-00010.safetensors is corrupt"):
        quantize_checkpoint(src, tmp_path / "out", RECIPE, progress=False)
    _nothing_at(tmp_path / "out")


def test_index_points_at_missing_file(src, tmp_path):
    idx = src / "model.safetensors.index.json"
    data = json.loads(idx.read_text())
    data["weight_map"]["model.norm.weight"] = "model-00099-of-00010.safetensors"
    idx.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="maps tensor 'model.norm.weight' to model-00099-of-00010.safetensors, "
                                              "which does not exist"):
        quantize_checkpoint(src, tmp_path / "out", RECIPE, progress=False)
    _nothing_at(tmp_path / "out")


def test_missing_scale_partner(src, pristine, tmp_path):
    shard = src / "model-00002-of-00010.safetensors"
    names = list(SourceCheckpoint(src).by_name[shard.name].tensors)
    victim = next(n for n in names if n.endswith("_scale_inv"))
    saved = {}

    def drop(t):
        saved[victim] = t.pop(victim)
        return t

    _rewrite_shard(shard, drop)
    idx = src / "model.safetensors.index.json"
    good_index = idx.read_text()
    data = json.loads(good_index)
    del data["weight_map"][victim]
    idx.write_text(json.dumps(data))
    weight = victim.removesuffix("_scale_inv")
    with pytest.raises(CheckpointError, match=f"tensor '{weight}' in {shard.name} is float8_e4m3fn but its scale "
                                              f"partner '{victim}' is missing"):
        quantize_checkpoint(src, tmp_path / "out", RECIPE, progress=False)
    _nothing_at(tmp_path / "out")
    shutil.copy(pristine[0] / shard.name, shard)
    idx.write_text(good_index)
    assert quantize_checkpoint(src, tmp_path / "out", RECIPE, progress=False)["complete"]


def test_scale_partner_in_another_shard_is_found(src, pristine, tmp_path):
    """DeepSeek's index may put a weight and its weight_scale_inv in different files."""
    a, b = src / "model-00004-of-00010.safetensors", src / "model-00005-of-00010.safetensors"
    victim = next(n for n in SourceCheckpoint(src).by_name[a.name].tensors if n.endswith("_scale_inv"))
    moved = {}

    def take(t):
        moved[victim] = t.pop(victim)
        return t

    _rewrite_shard(a, take)
    _rewrite_shard(b, lambda t: {**t, **moved})
    idx = src / "model.safetensors.index.json"
    data = json.loads(idx.read_text())
    data["weight_map"][victim] = b.name
    idx.write_text(json.dumps(data))
    quantize_checkpoint(src, tmp_path / "out", RECIPE, progress=False)
    assert_same_tensors(read_all(tmp_path / "out"), read_all(pristine[1]))


def test_disk_full_then_resume(src, pristine, tmp_path):
    """The disk fills while the 4th shard is written: error names file and tensor, no partial file, rerun resumes."""
    opened = []

    class FullDisk:
        def __init__(self, path, mode):
            self.f = open(path, mode)
            self.left = 30000 if len(opened) == 3 else 1 << 40
            opened.append(path)

        def write(self, data):
            n = memoryview(data).nbytes
            if n > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= n
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    dst = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"cannot write tensor '.*' of .*model-00004-of-00010.safetensors"
                                              r".*: the disk is full"):
        quantize_checkpoint(src, dst, RECIPE, progress=False, opener=FullDisk)
    _nothing_at(dst)
    assert len(Staging(dst).finished()) == 3
    s = quantize_checkpoint(src, dst, RECIPE, progress=False)
    assert s["complete"] and s["shards_skipped"] == 3
    assert_same_tensors(read_all(dst), read_all(pristine[1]))


def test_nan_weight_names_file_and_tensor_then_resume(src, pristine, tmp_path):
    shard = src / "model-00006-of-00010.safetensors"
    victim = next(n for n, i in SourceCheckpoint(src).by_name[shard.name].tensors.items() if i.dtype == "F8_E4M3")

    def poison(t):
        w = t[victim].view(torch.uint8).clone()
        w[0, 0] = 0x7F  # e4m3fn NaN
        t[victim] = w.view(torch.float8_e4m3fn)
        return t

    _rewrite_shard(shard, poison)
    dst = tmp_path / "out"
    with pytest.raises(CheckpointError, match=f"{shard.name}: tensor '{victim}'.*NaN"):
        quantize_checkpoint(src, dst, RECIPE, progress=False)
    _nothing_at(dst)
    shutil.copy(pristine[0] / shard.name, shard)
    s = quantize_checkpoint(src, dst, RECIPE, progress=False)
    assert s["complete"] and s["shards_skipped"] == 5  # shards 1-5 were done before the bad one
    assert_same_tensors(read_all(dst), read_all(pristine[1]))


def test_static_activation_recipe_needs_calibration(src, tmp_path):
    with pytest.raises(SchemeError, match="self_attn.*W8A8.*calibration data.*--skip-calibrated"):
        quantize_checkpoint(src, tmp_path / "out", "deepseek-w4a8", progress=False)
    _nothing_at(tmp_path / "out")
    s = quantize_checkpoint(src, tmp_path / "out", "deepseek-w4a8", progress=False, skip_calibrated=True)
    assert len(s["skipped_calibrated"]) == 15 and "W4A8_DYNAMIC" in s["stats"]


def test_ascend_refuses_schemes_it_cannot_store(src, tmp_path):
    from dsq.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="module model.layers.0.mlp.down_proj: scheme FP8_BLOCK .* no msModelSlim"):
        quantize_checkpoint(src, tmp_path / "out", RECIPE, format="ascend", progress=False)
    _nothing_at(tmp_path / "out")
