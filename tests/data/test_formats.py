"""Question files in every layout: round trips, errors with places, offset repair, the hub path."""

from __future__ import annotations

import functools
import gzip
import json
import sys
import warnings

import pytest

from helpers import CONTEXTS, squad_dict
from pocketqa.data.formats import detect_format, load_examples, parse_hub_id, write_examples
from pocketqa.data.rows import example_row
from pocketqa.data.squad import load_squad, nearest_occurrence
from pocketqa.errors import PocketQAError, SquadFormatError

# A paragraph whose text needs CSV quoting and JSON escaping, and a repeated title.
EXTRA = [("Paris", 'He said "hi, there",\nthen left: naïve — café; 10% off.',
          [("Who left?", "He", False), ("What did he say?", '"hi, there"', False), ("Where to?", None, True)])]
ROW_FILES = ["d.parquet", "d.jsonl", "d.jsonl.gz", "d.csv", "d.csv.gz", "d.rows.json", "d.rows.json.gz"]


@pytest.fixture()
def squad_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(squad_dict(CONTEXTS + EXTRA)), encoding="utf-8")
    return path


def _rows_format(name: str) -> str | None:
    return "json" if ".rows.json" in name else None  # a .json name writes SQuAD JSON unless told


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ROW_FILES)
def test_each_format_round_trips_to_the_same_examples(tmp_path, squad_file, name):
    original = load_squad(squad_file)
    rows_file = tmp_path / name
    assert write_examples(original, rows_file, format=_rows_format(name)) == len(original)
    assert load_examples(rows_file) == original  # the .json array is told from SQuAD JSON by content
    back = tmp_path / "back.json.gz"
    write_examples(load_examples(rows_file), back)
    assert load_squad(back) == original


def test_parquet_has_the_squad_v2_columns(tmp_path, squad_file):
    import pyarrow.parquet as pq

    write_examples(load_squad(squad_file), tmp_path / "d.parquet")
    table = pq.read_table(tmp_path / "d.parquet")
    assert table.column_names == ["id", "title", "context", "question", "answers"]
    first = table.to_pylist()[0]
    assert first["answers"] == {"text": ["France"], "answer_start": [first["context"].index("France")]}
    assert table.to_pylist()[3]["answers"] == {"text": [], "answer_start": []}  # unanswerable


def test_format_by_name_and_override(tmp_path, squad_file):
    assert [detect_format(n) for n in ("a.PARQUET", "a.jsonl.gz", "a.csv", "a.json.gz", "hf:x:y")] == [
        "parquet", "jsonl", "csv", "json", "hf"]
    with pytest.raises(PocketQAError, match="--format"):
        detect_format("data.txt")
    odd = tmp_path / "data.txt"
    odd.write_text(squad_file.read_text(encoding="utf-8"), encoding="utf-8")
    assert load_examples(odd, format="squad") == load_squad(squad_file)


def test_malformed_gold_answers_fail_scoring_but_not_prediction(tmp_path):
    # Prediction never reads gold answers, so a malformed answers field cannot stop it.
    rows = [{"id": "a", "context": "Rome is in Italy.", "question": "Where is Rome?",
             "answers": {"text": "Italy", "answer_start": [11]}},
            {"id": "b", "context": "Rome is in Italy.", "question": "Where?", "answers": "Italy"}]
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    assert [ex.id for ex in load_examples(path, gold=False)] == ["a", "b"]
    with pytest.raises(SquadFormatError) as e:
        load_examples(path)
    assert "2 problem(s)" in str(e.value) and "line 1 (id 'a'): field 'answers.text' must be a list" in str(e.value)
    assert "line 2 (id 'b'): field 'answers' must be an object" in str(e.value)
    csv_path = tmp_path / "p.csv"
    csv_path.write_text('id,question,context,answers\nq1,Who?,It was Ann.,{bad\n', encoding="utf-8")
    assert [ex.id for ex in load_examples(csv_path, gold=False)] == ["q1"]
    with pytest.raises(SquadFormatError, match=r"row 1 \(id 'q1'\): field 'answers' must hold JSON text"):
        load_examples(csv_path)


def test_rows_without_title_or_answers(tmp_path):
    rows = [{"id": 1, "context": "Rome is in Italy.", "question": "Where is Rome?"}]
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    (ex,) = load_examples(path, gold=False)  # prediction-only data
    assert (ex.id, ex.title, ex.answers) == ("1", "", ())
    with pytest.raises(SquadFormatError, match=r"line 1 \(id '1'\): missing field 'answers'"):
        load_examples(path)


