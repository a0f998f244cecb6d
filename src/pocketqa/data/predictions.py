"""Prediction rows on disk: one row per question, as JSON Lines or Parquet.

The row layout is what ``QuestionAnswerer.records`` returns (``PREDICTION_COLUMNS``).
Parquet files carry the run's metadata (model name, threshold, ...) in the schema's
key-value metadata under ``pocketqa``; JSON Lines files carry none (one object per line).
Writes are atomic: a reader never sees half a file, and a crash leaves the old file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from pocketqa.data.files import atomic_path, open_text
from pocketqa.errors import PocketQAError, missing_extra

PREDICTION_COLUMNS = ("id", "answer", "start", "end", "score", "null_odds", "answerability", "abstained")
ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
METADATA_KEY = b"pocketqa"


def row_format(path: str | os.PathLike) -> str | None:
    """"jsonl" or "parquet" for a prediction-rows file name, else None (the official JSON)."""
    name = str(path).lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return None


def _arrow_schema():
    try:
        import pyarrow as pa
    except ImportError:
        raise missing_extra("pyarrow", "data") from None
    return pa, pa.schema([
        ("id", pa.string()), ("answer", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
        ("score", pa.float64()), ("null_odds", pa.float64()), ("answerability", pa.float64()),
        ("abstained", pa.bool_()),
    ])


def write_prediction_rows(path: str | os.PathLike, rows: Iterable[dict], metadata: dict | None = None) -> int:
    """Writes prediction rows atomically as JSON Lines (.jsonl, .jsonl.gz) or Parquet (.parquet).

    Args:
        path: The output file; its name picks the format.
        rows: Dicts holding at least ``PREDICTION_COLUMNS`` (other keys are not written).
        metadata: JSON-able facts about the run, stored in a Parquet file's schema metadata.

    Returns:
        The number of rows written.
    """
    path = Path(path)
    fmt = row_format(path)
    if fmt is None:
        raise PocketQAError(f"{path}: prediction rows are written as .jsonl, .jsonl.gz or .parquet")
    rows = [{c: row[c] for c in PREDICTION_COLUMNS} for row in rows]
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            pa, schema = _arrow_schema()
            import pyarrow.parquet as pq

            schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata or {}).encode()})
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        else:
            with open_text(tmp, "wt", like=path) as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def read_prediction_rows(path: str | os.PathLike) -> tuple[list[dict], dict]:
    """Reads what ``write_prediction_rows`` wrote: (rows, metadata; {} for JSON Lines)."""
    path = Path(path)
    fmt = row_format(path)
    if fmt == "parquet":
        _arrow_schema()
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(METADATA_KEY, b"{}")
        return table.to_pylist(), json.loads(raw)
    if fmt == "jsonl":
        with open_text(path, "rt") as f:
            return [json.loads(line) for line in f if line.strip()], {}
    raise PocketQAError(f"{path}: not a prediction-rows file (.jsonl, .jsonl.gz or .parquet)")
