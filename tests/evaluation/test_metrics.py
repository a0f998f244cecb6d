"""Tests for pocketqa.evaluation.metrics: hand-worked cases of the official SQuAD 2.0 evaluation.

The full-dev-set comparison with the official evaluate-v2.0.py is done by
python -m bench.tools.metrics_official (results in docs/metrics_check.md), not here.
"""

import json
import warnings

import pytest

from helpers import squad_dict
from pocketqa.cli.main import main
from pocketqa.evaluation.metrics import (
    MissingPredictionsError,
    apply_no_ans_threshold,
    compute_exact,
    compute_f1,
    exact_and_f1_scores,
    find_best_threshold,
    get_tokens,
    gold_answers,
    make_qid_to_has_ans,
    normalize_answer,
    squad_v2_eval,
)

OFFICIAL_KEYS = [
    "exact",
    "f1",
    "total",
    "HasAns_exact",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact",
    "NoAns_f1",
    "NoAns_total",
]
OFFICIAL_BEST_KEYS = ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def _qa(qid: str, *answers: str) -> dict:
    return {"id": qid, "question": "?", "answers": [{"text": a, "answer_start": 0} for a in answers]}


def _dataset(*qas: dict) -> list[dict]:
    return [{"title": "t", "paragraphs": [{"context": "c", "qas": list(qas)}]}]


# Hand-worked dataset used by the squad_v2_eval tests below.
#   qid  gold                     pred               na    raw EM  raw F1
#   q1   Eiffel Tower             "the Eiffel Tower" 0.1   1       1
#   q2   quick brown fox jumps    "quick brown cat"  0.6   0       4/7 (P=2/3, R=2/4)
#   q3   (unanswerable)           ""                 0.3   1       1
#   q4   (unanswerable)           "Paris"            0.8   0       0
#   q5   Paris                    "London"           0.5   0       0
DATASET = _dataset(
    _qa("q1", "Eiffel Tower"),
    _qa("q2", "quick brown fox jumps"),
    _qa("q3"),
    _qa("q4"),
    _qa("q5", "Paris"),
)
PREDS = {"q1": "the Eiffel Tower", "q2": "quick brown cat", "q3": "", "q4": "Paris", "q5": "London"}
NA_PROBS = {"q1": 0.1, "q2": 0.6, "q3": 0.3, "q4": 0.8, "q5": 0.5}
HAS_ANS = {"q1": True, "q2": True, "q3": False, "q4": False, "q5": True}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("an apple a day", "apple day"),
        ("theater anathema", "theater anathema"),  # articles only as whole words
        ("U.S.A.!", "usa"),
        ("rock-'n'-roll", "rocknroll"),
        ("the-end", "theend"),  # punctuation goes first, so no article is left
        ("  Big \t\n  Cat  ", "big cat"),
        ("A. B.", "b"),  # "a." -> "a" -> removed as an article
        ("the a an", ""),
        ("Café — Ünïcode", "café — ünïcode"),  # only ASCII punctuation is removed
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_get_tokens():
    assert get_tokens("") == []
    assert get_tokens("The  cat, the HAT.") == ["cat", "hat"]
    assert get_tokens("the") == []


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("Eiffel Tower", "the Eiffel Tower", 1),  # article
        ("Eiffel Tower", "eiffel tower!", 1),  # case, punctuation
        ("Eiffel Tower", " Eiffel\tTower ", 1),  # whitespace
        ("Eiffel Tower", "Eiffel", 0),
        ("", "", 1),
        ("", "the", 1),  # "the" normalises to ""
        ("", "Paris", 0),
        ("Paris", "", 0),
    ],
)
def test_compute_exact(gold, pred, expected):
    assert compute_exact(gold, pred) == expected


def test_compute_f1_partial_overlap():
    # gold 4 tokens, pred 3 tokens, 2 shared: P = 2/3, R = 2/4,
    # F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7 = 0.5714...
    assert compute_f1("quick brown fox jumps", "quick brown cat") == pytest.approx(4 / 7, abs=1e-12)


def test_compute_f1_counts_tokens_as_multiset():
    # gold tokens [cat, cat], pred [cat]: 1 shared, P = 1, R = 1/2, F1 = 2/3.
    assert compute_f1("the cat the cat", "cat") == pytest.approx(2 / 3, abs=1e-12)
    # pred [cat, cat, cat] vs gold [cat]: 1 shared, P = 1/3, R = 1, F1 = 1/2.
    assert compute_f1("cat", "cat cat cat") == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(
    "gold, pred, expected",
    [
        ("", "", 1.0),
        ("", "something", 0.0),
        ("something", "", 0.0),
        ("", "a an the", 1.0),  # no tokens on either side
        ("Paris", "London", 0.0),
        ("The Eiffel Tower", "eiffel tower", 1.0),
    ],
)
def test_compute_f1_edges(gold, pred, expected):
    assert compute_f1(gold, pred) == expected


def test_gold_answers_drop_empty_after_normalization():
    assert gold_answers(_qa("x", "Paris", "the", "!")) == ["Paris"]
    assert gold_answers(_qa("x")) == [""]
    assert gold_answers(_qa("x", "a")) == [""]


