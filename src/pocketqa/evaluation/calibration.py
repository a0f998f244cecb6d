"""The no-answer threshold for a new question source (a domain), from one decoding of its questions.

A threshold picked on SQuAD dev does not travel: it decides how often the model abstains,
and the right share of abstentions depends on how many of the domain's questions have an
answer. Two ways to pick one for a domain:

- labeled: the best-F1 threshold on questions with gold answers (what ``pocketqa evaluate
  --save-threshold`` stores), with a percentile bootstrap interval of that threshold and
  of the F1 at it, so that a user sees whether their few labels were enough;
- unlabeled: the user states the share R of questions they expect to be answerable, and
  the threshold makes the model abstain on the share 1 - R of the domain's questions
  (a quantile of their null odds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketqa.data.squad import to_squad_json
from pocketqa.errors import PocketQAError
from pocketqa.evaluation.metrics import exact_and_f1_scores, make_qid_to_has_ans
from pocketqa.evaluation.scoring import load_questions, score_decoded

CONFIDENCE = 0.95  # the bootstrap interval's coverage
_BLOCK_CELLS = 4_000_000  # resampled question slots per numpy block (bounds the bootstrap's memory)


def load_calibration_questions(path, data_format: str | None = None, offsets: str = "repair") -> list:
    """The questions of a calibration source: the one place calibration reads data.

    Any layout ``load_examples`` reads; unlabeled questions have empty answers (SQuAD JSON
    ``"answers": []``, rows with an empty ``answers.text``). Scores compare texts, so gold
    offsets are repaired by default, as in ``evaluate``.
    """
    return load_questions(path, data_format=data_format, offsets=offsets)


def has_labels(examples) -> bool:
    """Whether the questions carry gold answers: at least one of them has one.

    SQuAD JSON has no mark for "unlabeled": such questions are written with empty answers,
    which reads as all unanswerable. A labeled set without a single answerable question
    could only teach "abstain everywhere", so such a file counts as unlabeled.
    """
    return any(ex.answers for ex in examples)


def check_answerable_rate(rate: float) -> float:
    """Returns ``rate`` if it is a share in (0, 1], else raises PocketQAError."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate <= 1.0:
        raise PocketQAError(f"answerable rate must be a share in (0, 1] (1 = every question has an answer), "
                            f"found {rate!r}")
    return float(rate)


def check_method(examples, answerable_rate: float | None, source: str = "the questions") -> str:
    """The calibration method the inputs call for: "answerable_rate" or "labeled".

    Raises:
        PocketQAError: No rate was given and no question has a gold answer.
    """
    if answerable_rate is not None:
        check_answerable_rate(answerable_rate)
        return "answerable_rate"
    if not has_labels(examples):
        raise PocketQAError(
            f"{source}: no question has a gold answer, so the best-F1 threshold cannot be found; "
            "for unlabeled questions pass --answerable-rate R (the share you expect to be answerable)"
        )
    return "labeled"


@dataclass(frozen=True)
class QuestionScores:
    """Per-question numbers that score every threshold (arrays of one length, question order).

    Attributes:
        odds: Null odds; +inf where the model found no span (it abstains at every threshold).
        answered: F1 in [0, 1] of the question's best span (its answer at or below the threshold).
        abstained: F1 of answering "": 1.0 for an unanswerable question, else 0.0.
        gain: What answering instead of abstaining adds in the official best-threshold walk
            (metrics.find_best_threshold): the span's F1 for an answerable question; -1 for
            an unanswerable one with a non-empty span; 0 otherwise.
    """

    odds: np.ndarray
    answered: np.ndarray
    abstained: np.ndarray
    gain: np.ndarray

    @classmethod
    def from_decoded(cls, examples, decoded) -> QuestionScores:
        """Scores each question's best span against its gold answers (official F1)."""
        dataset = to_squad_json(examples)["data"]
        texts = {ex.id: (d.spans[0].text if d.spans else "") for ex, d in zip(examples, decoded)}
        _, f1 = exact_and_f1_scores(dataset, texts)
        has_answer = make_qid_to_has_ans(dataset)
        ids = [ex.id for ex in examples]
        answerable = np.array([has_answer[q] for q in ids], dtype=bool)
        answered = np.array([f1[q] for q in ids], dtype=np.float64)
        nonempty = np.array([bool(texts[q]) for q in ids], dtype=bool)
        return cls(
            odds=np.array([d.null_odds if d.spans else math.inf for d in decoded], dtype=np.float64),
            answered=answered,
            abstained=(~answerable).astype(np.float64),
            gain=np.where(answerable, answered, np.where(nonempty, -1.0, 0.0)),
        )


