"""Prediction rows: QuestionAnswerer.records and their JSON Lines / Parquet files."""

import math

import pytest

from pocketqa.data.predictions import PREDICTION_COLUMNS, read_prediction_rows, write_prediction_rows
from pocketqa.errors import PocketQAError
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.answers import answerability
from pocketqa.inference.spans import Decoded, Span

ROWS = [
    {"id": "q1", "answer": "Ann", "start": 3, "end": 6, "score": 0.75, "null_odds": -2.5, "answerability": 0.9,
     "abstained": False},
    {"id": "q2", "answer": "", "start": None, "end": None, "score": 0.8, "null_odds": 1.5, "answerability": 0.2,
     "abstained": True},
]


@pytest.mark.parametrize("name", ["p.jsonl", "p.jsonl.gz", "p.parquet"])
def test_rows_round_trip(tmp_path, name):
    pytest.importorskip("pyarrow")
    path = tmp_path / name
    extra = [dict(r, ignored="x") for r in ROWS]  # keys outside the layout are not written
    assert write_prediction_rows(path, extra, {"model": "m", "threshold": 0.5}) == 2
    rows, meta = read_prediction_rows(path)
    assert rows == ROWS
    assert meta == ({"model": "m", "threshold": 0.5} if name.endswith(".parquet") else {})
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left


def test_rows_refuse_other_suffix(tmp_path):
    with pytest.raises(PocketQAError, match="out.json: prediction rows"):
        write_prediction_rows(tmp_path / "out.json", ROWS)


def test_answerability_agrees_with_the_decision():
    assert answerability(0.0, 0.0) == 0.5
    assert answerability(-1.0, 0.0) > 0.5 > answerability(1.0, 0.0)
    assert answerability(math.inf, 0.0) == 0.0 and answerability(-1e6, 0.0) == 1.0
    assert answerability(2.0, 3.0) == pytest.approx(1 / (1 + math.exp(-1)))


def _decoded(null_odds):
    spans = [Span(text="Ann", start=3, end=6, probability=0.6, score=2.0),
             Span(text="by Ann", start=0, end=6, probability=0.3, score=1.0)]
    return Decoded(spans=spans, null_score=0.0, null_odds=null_odds, null_probability=0.1)


def test_format_decoded_scores_agree_with_the_decision():
    # The span outweighs the null answer in the n-best softmax, but the threshold says abstain:
    # the no-answer entry must not show a smaller score than the span it beat.
    abstained = QuestionAnswerer.format_decoded(_decoded(-1.0), 3, True, threshold=-2.0)
    assert abstained[0]["start"] is None and abstained[0]["answerability"] < 0.5
    assert abstained[0]["score"] == pytest.approx(1 - abstained[0]["answerability"]) and abstained[0]["score"] > 0.5
    answered = QuestionAnswerer.format_decoded(_decoded(-1.0), 1, True, threshold=0.0)
    assert answered["answer"] == "Ann" and answered["answerability"] > 0.5
    assert {a["answerability"] for a in abstained} == {abstained[0]["answerability"]}


def test_records_rows(tmp_path):
    qa = QuestionAnswerer.__new__(QuestionAnswerer)
    qa.threshold = 0.0
    from pocketqa.data.squad import Example

    examples = [Example(id="a", title="", context="by Ann", question="who?"),
                Example(id="b", title="", context="by Ann", question="who?")]
    rows = qa.records(examples, [_decoded(-1.0), _decoded(1.0)])
    assert [tuple(r) for r in rows] == [PREDICTION_COLUMNS] * 2
    assert (rows[0]["answer"], rows[0]["abstained"], rows[1]["answer"], rows[1]["abstained"]) == ("Ann", False, "", True)