def test_exact_and_f1_take_max_over_golds():
    dataset = _dataset(_qa("m", "Denver Broncos", "Broncos", "the Denver Broncos team"))
    exact, f1 = exact_and_f1_scores(dataset, {"m": "Broncos"})
    assert exact == {"m": 1}  # matches the second gold
    exact, f1 = exact_and_f1_scores(dataset, {"m": "Broncos team"})
    # vs "Denver Broncos": P 1/2, R 1/2 -> 1/2; vs "Broncos": P 1/2, R 1 -> 2/3;
    # vs "denver broncos team": P 2/2, R 2/3 -> 4/5. Max = 0.8.
    assert exact == {"m": 0}
    assert f1["m"] == pytest.approx(0.8, abs=1e-12)


def test_unanswerable_and_empty_predictions():
    dataset = _dataset(_qa("u"), _qa("a", "Paris"))
    exact, f1 = exact_and_f1_scores(dataset, {"u": "", "a": ""})
    assert (exact, f1) == ({"u": 1, "a": 0}, {"u": 1.0, "a": 0.0})
    exact, f1 = exact_and_f1_scores(dataset, {"u": "Paris", "a": "Paris"})
    assert (exact, f1) == ({"u": 0, "a": 1}, {"u": 0.0, "a": 1.0})


def test_whole_json_object_is_accepted():
    assert exact_and_f1_scores({"version": "v2.0", "data": DATASET}, PREDS) == exact_and_f1_scores(
        DATASET, PREDS
    )


def test_apply_no_ans_threshold():
    scores = {"q1": 1, "q2": 0.5, "q3": 1, "q4": 0, "q5": 0}
    got = apply_no_ans_threshold(scores, NA_PROBS, HAS_ANS, 0.5)
    # Strictly above 0.5: q2 (answerable -> 0.0) and q4 (unanswerable -> 1.0); q5 at 0.5 stays.
    assert got == {"q1": 1, "q2": 0.0, "q3": 1, "q4": 1.0, "q5": 0}


def test_squad_v2_eval_without_na_probs():
    out = squad_v2_eval(DATASET, PREDS)
    assert list(out) == OFFICIAL_KEYS  # no best_* keys without na_probs, as the official
    # EM: q1, q3 right -> 2/5. F1: (1 + 4/7 + 1) / 5 = (18/7) / 5.
    assert out["exact"] == pytest.approx(40.0)
    assert out["f1"] == pytest.approx(100 * 18 / 35)  # 51.428...
    assert out["total"] == 5
    # HasAns q1, q2, q5: EM 1/3; F1 (1 + 4/7) / 3 = 11/21.
    assert out["HasAns_exact"] == pytest.approx(100 / 3)
    assert out["HasAns_f1"] == pytest.approx(100 * 11 / 21)
    assert out["HasAns_total"] == 3
    # NoAns q3, q4: q3 right, q4 wrong.
    assert out["NoAns_exact"] == pytest.approx(50.0)
    assert out["NoAns_f1"] == pytest.approx(50.0)
    assert out["NoAns_total"] == 2


def test_squad_v2_eval_na_prob_thresh():
    out = squad_v2_eval(DATASET, PREDS, NA_PROBS, na_prob_thresh=0.5)
    # q2 (0.6) becomes "" -> 0; q4 (0.8) becomes "" -> 1. EM = F1 = q1, q3, q4 -> 3/5.
    assert out["exact"] == pytest.approx(60.0)
    assert out["f1"] == pytest.approx(60.0)
    assert out["HasAns_exact"] == pytest.approx(100 / 3)
    assert out["HasAns_f1"] == pytest.approx(100 / 3)
    assert out["NoAns_exact"] == pytest.approx(100.0)
    assert out["NoAns_f1"] == pytest.approx(100.0)
    # Default threshold 1.0: no probability exceeds it, same as without na_probs.
    default = squad_v2_eval(DATASET, PREDS, NA_PROBS)
    plain = squad_v2_eval(DATASET, PREDS)
    assert [default[k] for k in OFFICIAL_KEYS] == [plain[k] for k in OFFICIAL_KEYS]


def test_negative_thresh_without_na_probs_makes_everything_empty():
    # Official: na_probs default to 0.0 for every prediction, and 0.0 > -1.0.
    out = squad_v2_eval(DATASET, PREDS, na_prob_thresh=-1.0)
    assert out["HasAns_exact"] == 0.0
    assert out["NoAns_exact"] == 100.0
    assert out["exact"] == pytest.approx(40.0)  # 2 unanswerable of 5