def abstain_share(odds: np.ndarray, threshold: float) -> float:
    """The share of questions the model abstains on at ``threshold`` (null odds > threshold)."""
    odds = np.asarray(odds, dtype=np.float64)
    return float(np.mean(odds > threshold)) if odds.size else 0.0


def f1_at(scores: QuestionScores, threshold: float) -> float:
    """Official F1 (percent) of the questions at ``threshold``."""
    return 100.0 * float(np.mean(np.where(scores.odds > threshold, scores.abstained, scores.answered)))


def rate_threshold(odds: Sequence[float] | np.ndarray, answerable_rate: float) -> float:
    """The threshold at which the model abstains on the share ``1 - answerable_rate`` of the questions.

    The target is k = round((1 - R) * n) abstentions (halves round up). Questions with
    equal null odds are answered or abstained on together, so when a tie straddles the
    target the threshold gives the count nearest to k, and on a draw the one that answers
    more. The threshold is always one of the observed odds (answer those at or below it),
    or one below the smallest when every question should abstain. R = 1 gives the largest
    finite odds: no question with a span abstains, and the value stays finite. Questions
    without a span (+inf odds) abstain at every threshold and count as abstentions.

    Args:
        odds: Null odds of the domain's questions.
        answerable_rate: R in (0, 1], the share expected to have an answer.

    Returns:
        A finite threshold (0.0 when no question has a span: all abstain anyway).
    """
    check_answerable_rate(answerable_rate)
    odds = np.asarray(odds, dtype=np.float64)
    if odds.size == 0:
        raise PocketQAError("no questions to calibrate on")
    finite = np.sort(odds[np.isfinite(odds)])
    if finite.size == 0:
        return 0.0
    target = math.floor((1.0 - answerable_rate) * odds.size + 0.5)
    values = np.unique(finite)
    never = odds.size - finite.size  # no span: they abstain whatever the threshold
    # Abstentions below every value, then at each distinct value (those strictly above it).
    candidates = np.concatenate([[values[0] - 1.0], values])
    counts = never + np.concatenate([[finite.size], finite.size - np.searchsorted(finite, values, side="right")])
    distance = np.abs(counts - target)
    nearest = np.flatnonzero(distance == distance.min())[-1]  # counts fall as thresholds rise: last = answers more
    return float(candidates[nearest])


def best_threshold(examples, decoded) -> float:
    """The best-F1 threshold exactly as ``pocketqa evaluate --save-threshold`` finds it."""
    return float(score_decoded(examples, decoded, 0.0)["best_f1_thresh"])


