"""Domain calibration (pocketqa.evaluation.calibration): the answerable-rate quantile, the
labeled best threshold against evaluate's, and the bootstrap interval."""

import math
import random

import numpy as np
import pytest

from pocketqa.data.squad import Answer, Example
from pocketqa.errors import PocketQAError
from pocketqa.evaluation.calibration import (
    QuestionScores,
    abstain_share,
    best_threshold,
    bootstrap_interval,
    calibrate,
    calibrate_decoded,
    f1_at,
    rate_threshold,
    walk_thresholds,
)
from pocketqa.evaluation.scoring import evaluate_model, load_questions, score_decoded
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.spans import Decoded, Span

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
CONTEXT = " ".join(WORDS)


def synthetic(n: int, seed: int = 0, answerable: float = 0.5):
    """n questions on one context: answerable ones tend to low null odds and mostly right spans
    (some partly right, some wrong), unanswerable ones to high odds; a few have no span at all."""
    rng = random.Random(seed)
    examples, decoded = [], []
    for i in range(n):
        has = rng.random() < answerable
        gold = rng.randrange(len(WORDS) - 1)
        answers = (Answer(WORDS[gold], CONTEXT.index(WORDS[gold])),) if has else ()
        examples.append(Example(id=f"q{i}", title="t", context=CONTEXT, question=f"question {i}?",
                                answers=answers, is_impossible=not has))
        luck = rng.random()
        if luck < 0.03:
            decoded.append(Decoded(spans=[], null_odds=math.inf))
            continue
        if luck < 0.6:
            text = WORDS[gold]
        elif luck < 0.8:
            text = f"{WORDS[gold]} {WORDS[gold + 1]}"
        else:
            text = WORDS[(gold + 3) % len(WORDS)]
        odds = rng.gauss(-1.0 if has else 1.5, 2.0)
        decoded.append(Decoded(spans=[Span(text, 0, len(text), 1.0)], null_odds=odds))
    return examples, decoded


# -- unlabeled: the answerable-rate quantile ---------------------------------------------


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.9, 1.0, 0.123, 0.999])
def test_rate_threshold_abstains_on_exactly_the_stated_share(rate):
    odds = np.random.default_rng(1).normal(size=1000)
    threshold = rate_threshold(odds, rate)
    assert math.isfinite(threshold)
    assert int((odds > threshold).sum()) == math.floor((1 - rate) * 1000 + 0.5)


def test_rate_one_never_abstains_and_stays_finite():
    odds = np.array([-3.0, 0.5, 7.25, 7.25])
    assert rate_threshold(odds, 1.0) == 7.25
    assert abstain_share(odds, 7.25) == 0.0
    # Questions without a span abstain whatever the threshold; the threshold stays finite.
    with_inf = np.append(odds, math.inf)
    assert rate_threshold(with_inf, 1.0) == 7.25 and abstain_share(with_inf, 7.25) == pytest.approx(0.2)


def test_a_tiny_rate_abstains_everywhere_below_the_smallest_odds():
    odds = np.array([2.0, -1.0, 0.0, 4.0])
    threshold = rate_threshold(odds, 1e-6)
    assert threshold < -1.0 and abstain_share(odds, threshold) == 1.0
    # 0.2 * 4 = 0.8 answered rounds to 1: the smallest odds answers, the rest abstain.
    assert rate_threshold(odds, 0.2) == -1.0


def test_ties_are_answered_or_abstained_together_nearest_to_the_target():
    odds = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    # Target 2 abstentions: at 1.0 one abstains (off by 1), at 0.0 five do (off by 3).
    assert rate_threshold(odds, 4 / 6) == 1.0
    # Target 3: 1 (at 1.0) and 5 (at 0.0) are both off by 2; the draw answers more.
    assert rate_threshold(odds, 0.5) == 1.0
    # Target 4: five abstaining (off by 1) beats one (off by 3).
    assert rate_threshold(odds, 2 / 6) == 0.0
    assert abstain_share(odds, 0.0) == pytest.approx(5 / 6)


def test_rate_threshold_rises_with_the_rate_and_is_an_observed_value():
    odds = np.round(np.random.default_rng(2).normal(size=300), 1)  # many ties
    thresholds = [rate_threshold(odds, r) for r in np.linspace(0.01, 1.0, 50)]
    assert thresholds == sorted(thresholds)
    assert all(t in set(odds.tolist()) or t < odds.min() for t in thresholds)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan"), True])
def test_bad_rates_are_refused(rate):
    with pytest.raises(PocketQAError, match=r"answerable rate must be a share in \(0, 1\]"):
        rate_threshold([0.0, 1.0], rate)


def test_no_span_anywhere_gives_a_finite_threshold():
    assert rate_threshold([math.inf, math.inf], 0.5) == 0.0


