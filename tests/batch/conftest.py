"""Fixtures of the batch-engine tests: row files of the tiny questions, reference answers, Ray checks.

Test modules cannot import this file (``--import-mode=importlib``); they get its builders
through the ``kit`` fixture (``kit.write_rows(...)``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import examples

WINDOW = {"max_seq_length": 96, "doc_stride": 32, "max_query_length": 32}  # the long context gets several windows


def question_rows() -> list[dict]:
    """The tiny test questions as rows, plus one with an empty question (an abstention, not a crash)."""
    rows = [{"id": ex.id, "question": ex.question, "context": ex.context, "title": ex.title} for ex in examples()]
    rows.append({"id": "empty", "question": "  ", "context": rows[0]["context"], "title": ""})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Writes rows as Parquet, JSON Lines or CSV (by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.fixture()
def row_files(tmp_path) -> tuple[Path, list[dict]]:
    """A directory of three input shards (Parquet, JSON Lines, CSV in a subfolder) and all their rows."""
    rows = question_rows()
    root = tmp_path / "in"
    write_rows(root / "a.parquet", rows[:5])
    write_rows(root / "b.jsonl", rows[5:8])
    write_rows(root / "sub" / "c.csv", rows[8:])
    return root, rows


def reference_records(model, rows: list[dict], **kwargs) -> dict[str, dict]:
    """What single-process prediction gives for ``rows``: QuestionAnswerer.records, by id."""
    from pocketqa.batch.actor import answer_rows
    from pocketqa.inference.answerer import QuestionAnswerer

    qa = QuestionAnswerer.from_pretrained(model, device="cpu", threads=1, **kwargs)
    usable = [r for r in rows if r["question"].strip() and r["context"].strip()]
    from pocketqa.data.squad import Example

    exs = [Example(id=r["id"], title="", context=r["context"], question=r["question"]) for r in usable]
    out = {rec["id"]: rec for rec in qa.records(exs, qa.decode_examples(exs))}
    # the empty question: the abstention of a question without any span
    for rec in answer_rows(qa, ["empty"], ["  "], ["x"], qa.threshold):
        rec.pop("skipped")
        out[rec["id"]] = rec
    return {r["id"]: out[r["id"]] for r in rows}


def read_outputs(out_dir: Path) -> list[dict]:
    """Every prediction row under ``out_dir`` (all output files)."""
    from pocketqa.data.predictions import read_prediction_rows

    rows = []
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and path.suffix in (".parquet", ".jsonl"):
            rows.extend(read_prediction_rows(path)[0])
    return rows


def assert_same_answers(got: list[dict], want: dict[str, dict]) -> None:
    """Same ids (each once), texts and spans; scores within 1e-6."""
    ids = [r["id"] for r in got]
    assert sorted(ids) == sorted(want) and len(set(ids)) == len(ids)
    for row in got:
        ref = want[row["id"]]
        for key in ("answer", "start", "end", "abstained"):
            assert row[key] == ref[key], (row, ref)
        for key in ("score", "null_odds", "answerability"):
            assert abs(row[key] - ref[key]) <= 1e-6, (row, ref)


def live_ray_processes() -> set[int]:
    """Pids of running (not zombie) raylet / gcs_server processes on this machine."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state = stat[stat.rindex(")") + 2]
        if name in ("raylet", "gcs_server") and state != "Z":
            pids.add(int(entry))
    return pids


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """This file's builders and checks, for the test modules."""
    return SimpleNamespace(WINDOW=WINDOW, question_rows=question_rows, write_rows=write_rows,
                           reference_records=reference_records, read_outputs=read_outputs,
                           assert_same_answers=assert_same_answers, live_ray_processes=live_ray_processes)