def walk_thresholds(scores: QuestionScores, samples: np.ndarray) -> np.ndarray:
    """The best-F1 threshold of each resample, by the official walk, for many resamples at once.

    The walk of metrics.find_best_threshold: start from "abstain everywhere", answer the
    questions in increasing null odds, keep the first running total that beats all before
    it; its threshold is the odds of the last question answered. When answering never
    helps, the threshold lies one below the resample's smallest odds (abstain everywhere),
    as score_decoded returns it.

    Args:
        scores: The questions' scores.
        samples: (resamples, n) question indices, one resample per row.

    Returns:
        (resamples,) thresholds.
    """
    rows = np.arange(samples.shape[0])
    odds = scores.odds[samples]
    order = np.argsort(odds, axis=1, kind="stable")
    sorted_odds = np.take_along_axis(odds, order, axis=1)
    # Summed from the same start as the official walk (the unanswerable count), in the same
    # order: totals that are equal on paper round alike, so the same one wins.
    start = scores.abstained[samples].sum(axis=1, keepdims=True)
    totals = np.cumsum(np.concatenate([start, np.take_along_axis(scores.gain[samples], order, axis=1)], axis=1),
                       axis=1)[:, 1:]
    best = np.argmax(totals, axis=1)  # the first maximum: a later equal total is no improvement
    below = np.where(np.isfinite(sorted_odds[:, 0]), sorted_odds[:, 0] - 1.0, 0.0)
    return np.where(totals[rows, best] > start[:, 0], sorted_odds[rows, best], below)