# -- labeled: the best threshold and its interval ---------------------------------------


def _resampled(examples, decoded, rows):
    """A resample written out as its own data set (fresh ids), for the slow reference."""
    exs = [Example(id=f"r{j}", title="t", context=examples[i].context, question=examples[i].question,
                   answers=examples[i].answers, is_impossible=examples[i].is_impossible) for j, i in enumerate(rows)]
    return exs, [decoded[i] for i in rows]


def test_vectorised_walk_equals_the_official_best_threshold_on_each_resample():
    examples, decoded = synthetic(120, seed=3)
    scores = QuestionScores.from_decoded(examples, decoded)
    identity = np.arange(len(examples))[None, :]
    assert walk_thresholds(scores, identity)[0] == best_threshold(examples, decoded)
    samples = np.random.default_rng(4).integers(0, len(examples), size=(8, len(examples)))
    fast = walk_thresholds(scores, samples)
    for row, threshold in zip(samples, fast):
        exs, dec = _resampled(examples, decoded, row)
        reference = score_decoded(exs, dec, 0.0)
        assert threshold == reference["best_f1_thresh"]
        assert f1_at(QuestionScores.from_decoded(exs, dec), threshold) == pytest.approx(reference["best_f1"])


def test_f1_at_equals_the_official_f1_at_that_threshold():
    examples, decoded = synthetic(80, seed=5)
    scores = QuestionScores.from_decoded(examples, decoded)
    for threshold in (-3.0, 0.0, 1.7, 9.0):
        assert f1_at(scores, threshold) == pytest.approx(score_decoded(examples, decoded, threshold)["f1"])


def _width(interval: list[float]) -> float:
    return interval[1] - interval[0]


def test_interval_contains_the_estimate_and_narrows_with_more_labels():
    widths = {}
    for n in (60, 3000):
        examples, decoded = synthetic(n, seed=6)
        report = calibrate_decoded(examples, decoded, 0.0, resamples=400, seed=0)
        interval = report["interval"]
        assert interval["threshold"][0] <= report["threshold"] <= interval["threshold"][1]
        assert interval["f1"][0] <= report["f1"] <= interval["f1"][1]
        widths[n] = (_width(interval["threshold"]), _width(interval["f1"]))
    assert widths[3000][0] < widths[60][0] / 2
    assert widths[3000][1] < widths[60][1] / 3


def test_the_interval_is_seeded():
    examples, decoded = synthetic(100, seed=7)
    scores = QuestionScores.from_decoded(examples, decoded)
    threshold = best_threshold(examples, decoded)
    first = bootstrap_interval(scores, threshold, resamples=200, seed=1)
    assert bootstrap_interval(scores, threshold, resamples=200, seed=1) == first
    assert bootstrap_interval(scores, threshold, resamples=200, seed=2) != first
    assert (first["resamples"], first["seed"], first["confidence"]) == (200, 1, 0.95)


def test_the_rate_picks_the_threshold_and_labels_only_score_it():
    examples, decoded = synthetic(400, seed=8)
    report = calibrate_decoded(examples, decoded, 0.0, answerable_rate=0.8)
    scores = QuestionScores.from_decoded(examples, decoded)
    assert report["method"] == "answerable_rate"
    assert report["threshold"] == rate_threshold(scores.odds, 0.8)
    assert report["abstain_share"] == pytest.approx(0.2, abs=1 / 400)
    assert report["f1"] == pytest.approx(f1_at(scores, report["threshold"]))
    assert report["best"]["threshold"] == best_threshold(examples, decoded)
    assert report["labeled_answerable_rate"] == pytest.approx(np.mean([bool(ex.answers) for ex in examples]))
    assert "interval" not in report


def test_unlabeled_questions_need_a_rate():
    examples, decoded = synthetic(30, seed=9)
    unlabeled = [Example(id=ex.id, title=ex.title, context=ex.context, question=ex.question, is_impossible=True)
                 for ex in examples]
    with pytest.raises(PocketQAError, match="--answerable-rate"):
        calibrate_decoded(unlabeled, decoded, 0.0)
    report = calibrate_decoded(unlabeled, decoded, 0.0, answerable_rate=0.5)
    assert not report["labeled"] and report["f1"] is None and report["current"]["f1"] is None


def test_labeled_threshold_equals_evaluates_best_threshold(tiny_bert_dir, tiny_squad_file):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu")
    scores = evaluate_model(qa, tiny_squad_file)["scores"]
    report = calibrate(qa, load_questions(tiny_squad_file), resamples=50)
    assert report["threshold"] == scores["best_f1_thresh"]
    assert report["f1"] == pytest.approx(scores["best_f1"])
    assert report["current"]["threshold"] == qa.threshold
    assert report["current"]["f1"] == pytest.approx(scores["f1"])