def test_errors_name_file_row_and_field_all_at_once(tmp_path):
    good = example_row(load_squad_first())
    rows = [
        good,
        {k: v for k, v in {**good, "id": "a"}.items() if k != "question"},  # missing field
        {**good, "id": "b", "answers": {"text": "France", "answer_start": [0]}},  # answers.text not a list
        {**good, "id": "c", "answers": {"text": ["France"], "answer_start": [3]}},  # bad offset
    ]
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(SquadFormatError) as info:
        load_examples(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 3 problem(s): ")
    assert "line 2 (id 'a'): missing field 'question'" in msg
    assert "line 3 (id 'b'): field 'answers.text' must be a list" in msg
    assert "line 4 (id 'c'), answer 0: text 'France' does not match context[3:9]" in msg
    assert "--offsets repair" in msg


def test_csv_and_parquet_errors_count_rows(tmp_path):
    good = example_row(load_squad_first())
    rows = [good] + [{**good, "id": f"x{i}", "answers": {"text": ["France"], "answer_start": [1]}} for i in range(7)]
    write_examples([], tmp_path / "unused.csv")  # an empty file of rows is fine to write
    parquet = tmp_path / "bad.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), parquet)
    with pytest.raises(SquadFormatError) as info:
        load_examples(parquet)
    assert "7 problem(s)" in str(info.value) and "row 1 (id 'x0')" in str(info.value)
    assert "... and 2 more" in str(info.value)
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text('id,context,question,answers\nq,Rome is here.,Where?,"{not json"\n', encoding="utf-8")
    with pytest.raises(SquadFormatError, match=r"row 1 \(id 'q'\): field 'answers' must hold JSON text .* line 2\)"):
        load_examples(csv_file)


def test_squad_json_reports_every_problem(tmp_path):
    data = squad_dict()
    qas = data["data"][0]["paragraphs"][0]["qas"]
    qas[0]["answers"][0]["answer_start"] = 1
    qas[1].pop("question")
    data["data"][1]["paragraphs"][0]["qas"][0]["id"] = "q1"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SquadFormatError) as info:
        load_examples(path)
    msg = str(info.value)
    assert "3 problem(s)" in msg
    assert "article 0 ('Normans'), paragraph 0, question 0 (id 'q1'), answer 0: text 'France'" in msg
    assert "question 1 (id 'q2'): missing field 'question'" in msg
    assert "article 1 ('Paris'), paragraph 0, question 0 (id 'q1'): duplicate question id 'q1'" in msg


DIRTY_CONTEXT = "Paris is big. Paris is old. The Seine runs through Paris and Rouen."


def _dirty_rows() -> list[dict]:
    c = DIRTY_CONTEXT
    return [
        {"id": "ok", "context": c, "question": "q?", "answers": {"text": ["Seine"], "answer_start": [c.index("Seine")]}},
        # points one char past the second "Paris": moves there, not to the first
        {"id": "near", "context": c, "question": "q?", "answers": {"text": ["Paris"], "answer_start": [15]}},
        # a word position (word 4 = "Paris"), as some converters write: the nearest occurrence is the first
        {"id": "word", "context": c, "question": "q?", "answers": {"text": ["Paris"], "answer_start": [3]}},
        {"id": "absent", "context": c, "question": "q?", "answers": {"text": ["London"], "answer_start": [0]}},
        {"id": "half", "context": c, "question": "q?",
         "answers": {"text": ["Rouen", "Lyon"], "answer_start": [c.index("Rouen") + 2, 4]}},
        {"id": "none", "context": c, "question": "q?", "answers": {"text": [], "answer_start": []}},
    ]


def test_repair_moves_offsets_drops_absent_texts_and_says_so_once(tmp_path):
    path = _write_jsonl(tmp_path / "dirty.jsonl", _dirty_rows())
    with pytest.raises(SquadFormatError, match="5 problem"):
        load_examples(path)  # strict
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        examples = load_examples(path, offsets="repair")
    by_id = {ex.id: ex for ex in examples}
    assert list(by_id) == ["ok", "near", "word", "half", "none"]  # "absent" lost its only answer
    assert by_id["near"].answers[0].start == DIRTY_CONTEXT.index("Paris", 1)
    assert by_id["word"].answers[0].start == 0
    assert [(a.text, a.start) for a in by_id["half"].answers] == [("Rouen", DIRTY_CONTEXT.index("Rouen"))]
    assert by_id["none"].is_impossible and not by_id["half"].is_impossible
    assert len(caught) == 1
    line = str(caught[0].message)
    assert "\n" not in line
    assert "moved 3 answer_start(s)" in line and "'near', 'word', 'half'" in line
    assert "dropped 2 answer(s)" in line and "dropped 1 question(s) left without an answer (ids 'absent')" in line


