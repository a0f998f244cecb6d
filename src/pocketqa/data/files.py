"""Atomic file writes: a reader never sees half a file, and a crash leaves the old one."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pocketqa.errors import PocketQAError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temp path beside ``path``; renames it onto ``path`` when the block succeeds.

    The temp file is removed on any failure, and an OSError (read-only place, full disk)
    becomes one PocketQAError naming the user's file, not the temp file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise PocketQAError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def open_text(path: Path, mode: str, like: str | os.PathLike | None = None, **kwargs):
    """Opens a UTF-8 text file, gzip-compressed when ``like`` (default: ``path``) ends in .gz."""
    gz = str(like if like is not None else path).lower().endswith(".gz")
    return (gzip.open if gz else open)(path, mode, encoding="utf-8", **kwargs)
