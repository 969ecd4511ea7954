"""Crash safety and resuming: a stopped conversion leaves nothing at DST, and a rerun finishes it."""

from __future__ import annotations

import json

import pytest
from streaming_helpers import assert_same_tensors, read_all

from dsq.errors import CheckpointError
from dsq.streaming import quantize_checkpoint, verify_checkpoint
from dsq.streaming.manifest import MANIFEST, Staging
from dsq.streaming.synthetic import write_synthetic


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("src") / "ckpt"
    write_synthetic(d, "tiny")
    return d


@pytest.fixture(scope="module")
def clean_run(src, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "out"
    quantize_checkpoint(src, out, "deepseek-w4afp8", progress=False)
    return out


def test_stop_and_resume_gives_the_same_checkpoint(src, clean_run, tmp_path):
    dst = tmp_path / "out"
    s1 = quantize_checkpoint(src, dst, "deepseek-w4afp8", progress=False, max_shards=3)
    assert not s1["complete"] and s1["shards_done"] == 3
    assert not dst.exists()  # nothing at the destination until the end
    staging = Staging(dst)
    assert len(staging.finished()) == 3
    # a killed run can leave a temporary file behind: it is never mistaken for a finished shard
    (staging.dir / ".model-00004-of-00010.safetensors.tmp-12345").write_bytes(b"partial")
    s2 = quantize_checkpoint(src, dst, "deepseek-w4afp8", progress=False)
    assert s2["complete"] and s2["shards_skipped"] == 3 and s2["shards_done"] == s2["shards_total"] - 3
    assert not staging.dir.exists()
    assert not any(".tmp-" in p.name for p in dst.iterdir())
    assert_same_tensors(read_all(dst), read_all(clean_run))
    assert json.loads((dst / MANIFEST).read_text())["shards"] == json.loads((clean_run / MANIFEST).read_text())["shards"]
    # rerunning a finished conversion does nothing
    assert quantize_checkpoint(src, dst, "deepseek-w4afp8", progress=False).get("already_complete")


def test_damaged_finished_shard_is_redone(src, clean_run, tmp_path):
    dst = tmp_path / "out"
    quantize_checkpoint(src, dst, "deepseek-w4afp8", progress=False, max_shards=2)
    staging = Staging(dst)
    name = sorted(staging.finished())[0]
    p = staging.dir / name
    p.write_bytes(p.read_bytes()[:-10])  # size no longer matches its record
    s = quantize_checkpoint(src, dst, "deepseek-w4afp8", progress=False)
    assert s["shards_skipped"] == 1 and s["complete"]
    assert_same_tensors(read_all(dst), read_all(clean_run))


def test_resume_with_other_settings_is_refused(src, tmp_path):
    dst = tmp_path / "out"
    quantize_checkpoint(src, dst, "deepseek-w4afp8", progress=False, max_shards=1)
    with pytest.raises(CheckpointError, match="different settings.*recipe"):
        quantize_checkpoint(src, dst, "w4a16", progress=False)


def test_existing_destination_needs_overwrite(src, clean_run, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    with pytest.raises(CheckpointError, match="already exists"):
        quantize_checkpoint(src, dst, "w4a16", progress=False)
    quantize_checkpoint(src, dst, "deepseek-w4afp8", progress=False, overwrite=True)
    assert not (dst / "keep.txt").exists()
    assert_same_tensors(read_all(dst), read_all(clean_run))


def test_verify_catches_corruption_and_missing_pieces(clean_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(clean_run, out)
    assert verify_checkpoint(out)["shards"] == 10
    man = json.loads((out / MANIFEST).read_text())
    shard = sorted(man["shards"])[4]
    data = bytearray((out / shard).read_bytes())
    data[-3] ^= 0x40  # one flipped bit in the last tensor's bytes
    (out / shard).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{shard}: tensor .* CRC-32"):
        verify_checkpoint(out)
    (out / shard).unlink()
    with pytest.raises(CheckpointError, match=f"{shard} is listed in {MANIFEST} but missing"):
        verify_checkpoint(out)


def test_verify_catches_header_edits(clean_run, tmp_path):
    """A tensor renamed in a shard (same size) no longer matches the manifest."""
    import shutil

    from dsq.streaming.source import ShardReader, SourceCheckpoint
    from dsq.streaming.st_format import StreamWriter

    out = tmp_path / "copy"
    shutil.copytree(clean_run, out)
    shard = SourceCheckpoint(out).shards[2]
    r = ShardReader(shard)
    tensors = {n: r.get(n).clone() for n in shard.tensors}  # get() returns views of the file's mapping
    r.close()
    first = next(iter(tensors))
    renamed = {(n + "x" if n == first else n): t for n, t in tensors.items()}
    w = StreamWriter(shard.path, [(n, t.dtype, tuple(t.shape)) for n, t in renamed.items()])
    for n, t in renamed.items():
        w.write(n, t)
    w.close()
    with pytest.raises(CheckpointError, match="not in dsq_manifest.json|but not in the file|bytes"):
        verify_checkpoint(out)


def test_replaced_source_shard_is_converted_again(tmp_path, clean_run, src):
    import os
    import shutil

    s2 = tmp_path / "src"
    shutil.copytree(src, s2)
    dst = tmp_path / "out"
    quantize_checkpoint(s2, dst, "deepseek-w4afp8", progress=False, max_shards=3)
    finished = sorted(Staging(dst).finished())
    first = json.loads(Staging(dst).record_path(finished[0]).read_text())["source"]
    st = (s2 / first).stat()
    os.utime(s2 / first, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # e.g. downloaded again
    s = quantize_checkpoint(s2, dst, "deepseek-w4afp8", progress=False)
    assert s["shards_skipped"] == 2 and s["complete"]
    assert_same_tensors(read_all(dst), read_all(clean_run))
