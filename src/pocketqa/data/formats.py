"""Question files in the layouts people hold, read into validated ``Example``s and written back.

Two layouts, several containers:

- SQuAD 1.1 / 2.0 JSON (``{"version", "data": [articles]}``), ``.json`` / ``.json.gz``.
- One row per question, as the datasets library's ``squad_v2``: ``id, title, context,
  question, answers: {text: [...], answer_start: [...]}`` (``title`` optional; no
  ``answers`` is fine for prediction; an empty ``answers.text`` is unanswerable), in
  ``.parquet``, ``.jsonl``, ``.json`` (an array of records), ``.csv`` (``answers`` holds
  JSON text), plain or gzipped (``.jsonl.gz``, ``.csv.gz``, ``.json.gz``); a datasets hub id
  ``hf:NAME[:CONFIG]:SPLIT``; from Python a ``datasets.Dataset`` or a list of dicts.

The format comes from the file name (a ``.json`` file's content tells SQuAD JSON, an object
with ``"data"``, from an array of rows) unless ``format`` names it. Every problem of a file
is reported at once (:mod:`pocketqa.data.rows`); what ``offsets="repair"`` changed is one
warning line.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import warnings
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from pocketqa.data.files import atomic_path, open_text
from pocketqa.data.rows import example_row, row_question
from pocketqa.data.squad import (
    BadAnswers,
    Example,
    OffsetRepairs,
    Problems,
    RawQuestion,
    build_examples,
    read_json,
    squad_questions,
    write_json_atomic,
    write_squad,
)
from pocketqa.errors import PocketQAError, SquadFormatError, missing_extra

FORMATS = ("squad", "parquet", "jsonl", "json", "csv", "hf")
HF_PREFIX = "hf:"
_SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}


def detect_format(source: str | os.PathLike) -> str:
    """The format of a file name: ``hf`` for ``hf:...``, else by extension (``.gz`` stripped).

    ``.json`` answers ``json``; :func:`read_questions` then tells SQuAD JSON from an array
    of rows by the content.
    """
    text = str(source)
    if text.startswith(HF_PREFIX):
        return "hf"
    name = text.lower().removesuffix(".gz")
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise PocketQAError(
        f"{source}: cannot tell the data format from the file name; name it .json, .jsonl, .parquet or .csv "
        f"(optionally .gz), use hf:NAME[:CONFIG]:SPLIT, or pass --format {{{','.join(FORMATS)}}}"
    )


def load_examples(
    source,
    format: str | None = None,  # noqa: A002 - the user's word (--format)
    offsets: str = "strict",
    gold: bool = True,
    hub_loader: Callable | None = None,
) -> list[Example]:
    """Reads and validates questions from a file, a hub id, a ``datasets.Dataset`` or a list of dicts.

    Args:
        source: A path (see the module docstring), ``"hf:NAME[:CONFIG]:SPLIT"``, a
            ``datasets.Dataset`` or a list of row dicts.
        format: One of ``FORMATS`` (default: from the name; rows for in-memory data).
        offsets: ``strict``, ``repair`` or ``ignore`` (see :mod:`pocketqa.data.rows`).
        gold: False for prediction: answers are not read, and empty contexts or questions
            are kept for the caller to abstain on.
        hub_loader: Called as ``hub_loader(name, config, split=split)`` for ``hf:`` ids
            (default ``datasets.load_dataset``).

    Raises:
        SquadFormatError: Every problem at once, each with its place (row, or article,
            paragraph and question id) and field.
    """
    examples, repairs, name = _load(source, format, offsets, gold, hub_loader)
    if repairs:
        warnings.warn(repairs.summary(name), UserWarning, stacklevel=2)
    return examples


def _load(source, fmt, offsets, gold, hub_loader) -> tuple[list[Example], OffsetRepairs, str]:
    if isinstance(source, (list, tuple)):
        name = "<rows>"
        problems = Problems(name)
        questions = _row_questions(source, problems)
    elif not isinstance(source, (str, os.PathLike)) and hasattr(source, "column_names"):  # a datasets.Dataset
        name = f"<{type(source).__name__}>"
        problems = Problems(name)
        questions = _row_questions(_dataset_rows(source), problems)
    else:
        name = str(source)
        problems = Problems(name)
        questions = read_questions(source, fmt, problems, hub_loader)
    examples, repairs = build_examples(questions, problems, offsets=offsets, gold=gold)
    problems.check()
    return examples, repairs, name


def read_questions(
    source: str | os.PathLike, fmt: str | None, problems: Problems, hub_loader: Callable | None = None
) -> list[RawQuestion]:
    """The unchecked questions of a file or hub id; structural problems go to ``problems``."""
    fmt = fmt or detect_format(source)
    if fmt not in FORMATS:
        raise PocketQAError(f"{source}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "hf":
        return _row_questions(_dataset_rows(_load_hub(str(source), hub_loader)), problems)
    path = Path(source)
    if not path.is_file():
        raise SquadFormatError(f"{path}: no such file")
    if fmt in ("squad", "json"):
        data = read_json(path)
        if fmt == "squad" or isinstance(data, dict):
            return squad_questions(data, problems)
        if not isinstance(data, list):
            raise SquadFormatError(f"{path}: expected SQuAD JSON (an object with 'data') or a JSON array of rows")
        return _row_questions(data, problems)
    if fmt == "jsonl":
        return _row_questions(_read_jsonl(path, problems), problems, place="line", first=1)
    if fmt == "csv":
        return _row_questions(_read_csv(path, problems), problems, first=1)
    return _row_questions(_read_parquet(path), problems)


def _row_questions(rows: Iterable, problems: Problems, place: str = "row", first: int = 0) -> list[RawQuestion]:
    questions = []
    for n, row in enumerate(rows, start=first):
        if row is None:  # a line that did not parse (already a problem)
            continue
        q = row_question(row, f"{place} {n}", problems)
        if q is not None:
            questions.append(q)
    return questions


def _open(path: Path, newline: str | None = None):
    # utf-8-sig: files saved by Windows tools start with a byte-order mark.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return open(path, encoding="utf-8-sig", newline=newline)


def _read_jsonl(path: Path, problems: Problems) -> list:
    rows = []
    try:
        with _open(path) as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    rows.append(None)
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    problems.add(f"line {n}", f"invalid JSON at column {e.colno}: {e.msg}")
                    rows.append(None)
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as e:
        raise SquadFormatError(f"{path}: cannot read as UTF-8 JSON Lines ({e})") from None
    return rows


def _read_csv(path: Path, problems: Problems) -> list:
    rows = []
    try:
        with _open(path, newline="") as f:
            reader = csv.DictReader(f)
            for n, row in enumerate(reader, start=1):
                answers = row.get("answers")
                if answers is None or not answers.strip():
                    row.pop("answers", None)
                else:
                    try:
                        row["answers"] = json.loads(answers)
                    except json.JSONDecodeError as e:
                        row["answers"] = BadAnswers(
                            f"field 'answers' must hold JSON text {{\"text\": [...], \"answer_start\": [...]}} "
                            f"({e.msg} at column {e.colno}, line {reader.line_num})")
                rows.append(row)
    except (UnicodeDecodeError, OSError, EOFError, zlib.error, csv.Error) as e:
        raise SquadFormatError(f"{path}: cannot read as UTF-8 CSV ({e})") from None
    return rows


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow", "data") from None
    return pa, pq


def _read_parquet(path: Path) -> list:
    pa, pq = _pyarrow()
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise SquadFormatError(f"{path}: cannot read as Parquet ({e})") from None


def parse_hub_id(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME:SPLIT`` or ``hf:NAME:CONFIG:SPLIT`` -> (name, config or None, split)."""
    parts = spec.removeprefix(HF_PREFIX).split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise PocketQAError(f"{spec}: expected hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT, e.g. hf:rajpurkar/squad_v2:validation")
    return parts[0], (parts[1] if len(parts) == 3 else None), parts[-1]


