"""Atomic checkpoint directories: write everything into a hidden sibling, rename it into place at the end.

A failed or interrupted save leaves no directory at the target path (the temporary sibling is removed on an
exception; after a hard kill only a ``.<name>.dsq-tmp-*`` sibling can remain, never a partial checkpoint at
the target). An existing target is refused unless ``overwrite=True``; then the old directory is first
renamed aside and deleted only after the new one is in place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dsq.errors import CheckpointError

__all__ = ["atomic_directory"]


@contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; on normal exit it becomes ``target``."""
    target = Path(target).absolute()
    if target.exists() and not overwrite:
        raise CheckpointError(f"output directory {target} already exists; pass overwrite=True to replace it")
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"output path {target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.dsq-tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if target.exists():
            old = target.parent / f".{target.name}.dsq-old-{tag}"
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous checkpoint back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
