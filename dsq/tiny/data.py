"""Training and held-out text for the embedded tiny model, and the deterministic builder that makes them.

Source: the top-level ``*.py`` modules of the CPython 3.11.7 standard library (``Lib/*.py``: code,
docstrings and comments in English), licensed under the PSF License Agreement (``LICENSE-PSF.txt`` next
to this file). Both texts are committed (``train.txt.gz``, ``heldout.txt``); :func:`build_corpus`
rebuilds them byte for byte from a Python 3.11.7 installation and :data:`MANIFEST` pins their SHA-256.

Layout of each text: for every module, in sorted file-name order, a header line
``# ===== <name>.py =====\\n`` followed by the file's bytes exactly as on disk (all are UTF-8, LF line
endings), then ``\\n``. The held-out text is the modules in :data:`HELDOUT_MODULES`; the training text is
every other top-level module. No module is in both.

Rebuild: ``python -m dsq.tiny.data --stdlib /path/to/lib/python3.11 --check`` (``--write`` replaces the
committed files, after checking the hashes).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from dsq.errors import DsqError

HERE = Path(__file__).resolve().parent
TRAIN_PATH = HERE / "train.txt.gz"
HELDOUT_PATH = HERE / "heldout.txt"
MANIFEST_PATH = HERE / "data_manifest.json"

#: modules kept out of training; their text is the fixed evaluation set (about 81 KB)
HELDOUT_MODULES = ("colorsys.py", "fractions.py", "graphlib.py", "sched.py", "shlex.py", "textwrap.py")

#: the interpreter whose Lib/ the committed texts come from
SOURCE_VERSION = "3.11.7"


class DataError(DsqError, ValueError):
    """A corpus file is missing or does not match the committed manifest."""


def _module_text(paths: list[Path]) -> bytes:
    out = bytearray()
    for p in paths:
        out += f"# ===== {p.name} =====\n".encode()
        data = p.read_bytes()
        data.decode("utf-8")  # every stdlib module is UTF-8; fail loudly if a source tree is not
        out += data + b"\n"
    return bytes(out)


def build_corpus(stdlib: str | os.PathLike) -> tuple[bytes, bytes]:
    """Return ``(train_bytes, heldout_bytes)`` built from the ``*.py`` files directly in ``stdlib``."""
    root = Path(stdlib)
    files = sorted(root.glob("*.py"), key=lambda p: p.name)
    if not files:
        raise DataError(f"no *.py files in {root}; pass the lib/python3.11 directory of Python {SOURCE_VERSION}")
    names = {p.name for p in files}
    missing = [m for m in HELDOUT_MODULES if m not in names]
    if missing:
        raise DataError(f"{root} lacks the held-out modules {missing}")
    held = [p for p in files if p.name in HELDOUT_MODULES]
    train = [p for p in files if p.name not in HELDOUT_MODULES]
    return _module_text(train), _module_text(held)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest() -> dict:
    return json.loads(MANIFEST_PATH.read_text())


def load_train_bytes() -> bytes:
    """The committed training text (decompressed), checked against the manifest hash."""
    if not TRAIN_PATH.exists():
        raise DataError(f"training text {TRAIN_PATH} is missing")
    data = gzip.decompress(TRAIN_PATH.read_bytes())
    want = load_manifest()["train"]["sha256"]
    if sha256(data) != want:
        raise DataError(f"{TRAIN_PATH} does not match data_manifest.json (sha256 {sha256(data)} != {want})")
    return data


def load_heldout_bytes(path: str | os.PathLike | None = None) -> bytes:
    """The held-out evaluation text: the committed one by default, or any UTF-8/binary file given."""
    p = Path(path) if path is not None else HELDOUT_PATH
    if not p.is_file():
        raise DataError(f"evaluation text {p} does not exist or is not a file")
    data = p.read_bytes()
    if not data:
        raise DataError(f"evaluation text {p} is empty")
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; these are package data
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Rebuild the tiny model's training/held-out text from CPython Lib/.")
    ap.add_argument("--stdlib", default=os.path.dirname(os.__file__),
                    help="directory holding the standard library *.py files (default: this interpreter's)")
    ap.add_argument("--check", action="store_true", help="compare with data_manifest.json; exit 1 on mismatch")
    ap.add_argument("--write", action="store_true", help="write train.txt.gz, heldout.txt and the manifest")
    args = ap.parse_args(argv)
    train, held = build_corpus(args.stdlib)
    info = {"source": f"CPython {SOURCE_VERSION} Lib/*.py (top level)", "licence": "PSF License Agreement",
            "heldout_modules": list(HELDOUT_MODULES),
            "train": {"bytes": len(train), "sha256": sha256(train)},
            "heldout": {"bytes": len(held), "sha256": sha256(held)}}
    print(json.dumps(info, indent=2))
    if args.check:
        want = load_manifest()
        ok = all(want[k]["sha256"] == info[k]["sha256"] for k in ("train", "heldout"))
        print("matches the committed manifest" if ok else "DOES NOT match the committed manifest")
        if not ok:
            return 1
    if args.write:
        # mtime=0 and no file name in the header keep the gzip bytes reproducible too
        _atomic_write(TRAIN_PATH, gzip.compress(train, compresslevel=9, mtime=0))
        _atomic_write(HELDOUT_PATH, held)
        _atomic_write(MANIFEST_PATH, (json.dumps(info, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
