"""Input shards of a batch run: discovery, column checks and output names (no Ray here).

A shard is one input file; its answers go to one output file, written atomically, so an
output file that exists is complete and a rerun skips it. Everything here runs on the
driver before any actor starts, reading at most a file's footer or first line.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pocketqa.errors import PocketQAError, missing_extra

REQUIRED_COLUMNS = ("id", "question", "context")
# input suffix -> reader name
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".csv": "csv"}
OUT_SUFFIXES = {"parquet": ".parquet", "jsonl": ".jsonl"}


@dataclass(frozen=True)
class Shard:
    """One input file and where its answers go.

    Attributes:
        source: The input file (absolute).
        fmt: Its reader: "parquet", "json" (JSON Lines) or "csv".
        out: The output file.
        rows: Rows in the file when cheap to know (Parquet footers), else None.
    """

    source: Path
    fmt: str
    out: Path
    rows: int | None = None


def input_format(path: Path) -> str:
    """The reader for an input file name, or a PocketQAError naming the accepted suffixes."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PocketQAError(f"--data {path}: not a row file; expected {', '.join(FORMATS)} "
                            "(columns id, question, context)")
    return fmt


def find_inputs(data: str | os.PathLike) -> tuple[list[Path], Path]:
    """The input files of ``--data`` (a file, a directory or a glob), sorted, and their root.

    The root is what output names are made relative to: the directory given, or the
    deepest directory holding every file matched.
    """
    text = str(data)
    path = Path(text)
    if path.is_file():
        files, root = [path], path.parent
    elif path.is_dir():
        # names starting with . or _ are other tools' bookkeeping (_SUCCESS, .part-0.crc, temp files)
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
                       and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
        root = path
        if not files:
            raise PocketQAError(f"--data {path}: no {', '.join(FORMATS)} files in this directory")
    elif glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise PocketQAError(f"--data {text}: the pattern matches no files")
        root = Path(os.path.commonpath([str(p.resolve().parent) for p in files]))
    else:
        raise PocketQAError(f"--data {path}: no such file or directory")
    files = [p.resolve() for p in files]
    return files, root.resolve()


def columns_of(path: Path, fmt: str) -> tuple[list[str], int | None]:
    """The column names of an input file and its row count when the footer gives it.

    Reads a Parquet footer, a JSON Lines file's first non-blank line or a CSV header;
    an unreadable file raises a PocketQAError naming it.
    """
    try:
        if fmt == "parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise missing_extra("pyarrow", "ray") from None
            meta = pq.read_metadata(path)
            return list(meta.schema.to_arrow_schema().names), meta.num_rows
        with open(path, encoding="utf-8", newline="") as f:
            if fmt == "csv":
                return next(csv.reader(f), []), None
            for n, line in enumerate(f, 1):
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise PocketQAError(f"{path}: line {n} is not a JSON object (one object per line expected)")
                    return list(record), None
            return list(REQUIRED_COLUMNS), 0  # an empty file: no rows, nothing to check
    except PocketQAError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise PocketQAError(f"{path}: cannot read as {fmt} rows ({e})") from None


def plan_shards(data: str | os.PathLike, out_dir: Path, out_format: str) -> list[Shard]:
    """Every input shard of ``data`` with its output file, columns checked up front.

    Output files mirror the input files' paths under their root, with the output suffix:
    ``in/a/part-0.jsonl`` -> ``out/a/part-0.parquet``.

    Raises:
        PocketQAError: naming the file that lacks a required column or cannot be read, or
            two inputs that would write the same output file.
    """
    files, root = find_inputs(data)
    out_dir = Path(out_dir).resolve()
    if Path(data).is_dir() and (out_dir == root or root in out_dir.parents):
        raise PocketQAError(f"--out {out_dir} is inside the input directory {root}: a rerun would read the answers "
                            "as questions; pick an output directory outside it")
    shards, seen = [], {}
    for path in files:
        fmt = input_format(path)
        columns, rows = columns_of(path, fmt)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise PocketQAError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
                                f"each row needs {', '.join(REQUIRED_COLUMNS)}")
        out = (out_dir / path.relative_to(root)).with_suffix(OUT_SUFFIXES[out_format])
        if out == path:
            raise PocketQAError(f"--out {out_dir}: the answers to {path} would replace it; pick another directory")
        if out in seen:
            raise PocketQAError(f"{seen[out]} and {path} would both write {out}; rename one of them")
        seen[out] = path
        shards.append(Shard(source=path, fmt=fmt, out=out, rows=rows))
    return shards


def pending(shards: list[Shard], overwrite: bool) -> list[Shard]:
    """The shards still to do: those without an output file (written atomically, so complete), or all."""
    return list(shards) if overwrite else [s for s in shards if not s.out.is_file()]
