"""Committed training / held-out text: hashes, disjointness, and the byte-for-byte rebuild."""

import gzip
import os
import re

import pytest

from dsq.tiny import data


def _modules(text: bytes) -> list[str]:
    return re.findall(rb"^# ===== (\S+) =====$", text, flags=re.M)


def test_tiny_data_matches_manifest_and_is_disjoint():
    train = data.load_train_bytes()  # raises if the sha256 differs from the manifest
    held = data.load_heldout_bytes()
    man = data.load_manifest()
    assert len(train) == man["train"]["bytes"] and len(held) == man["heldout"]["bytes"]
    assert data.sha256(held) == man["heldout"]["sha256"]
    tr, he = set(_modules(train)), set(_modules(held))
    assert {m.decode() for m in he} == set(data.HELDOUT_MODULES)
    assert not tr & he and len(tr) > 100


def test_tiny_data_rejects_corrupt_train(tmp_path, monkeypatch):
    bad = tmp_path / "train.txt.gz"
    bad.write_bytes(gzip.compress(b"not the corpus"))
    monkeypatch.setattr(data, "TRAIN_PATH", bad)
    with pytest.raises(data.DataError, match="does not match"):
        data.load_train_bytes()


def test_tiny_data_missing_eval_file(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_heldout_bytes(tmp_path / "nope.txt")


STDLIB = "/root/.pyenv/versions/3.11.7/lib/python3.11"


@pytest.mark.skipif(not os.path.isfile(os.path.join(STDLIB, "textwrap.py")),
                    reason="needs the CPython 3.11.7 standard library the corpus was built from")
def test_tiny_data_rebuilds_byte_for_byte():
    train, held = data.build_corpus(STDLIB)
    assert data.sha256(train) == data.load_manifest()["train"]["sha256"]
    assert held == data.load_heldout_bytes()