def _load_hub(spec: str, hub_loader: Callable | None):
    name, config, split = parse_hub_id(spec)
    if hub_loader is None:
        try:
            from datasets import load_dataset as hub_loader
        except ImportError:
            raise missing_extra("datasets", "data") from None
    try:
        return hub_loader(name, config, split=split)
    except (ValueError, FileNotFoundError, ConnectionError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PocketQAError(f"{spec}: the datasets library cannot load {name!r} (config {config!r}, split "
                            f"{split!r}): {first}") from None


def _dataset_rows(dataset) -> list:
    # to_list reads the Arrow table once; iterating row by row is ~10x slower on 130k rows.
    return dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)


# -- writing -------------------------------------------------------------------------------


def write_examples(examples: Iterable[Example], path: str | os.PathLike, format: str | None = None) -> int:  # noqa: A002
    """Writes examples atomically in the layout the name (or ``format``) says; returns how many.

    ``.json`` (and ``format="squad"``) is SQuAD 2.0 JSON; ``format="json"`` writes an array of rows.
    """
    examples = list(examples)
    path = Path(path)
    fmt = format or detect_format(path)
    if fmt == "hf":
        raise PocketQAError(f"{path}: cannot write to the hub; write .parquet, .jsonl, .json or .csv")
    if fmt == "squad" or (fmt == "json" and format is None):
        write_squad(examples, path)
        return len(examples)
    rows = [example_row(ex) for ex in examples]
    if fmt == "json":
        write_json_atomic(rows, path)
        return len(rows)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            _write_parquet(rows, tmp)
        else:
            with open_text(tmp, "wt", like=path, newline="") as f:
                if fmt == "jsonl":
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                else:
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["id"])
                    writer.writeheader()
                    for row in rows:
                        writer.writerow({**row, "answers": json.dumps(row["answers"], ensure_ascii=False)})
    return len(rows)


def _write_parquet(rows: list[dict], path: Path) -> None:
    pa, pq = _pyarrow()
    # The squad_v2 features: answer_start is int32 there too.
    schema = pa.schema([
        ("id", pa.string()), ("title", pa.string()), ("context", pa.string()), ("question", pa.string()),
        ("answers", pa.struct([("text", pa.list_(pa.string())), ("answer_start", pa.list_(pa.int32()))])),
    ])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


