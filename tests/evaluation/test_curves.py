"""Threshold curves (pocketqa.evaluation.curves): every point equals a full official evaluation."""

import math

import pytest

from pocketqa.data.squad import Answer, Example, load_squad
from pocketqa.evaluation.curves import curve_at, threshold_curve
from pocketqa.evaluation.scoring import score_decoded
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.spans import Decoded, Span

def _synthetic():
    """Questions with ties in null odds, spans that are partly right, and a question with no span."""
    ctx = "alpha beta gamma delta"
    rows = [  # (has answer, best span text, null odds)
        (True, "gamma", -2.0), (True, "gamma delta", -1.0), (True, "alpha", 0.5), (True, "gamma", 0.5),
        (False, "beta", -1.5), (False, "delta", 0.5), (False, "alpha", 3.0), (True, None, math.inf),
        (False, None, math.inf),
    ]
    examples, decoded = [], []
    for i, (has, text, odds) in enumerate(rows):
        answers = (Answer("gamma", 11),) if has else ()
        examples.append(Example(id=f"s{i}", title="t", context=ctx, question="q?", answers=answers, is_impossible=not has))
        spans = [] if text is None else [Span(text, 0, len(text), 1.0)]
        decoded.append(Decoded(spans=spans, null_odds=odds))
    return examples, decoded


def test_threshold_curve_equals_the_full_evaluation_at_every_threshold():
    examples, decoded = _synthetic()
    curve = threshold_curve(examples, decoded)
    finite = sorted({d.null_odds for d in decoded if math.isfinite(d.null_odds)})
    probes = [finite[0] - 5, *finite, *[(a + b) / 2 for a, b in zip(finite, finite[1:])], finite[-1] + 5]
    for t in probes:
        reference = score_decoded(examples, decoded, t)  # the slow path: a full evaluation per threshold
        for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"):
            assert curve_at(curve, t, key) == pytest.approx(reference[key]), (t, key)
    assert curve["thresholds"][0] < finite[0] and curve["thresholds"][-1] > finite[-1]


def test_threshold_curve_peak_is_the_official_best_f1(tiny_bert_dir, tiny_squad_file):
    examples = load_squad(tiny_squad_file)
    decoded = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu").decode_examples(examples)
    scores = score_decoded(examples, decoded, 0.0)
    curve = threshold_curve(examples, decoded)
    assert max(curve["f1"]) == pytest.approx(scores["best_f1"])
    assert max(curve["exact"]) == pytest.approx(scores["best_exact"])
    assert curve_at(curve, 0.0, "f1") == pytest.approx(scores["f1"])


def test_without_any_span_everyone_abstains_at_every_threshold():
    examples, decoded = _synthetic()
    nothing = [(ex, d) for ex, d in zip(examples, decoded) if not d.spans]
    curve = threshold_curve([ex for ex, _ in nothing], [d for _, d in nothing])
    assert list(curve["thresholds"]) == [-1.0, 1.0]
    # one answerable question (0 points) and one unanswerable (100 points) abstain
    assert list(curve["f1"]) == [50.0, 50.0] and list(curve["NoAns_f1"]) == [100.0, 100.0]
    assert curve_at(curve, -1e9) == curve_at(curve, 1e9) == 50.0  # clamped to the first and last step


def test_a_group_without_questions_has_no_curve():
    examples, decoded = _synthetic()
    answerable = [(ex, d) for ex, d in zip(examples, decoded) if ex.answers]
    curve = threshold_curve([ex for ex, _ in answerable], [d for _, d in answerable])
    assert "HasAns_f1" in curve and "NoAns_f1" not in curve and "NoAns_exact" not in curve
    assert curve_at(curve, math.inf, "HasAns_f1") == curve_at(curve, math.inf, "f1")