def test_ignore_keeps_texts_unchecked(tmp_path):
    path = _write_jsonl(tmp_path / "dirty.jsonl", _dirty_rows())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to report: nothing changed
        examples = load_examples(path, offsets="ignore")
    assert [len(ex.answers) for ex in examples] == [1, 1, 1, 1, 2, 0]
    assert examples[3].answers[0].start == 0 and examples[3].answers[0].text == "London"


def test_nearest_occurrence_prefers_the_earlier_on_ties():
    assert nearest_occurrence("ab ab", "ab", 1) == 0
    assert nearest_occurrence("ab ab", "ab", 2) == 3
    assert nearest_occurrence("ab", "x", 0) is None


def test_hub_id_goes_through_datasets_load_dataset(tmp_path, squad_file):
    datasets = pytest.importorskip("datasets")
    original = load_squad(squad_file)
    repo = tmp_path / "repo"
    repo.mkdir()
    write_examples(original, repo / "validation.parquet")  # a dataset repo laid out as on the hub
    loader = functools.partial(datasets.load_dataset, cache_dir=str(tmp_path / "cache"))
    assert load_examples(f"hf:{repo}:validation", hub_loader=loader) == original


def test_hub_id_parts_reach_the_loader():
    calls = []

    def loader(name, config, split):
        calls.append((name, config, split))
        return [{"id": "1", "context": "Rome is in Italy.", "question": "Where?",
                 "answers": {"text": ["Italy"], "answer_start": [11]}}]

    assert load_examples("hf:rajpurkar/squad_v2:validation", hub_loader=loader)[0].answers[0].text == "Italy"
    load_examples("hf:org/name:cfg:train", hub_loader=loader)
    assert calls == [("rajpurkar/squad_v2", None, "validation"), ("org/name", "cfg", "train")]
    with pytest.raises(PocketQAError, match="hf:NAME:SPLIT"):
        parse_hub_id("hf:only-a-name")


def test_hub_load_failure_is_one_error():
    def loader(name, config, split):
        raise ConnectionError("Couldn't reach the hub\nmore detail")

    with pytest.raises(PocketQAError, match=r"hf:x/y:train: the datasets library cannot load 'x/y'.*reach the hub$"):
        load_examples("hf:x/y:train", hub_loader=loader)


def test_in_memory_dataset_and_list(squad_file):
    datasets = pytest.importorskip("datasets")
    original = load_squad(squad_file)
    rows = [example_row(ex) for ex in original]
    assert load_examples(rows) == original
    assert load_examples(datasets.Dataset.from_list(rows)) == original
    with pytest.raises(SquadFormatError, match=r"<rows>: 1 problem\(s\): row 0: expected an object"):
        load_examples(["not a row"])


def test_missing_pyarrow_names_the_extra(tmp_path, squad_file, monkeypatch):
    write_examples(load_squad(squad_file), tmp_path / "d.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"pip install 'pocketqa\[data\]'"):
        load_examples(tmp_path / "d.parquet")


def test_gzip_bom_and_damaged_files(tmp_path, squad_file):
    rows = [example_row(ex) for ex in load_squad(squad_file)]
    bom = tmp_path / "bom.jsonl.gz"
    with gzip.open(bom, "wt", encoding="utf-8-sig") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    assert len(load_examples(bom)) == len(rows)
    (tmp_path / "cut.jsonl.gz").write_bytes(bom.read_bytes()[:40])
    with pytest.raises(SquadFormatError, match="cut.jsonl.gz: cannot read"):
        load_examples(tmp_path / "cut.jsonl.gz")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SquadFormatError, match="junk.parquet: cannot read as Parquet"):
        load_examples(tmp_path / "junk.parquet")
    (tmp_path / "scalar.json").write_text("3", encoding="utf-8")
    with pytest.raises(SquadFormatError, match="JSON array of rows"):
        load_examples(tmp_path / "scalar.json")


def load_squad_first():
    from helpers import examples

    return examples()[0]