def test_best_thresholds_hand_worked():
    out = squad_v2_eval(DATASET, PREDS, NA_PROBS)
    assert list(out) == OFFICIAL_KEYS + OFFICIAL_BEST_KEYS
    # Start at num_no_ans = 2, then walk by na: q1 .1, q3 .3, q5 .5, q2 .6, q4 .8.
    # EM: q1 +1 -> 3 (best, thresh .1); q3 +0; q5 +0; q2 +0; q4 non-empty -> -1 -> 2.
    assert out["best_exact"] == pytest.approx(100 * 3 / 5)
    assert out["best_exact_thresh"] == 0.1
    # F1: q1 +1 -> 3 (.1); q3, q5 +0; q2 +4/7 -> 25/7 (best, thresh .6); q4 -1.
    assert out["best_f1"] == pytest.approx(100 * (25 / 7) / 5)  # 71.428...
    assert out["best_f1_thresh"] == 0.6


def test_best_threshold_stays_zero_when_answering_never_helps():
    preds = {"q1": "x", "q2": "y", "q3": "z"}
    exact = {"q1": 0, "q2": 0, "q3": 0}
    has_ans = {"q1": True, "q2": False, "q3": False}
    na = {"q1": 0.2, "q2": 0.4, "q3": 0.9}
    # Start at 2 (two unanswerable); every step adds 0 or -1.
    assert find_best_threshold(preds, exact, na, has_ans) == (pytest.approx(100 * 2 / 3), 0.0)


def test_best_threshold_needs_strict_improvement():
    # Ties keep the first (lowest) threshold reaching the best total.
    preds = {"a": "Paris", "b": "", "c": "Rome"}
    scores = {"a": 1, "b": 1, "c": 1}
    has_ans = {"a": True, "b": False, "c": True}
    na = {"a": 0.1, "b": 0.2, "c": 0.3}
    # 1 -> a +1 = 2 (.1) -> b +0 = 2 (no change) -> c +1 = 3 (.3).
    assert find_best_threshold(preds, scores, na, has_ans) == (pytest.approx(100.0), 0.3)
    scores = {"a": 1, "b": 1, "c": 0}
    assert find_best_threshold(preds, scores, na, has_ans) == (pytest.approx(100 * 2 / 3), 0.1)


def test_make_qid_to_has_ans_keeps_file_order():
    assert list(make_qid_to_has_ans(DATASET).items()) == list(HAS_ANS.items())


def test_missing_predictions_skipped_with_warning():
    preds = {k: v for k, v in PREDS.items() if k != "q2"}
    with pytest.warns(UserWarning, match="q2"):
        out = squad_v2_eval(DATASET, preds)
    assert out["total"] == 4
    assert out["HasAns_total"] == 2
    assert out["exact"] == pytest.approx(50.0)  # q1, q3 right of q1, q3, q4, q5


def test_missing_predictions_raise_when_not_ok():
    preds = {k: v for k, v in PREDS.items() if k not in ("q2", "q4")}
    with pytest.raises(ValueError, match="q2, q4") as info:
        squad_v2_eval(DATASET, preds, missing_ok=False)
    assert isinstance(info.value, MissingPredictionsError)


def test_no_prediction_at_all_and_short_na_probs_raise():
    with pytest.raises(ValueError, match="No question"), pytest.warns(UserWarning):
        squad_v2_eval(DATASET, {})
    with pytest.raises(ValueError, match="q5"):
        squad_v2_eval(DATASET, PREDS, {k: v for k, v in NA_PROBS.items() if k != "q5"})


def test_group_left_out_when_dataset_has_none():
    out = squad_v2_eval(_dataset(_qa("a", "Paris")), {"a": "Paris"})
    assert list(out) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total"]


def _partial_case():
    data = squad_dict()["data"]
    # q1-q3 and q5-q6 answerable, q4 and q7 unanswerable; predict only a few of them.
    preds = {"q1": "France", "q2": "Denmark", "q4": "Rollo"}
    na_probs = {f"q{i}": 0.1 * i for i in range(1, 8)}
    return data, preds, na_probs


def test_best_scores_skip_missing_predictions_like_every_other_total():
    data, preds, na_probs = _partial_case()
    with pytest.warns(UserWarning, match="Missing prediction"):
        out = squad_v2_eval(data, preds, na_probs)
    assert out["total"] == 3
    assert 0.0 <= out["best_exact"] <= 100.0 and 0.0 <= out["best_f1"] <= 100.0
    # Skipping the missing questions must equal scoring a file that holds only the predicted ones.
    subset = [
        {**a, "paragraphs": [{**p, "qas": [q for q in p["qas"] if q["id"] in preds]} for p in a["paragraphs"]]}
        for a in data
    ]
    full = squad_v2_eval(subset, preds, na_probs)
    for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"):
        assert out[key] == pytest.approx(full[key]), key


def test_cli_evaluate_partial_predictions_best_f1_at_most_100(tmp_path, tiny_squad_file, capsys):
    _, preds, na_probs = _partial_case()
    (tmp_path / "preds.json").write_text(json.dumps(preds), encoding="utf-8")
    (tmp_path / "odds.json").write_text(json.dumps(na_probs), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        argv = ["evaluate", "--data", str(tiny_squad_file), "--predictions", str(tmp_path / "preds.json"),
                "--null-odds", str(tmp_path / "odds.json")]
        assert main(argv) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["best_f1"] <= 100.0 and scores["best_exact"] <= 100.0
