import gzip
import json
import warnings

import pytest

from helpers import one_line_exit_2, squad_dict
from pocketqa.errors import SquadFormatError
from pocketqa.data.squad import Answer, Example, load_squad, to_squad_json, write_squad
from pocketqa.evaluation.scoring import evaluate_files


def _write(tmp_path, obj, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj, encoding="utf-8")
    return path


def test_reads_plain_and_gzip(tmp_path):
    data = squad_dict()
    plain = _write(tmp_path, data)
    gz = tmp_path / "data.json.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        json.dump(data, f)
    a, b = load_squad(plain), load_squad(gz)
    assert a == b
    assert len(a) == 7
    first = a[0]
    assert first.id == "q1" and first.title == "Normans" and not first.is_impossible
    assert first.context[first.answers[0].start : first.answers[0].end] == "France"
    assert [ex.is_impossible for ex in a] == [False, False, False, True, False, False, True]


def test_squad11_question_without_answers_is_unanswerable(tmp_path):
    data = {"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [{"id": "x", "question": "q?", "answers": []}]}]}]}
    (ex,) = load_squad(_write(tmp_path, data))
    assert ex.is_impossible and ex.answers == ()


def test_round_trip(tmp_path):
    examples = load_squad(_write(tmp_path, squad_dict()))
    out = tmp_path / "out.json.gz"
    write_squad(examples, out)
    assert load_squad(out) == examples
    assert to_squad_json(examples)["data"][0]["title"] == "Normans"


def _mutate(fn):
    data = squad_dict()
    fn(data)
    return data


def _qa(data, article=0, paragraph=0, q=0):
    return data["data"][article]["paragraphs"][paragraph]["qas"][q]


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (lambda d: _qa(d, 0, 0, 1).__setitem__("answers", [{"text": "Denmark", "answer_start": 3}]), "does not match context"),
        (lambda d: _qa(d, 1, 0, 0).__setitem__("id", "q1"), "duplicate question id 'q1'"),
        (lambda d: _qa(d, 0, 0, 2).__setitem__("question", "   "), "empty question"),
        (lambda d: d["data"][1]["paragraphs"][0].__setitem__("context", ""), "empty context"),
        (lambda d: _qa(d, 0, 0, 3).__setitem__("answers", [{"text": "The", "answer_start": 0}]), "flagged is_impossible but has 1 answer"),
        (lambda d: _qa(d, 0, 0, 0).pop("question"), "missing field 'question'"),
        (lambda d: _qa(d, 0, 0, 0).pop("id"), "missing field 'id'"),
        (lambda d: d["data"][0]["paragraphs"][0].pop("context"), "missing field 'context'"),
        (lambda d: d["data"][0].pop("paragraphs"), "missing field 'paragraphs'"),
        (lambda d: _qa(d, 0, 0, 0)["answers"][0].__setitem__("answer_start", "7"), "'answer_start' must be an integer"),
    ],
)
def test_validation_errors_name_file_article_and_question(tmp_path, mutation, expected):
    path = _write(tmp_path, _mutate(mutation))
    with pytest.raises(SquadFormatError) as info:
        load_squad(path)
    msg = str(info.value)
    assert expected in msg
    assert str(path) in msg
    assert "article" in msg


def test_error_names_question_id(tmp_path):
    data = _mutate(lambda d: _qa(d, 1, 0, 1).__setitem__("answers", [{"text": "Rome", "answer_start": 0}]))
    with pytest.raises(SquadFormatError, match=r"article 1 \('Paris'\).*id 'q6'"):
        load_squad(_write(tmp_path, data))


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(SquadFormatError, match="invalid JSON at line 1"):
        load_squad(_write(tmp_path, '{"data": [}'))
    with pytest.raises(SquadFormatError, match="no such file"):
        load_squad(tmp_path / "nope.json")
    with pytest.raises(SquadFormatError, match="'data' list"):
        load_squad(_write(tmp_path, {"version": "v2.0"}))


def test_answer_end():
    assert Answer("abc", 2).end == 5
    ex = Example(id="1", title="", context="xxabc", question="q", answers=(Answer("abc", 2),))
    assert ex.context[ex.answers[0].start : ex.answers[0].end] == "abc"


def test_utf8_bom_at_file_start_is_read(tmp_path):
    # Windows tools (Notepad, PowerShell's Out-File) save UTF-8 JSON with a byte-order mark.
    data = squad_dict()
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(data), encoding="utf-8")
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode("utf-8"))
    bom_gz = tmp_path / "bom.json.gz"
    bom_gz.write_bytes(gzip.compress(b"\xef\xbb\xbf" + json.dumps(data).encode("utf-8")))
    assert load_squad(bom) == load_squad(bom_gz) == load_squad(plain)
    preds = tmp_path / "preds.json"
    preds.write_bytes(b"\xef\xbb\xbf" + json.dumps({"q1": "France"}).encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the other questions have no prediction
        assert evaluate_files(plain, preds)["exact"] == 100.0


def test_damaged_gzip_is_one_line_exit_2(tmp_path, capsys):
    raw = bytearray(gzip.compress(json.dumps({"data": [{"title": "x" * 5000, "paragraphs": []}] * 50}).encode()))
    for i in range(20, 60):  # flip bits inside the deflate stream: zlib.error, not OSError
        raw[i] ^= 0x55
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(SquadFormatError, match="bad.json.gz"):
        load_squad(bad)
    one_line_exit_2(["evaluate", "--data", str(bad), "--predictions", str(bad)], capsys, "bad.json.gz")


def test_nfd_answer_vs_nfc_context_names_normalisation(tmp_path):
    data = squad_dict()
    paragraph = data["data"][0]["paragraphs"][0]
    paragraph["context"] = "He moved to Mu\u0308nchen in 1990."  # NFD: u + combining diaeresis
    paragraph["qas"] = [{"id": "x", "question": "Where?", "answers": [{"text": "M\u00fcnchen", "answer_start": 12}]}]
    path = tmp_path / "nfd.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SquadFormatError, match="Unicode normalisation"):
        load_squad(path)
