"""scoring="pipeline": the rule of transformers' removed QA pipeline, on hand-worked logits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.cli.main import main
from pocketqa.inference.decode import decode_example
from pocketqa.errors import PocketQAError

# Two windows over "alpha beta gamma delta": window 1 sees alpha beta gamma, window 2 sees
# beta gamma delta (positions: 0 = CLS, 1 = question, then context, last = SEP).
CONTEXT = "alpha beta gamma delta"
OFFSETS = [
    [None, None, (0, 5), (6, 10), (11, 16), None],
    [None, None, (6, 10), (11, 16), (17, 22), None],
]


def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - max(x))
    return e / e.sum()


def test_per_window_probabilities_pick_a_different_span_than_logits():
    # Window 1: "alpha" has the highest logits of all (5 + 5) but shares its window with a
    # near-equal rival ("beta", 4.9 + 4.9); window 2: "delta" has lower logits (3 + 3) and
    # nothing else comes close, so its per-window probability is far higher.
    # The question position (1) carries a huge logit that must be ignored by both rules.
    starts = [np.array([0.0, 50.0, 5.0, 4.9, -5.0, 0.0]), np.array([0.0, 50.0, -5.0, -5.0, 3.0, 0.0])]
    ends = [np.array([0.0, 50.0, 5.0, 4.9, -5.0, 0.0]), np.array([0.0, 50.0, -5.0, -5.0, 3.0, 0.0])]
    by_logits = decode_example(CONTEXT, starts, ends, OFFSETS, [0, 0])
    assert by_logits.spans[0].text == "alpha" and by_logits.spans[0].score == 10.0

    d = decode_example(CONTEXT, starts, ends, OFFSETS, [0, 0], scoring="pipeline")
    assert d.spans[0].text == "delta"
    # softmax over CLS + the three context tokens of window 2 (question and SEP excluded)
    p2 = softmax([0.0, -5.0, -5.0, 3.0])
    assert math.isclose(d.spans[0].score, p2[3] * p2[3], rel_tol=1e-12)
    assert d.spans[0].probability == d.spans[0].score
    # null: the smaller of the two windows' p_start(CLS) * p_end(CLS)
    p1 = softmax([0.0, 5.0, 4.9, -5.0])
    assert math.isclose(d.null_score, min(p1[0] ** 2, p2[0] ** 2), rel_tol=1e-12)
    assert math.isclose(d.null_odds, math.log(d.null_score / d.spans[0].score), rel_tol=1e-12)
    assert d.answer(0.0) == "delta"


def test_same_text_in_overlapping_windows_adds_up():
    # "gamma" is third in each window (after "alpha" and "alpha beta gamma", or "delta" and
    # "gamma delta"), but it is found in both and its two probabilities add up past either
    # window's own best span.
    starts = [np.array([0.0, 0.0, 2.0, -9.0, 1.9, 0.0]), np.array([0.0, 0.0, -9.0, 1.9, 2.0, 0.0])]
    d_one = decode_example(CONTEXT, starts[:1], starts[:1], OFFSETS[:1], [0], scoring="pipeline")
    assert d_one.spans[0].text == "alpha"
    d = decode_example(CONTEXT, starts, starts, OFFSETS, [0, 0], scoring="pipeline", n_best=3)
    p = softmax([0.0, 2.0, -9.0, 1.9])
    assert d.spans[0].text == "gamma"
    assert math.isclose(d.spans[0].score, 2 * p[3] * p[3], rel_tol=1e-12)
    # with one candidate per window (the pipeline's top_k=1) nothing is summed; "alpha" and
    # "delta" tie exactly, and the first window's wins, as in the pipeline's stable sort
    d1 = decode_example(CONTEXT, starts, starts, OFFSETS, [0, 0], scoring="pipeline", n_best=1)
    assert d1.spans[0].text == "alpha" and math.isclose(d1.spans[0].score, p[1] * p[1], rel_tol=1e-12)


def test_null_wins_exactly_when_it_is_more_probable_than_the_best_span():
    # one window; CLS logit c against a single clear span "beta" (logit 2 on both sides)
    for c, abstains in ((1.0, False), (3.0, True)):
        start = np.array([c, 0.0, -9.0, 2.0, -9.0, 0.0])
        d = decode_example(CONTEXT, [start], [start], OFFSETS[:1], [0], scoring="pipeline")
        p = softmax([c, -9.0, 2.0, -9.0])
        assert math.isclose(d.null_odds, math.log(p[0] ** 2 / (p[2] ** 2)), rel_tol=1e-9)
        assert (d.answer(0.0) == "") is abstains
        # within one window the logits rule makes the same decision at threshold 0
        assert (decode_example(CONTEXT, [start], [start], OFFSETS[:1], [0]).answer(0.0) == "") is abstains


def test_max_answer_length_and_context_only():
    start = np.array([0.0, 50.0, 4.0, -9.0, -9.0, 50.0])
    end = np.array([0.0, 50.0, -9.0, -9.0, 4.0, 50.0])
    d = decode_example(CONTEXT, [start], [end], OFFSETS[:1], [0], scoring="pipeline", max_answer_length=3)
    assert d.spans[0].text == "alpha beta gamma"
    short = decode_example(CONTEXT, [start], [end], OFFSETS[:1], [0], scoring="pipeline", max_answer_length=2)
    assert short.spans and all(len(s.text.split()) <= 2 for s in short.spans)


def test_unknown_scoring_is_refused(tiny_bert_dir):
    with pytest.raises(PocketQAError, match="scoring must be one of logits, pipeline"):
        decode_example(CONTEXT, [np.zeros(6)], [np.zeros(6)], OFFSETS[:1], [0], scoring="softmax")
    with pytest.raises(PocketQAError, match="scoring must be one of"):
        QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", scoring="probabilities")


def test_answerer_and_cli_use_pipeline_scoring(tiny_bert_dir, capsys):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", scoring="pipeline")
    ctx = "The Normans were the people who gave their name to Normandy, a region in France."
    r = qa("Where is Normandy?", ctx, abstain=False, top_k=3)
    assert 0.0 < r[0]["score"] <= 1.0 and r[0]["score"] >= r[-1]["score"]
    assert main(["ask", "--model", str(tiny_bert_dir), "--device", "cpu", "--scoring", "pipeline",
                 "-q", "Where is Normandy?", "-c", ctx, "--no-abstain", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answers"][0]["answer"] == r[0]["answer"]


def test_calibrated_threshold_is_kept_per_scoring(tiny_bert_dir, tiny_squad_file, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_bert_dir, model)
    assert main(["evaluate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file),
                 "--scoring", "pipeline", "--save-threshold"]) == 0
    meta = json.loads((model / "pocketqa.json").read_text())
    assert "pipeline_threshold" in meta and "threshold" not in meta
    assert QuestionAnswerer.from_pretrained(model, scoring="pipeline").threshold == meta["pipeline_threshold"]
    assert QuestionAnswerer.from_pretrained(model).threshold == 0.0
    assert "align_to_words" not in meta["pipeline_calibration"]
    # a calibration with word widening says so, next to the settings it was found with
    assert main(["evaluate", "--model", str(model), "--device", "cpu", "--data", str(tiny_squad_file),
                 "--scoring", "pipeline", "--align-to-words", "--n-best", "1", "--save-threshold"]) == 0
    calibration = json.loads((model / "pocketqa.json").read_text())["pipeline_calibration"]
    assert (calibration["align_to_words"], calibration["n_best"], calibration["max_answer_length"]) == (True, 1, 30)