def bootstrap_interval(
    scores: QuestionScores, threshold: float, resamples: int = 1000, seed: int = 0, confidence: float = CONFIDENCE
) -> dict:
    """Percentile bootstrap intervals of the best-F1 threshold and of the F1 at ``threshold``.

    Each resample draws the n labeled questions again with replacement. The threshold
    interval holds the best-F1 thresholds of the resamples: where the threshold found on
    another n questions from the same source would fall. The F1 interval holds the F1 at
    ``threshold`` on each resample: how far the F1 measured on n questions can move by
    chance alone. Wide intervals mean too few labels.

    Args:
        scores: The labeled questions' scores.
        threshold: The threshold found on all of them.
        resamples: Number of resamples (>= 1).
        seed: Seed of the resampling (the same seed gives the same interval).
        confidence: Coverage of the interval (0.95: from the 2.5th to the 97.5th percentile).

    Returns:
        ``{"confidence", "resamples", "seed", "threshold": [low, high], "f1": [low, high]}``.
    """
    n = scores.odds.size
    rng = np.random.default_rng(seed)
    at_threshold = np.where(scores.odds > threshold, scores.abstained, scores.answered)
    block = max(1, _BLOCK_CELLS // max(n, 1))
    thresholds, f1s = [], []
    for start in range(0, resamples, block):
        samples = rng.integers(0, n, size=(min(block, resamples - start), n))
        thresholds.append(walk_thresholds(scores, samples))
        f1s.append(100.0 * at_threshold[samples].mean(axis=1))
    tail = 50.0 * (1.0 - confidence)
    bounds = (tail, 100.0 - tail)
    return {
        "confidence": confidence,
        "resamples": resamples,
        "seed": seed,
        "threshold": [float(v) for v in np.percentile(np.concatenate(thresholds), bounds)],
        "f1": [float(v) for v in np.percentile(np.concatenate(f1s), bounds)],
    }


def _point(scores: QuestionScores, threshold: float, labeled: bool) -> dict:
    return {"threshold": float(threshold), "abstain_share": abstain_share(scores.odds, threshold),
            "f1": f1_at(scores, threshold) if labeled else None}


def calibrate_decoded(
    examples, decoded, current_threshold: float, answerable_rate: float | None = None,
    resamples: int = 1000, seed: int = 0,
) -> dict:
    """Calibrates a threshold from decoded questions (the pure part of :func:`calibrate`).

    Args:
        examples: The domain's questions.
        decoded: Their decodings, in order.
        current_threshold: The threshold in use now, reported beside the new one.
        answerable_rate: R for the unlabeled method; None: the labeled method (needs gold
            answers). When both are there, the rate picks the threshold and the labels only
            score it.
        resamples: Bootstrap resamples of the labeled method (0: no interval).
        seed: Bootstrap seed.

    Returns:
        ``{"method", "questions", "labeled", "threshold", "abstain_share", "f1", "current"
        {threshold, abstain_share, f1}}``, plus "interval" (labeled method), or
        "answerable_rate" and, with labels, "labeled_answerable_rate" and "best" (rate method).
        F1 values are None without labels.
    """
    method = check_method(examples, answerable_rate)
    labeled = has_labels(examples)
    scores = QuestionScores.from_decoded(examples, decoded)
    threshold = rate_threshold(scores.odds, answerable_rate) if method == "answerable_rate" \
        else best_threshold(examples, decoded)
    report = {"method": method, "questions": len(examples), "labeled": labeled,
              **_point(scores, threshold, labeled), "current": _point(scores, current_threshold, labeled)}
    if method == "answerable_rate":
        report["answerable_rate"] = float(answerable_rate)
        if labeled:
            report["labeled_answerable_rate"] = float(np.mean(scores.abstained == 0.0))
            report["best"] = _point(scores, best_threshold(examples, decoded), labeled)
    elif resamples > 0:
        report["interval"] = bootstrap_interval(scores, threshold, resamples=resamples, seed=seed)
    return report


def calibrate(qa, examples, answerable_rate: float | None = None, resamples: int = 1000, seed: int = 0,
              progress: bool = False) -> dict:
    """Decodes the domain's questions once with ``qa`` and calibrates its threshold.

    ``qa`` is a QuestionAnswerer (any object with ``decode_examples`` and ``threshold``);
    its current threshold is reported beside the new one. See :func:`calibrate_decoded`.
    """
    check_method(examples, answerable_rate)  # before the slow decoding
    decoded = qa.decode_examples(examples, progress=progress)
    return calibrate_decoded(examples, decoded, qa.threshold, answerable_rate, resamples=resamples, seed=seed)


def calibration_entry(report: dict, data_path, qa) -> dict:
    """What ``calibrate --save`` stores beside the threshold: how it was found, on what, with which decoding.

    The decoding settings are kept because null odds depend on them.
    """
    entry = {"method": report["method"], "data": Path(data_path).name, "questions": report["questions"],
             "n_best": qa.n_best, "max_answer_length": qa.max_answer_length,
             **({"align_to_words": True} if qa.align_to_words else {})}
    if report["method"] == "answerable_rate":
        entry.update(answerable_rate=report["answerable_rate"], abstain_share=report["abstain_share"])
        if report["f1"] is not None:
            entry["f1"] = report["f1"]
    else:
        entry["best_f1"] = report["f1"]
        if "interval" in report:
            entry["interval"] = report["interval"]
    return entry


def format_table(report: dict) -> str:
    """The report as a small text table: current and calibrated thresholds, the interval or the best."""

    def f1(value) -> str:
        return f"{value:8.2f}" if value is not None else f"{'-':>8}"

    def row(name: str, point: dict) -> str:
        return f"{name:<16}{point['threshold']:>10.4f}{100 * point['abstain_share']:>10.1f} %{f1(point['f1'])}"

    if report["method"] == "answerable_rate":
        how = f"answerable rate {report['answerable_rate']:g}: abstain on {100 * (1 - report['answerable_rate']):.1f} %"
        if report["labeled"]:
            how += f" (the labels say {100 * report['labeled_answerable_rate']:.1f} % answerable)"
    else:
        how = "labeled: best F1"
    lines = [f"{report['questions']:,} questions; {how}",
             f"{'':<16}{'threshold':>10}{'abstains':>12}{'F1':>8}",
             row("current", report["current"]), row("calibrated", report)]
    if "best" in report:
        lines.append(row("best (labels)", report["best"]))
    if "interval" in report:
        iv = report["interval"]
        lo, hi = iv["threshold"]
        f_lo, f_hi = iv["f1"]
        lines.append(f"{100 * iv['confidence']:.0f} % interval: threshold [{lo:.4f}, {hi:.4f}], F1 [{f_lo:.2f}, "
                     f"{f_hi:.2f}] ({iv['resamples']:,} bootstrap resamples, seed {iv['seed']})")
    return "\n".join(lines)
