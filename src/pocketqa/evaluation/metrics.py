"""Official SQuAD 2.0 EM/F1, HasAns/NoAns splits and best thresholds, as small pure functions.

Re-implements the behaviour of the official ``evaluate-v2.0.py``
(https://rajpurkar.github.io/SQuAD-explorer/, "Evaluation Script v2.0"): the same answer
normalisation, the same per-question scores, the same output keys in the same order, and
the same best-threshold sweep. ``python -m bench.tools.metrics_official`` compares
``squad_v2_eval`` with the official script on the full dev set; see docs/metrics_check.md.

One deliberate difference: the official script prints "Missing prediction for X" and then
fails with a KeyError while computing HasAns/NoAns. Here missing questions are skipped
everywhere (with a warning), or rejected up front with ``missing_ok=False``.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping

from pocketqa.errors import PocketQAError

# Same token set as the official script's ``set(string.punctuation)`` (ASCII only).
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


class MetricsInputError(PocketQAError, ValueError):
    """Predictions or no-answer probabilities that cannot be scored (the CLI exits 2 with the message)."""


class MissingPredictionsError(MetricsInputError):
    """Some questions of the dataset have no prediction and ``missing_ok`` was False."""


def normalize_answer(s: str) -> str:
    """Normalises an answer the way the official script does.

    Lower-cases, deletes ASCII punctuation, replaces the words a/an/the by a space, then
    collapses whitespace. The order matters: punctuation goes before articles, so
    ``"the-end"`` becomes ``"theend"`` and keeps its letters.

    Args:
        s: Any answer text.

    Returns:
        The normalised text ("" when nothing but punctuation, articles or spaces).
    """
    text = s.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def get_tokens(s: str) -> list[str]:
    """Splits the normalised answer on whitespace (``[]`` for an empty answer)."""
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(gold: str, pred: str) -> int:
    """Returns 1 when gold and prediction normalise to the same text, else 0."""
    return int(normalize_answer(gold) == normalize_answer(pred))


def compute_f1(gold: str, pred: str) -> float:
    """Token-level F1 between one gold answer and a prediction.

    Tokens are counted as a multiset (a token repeated twice in both counts twice).
    When either side has no tokens (a no-answer), F1 is 1.0 if both have none, else 0.0,
    as in the official script.

    Args:
        gold: One gold answer text ("" for unanswerable).
        pred: The predicted text ("" for no answer).

    Returns:
        F1 in [0, 1].
    """
    gold_toks = get_tokens(gold)
    pred_toks = get_tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    num_same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _articles(dataset: list[dict] | dict) -> list[dict]:
    """Accepts the official JSON's "data" list or the whole JSON object."""
    if isinstance(dataset, Mapping):
        return dataset["data"]
    return dataset


def _questions(dataset: list[dict] | dict) -> Iterable[dict]:
    for article in _articles(dataset):
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def gold_answers(qa: dict) -> list[str]:
    """Gold texts of one question: those that normalise to non-empty, else ``[""]``.

    Args:
        qa: One entry of a paragraph's "qas" list (needs "answers").

    Returns:
        The texts to take the max over; ``[""]`` means only "no answer" is right.
    """
    texts = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
    return texts or [""]


def make_qid_to_has_ans(dataset: list[dict] | dict) -> dict[str, bool]:
    """Maps each question id to whether it has any gold answer (in file order)."""
    return {qa["id"]: bool(qa["answers"]) for qa in _questions(dataset)}


def missing_predictions(dataset: list[dict] | dict, preds: Mapping[str, str]) -> list[str]:
    """Question ids of the dataset that have no prediction, in file order."""
    return [qa["id"] for qa in _questions(dataset) if qa["id"] not in preds]


def exact_and_f1_scores(
    dataset: list[dict] | dict, preds: Mapping[str, str]
) -> tuple[dict[str, int], dict[str, float]]:
    """Raw per-question EM and F1, each the max over the gold answers.

    Questions without a prediction are left out of both dicts, as in the official script.

    Args:
        dataset: The official JSON's "data" list (or the whole JSON object).
        preds: Question id -> predicted text ("" for no answer).

    Returns:
        ``(exact, f1)``: question id -> EM in {0, 1} and question id -> F1 in [0, 1].
    """
    exact: dict[str, int] = {}
    f1: dict[str, float] = {}
    for qa in _questions(dataset):
        qid = qa["id"]
        if qid not in preds:
            continue
        golds = gold_answers(qa)
        exact[qid] = max(compute_exact(g, preds[qid]) for g in golds)
        f1[qid] = max(compute_f1(g, preds[qid]) for g in golds)
    return exact, f1


def apply_no_ans_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    na_prob_thresh: float,
) -> dict[str, float]:
    """Scores after answering "" wherever ``na_probs[qid] > na_prob_thresh``.

    A question switched to "no answer" scores 1.0 when it is unanswerable, else 0.0.

    Args:
        scores: Question id -> raw EM or F1.
        na_probs: Question id -> no-answer probability (any score where larger means
            "more likely unanswerable"); must cover every id in ``scores``.
        qid_to_has_ans: Question id -> whether it has a gold answer.
        na_prob_thresh: Strictly above this, the prediction counts as empty.

    Returns:
        Question id -> score, same keys as ``scores``.
    """
    return {
        qid: float(not qid_to_has_ans[qid]) if na_probs[qid] > na_prob_thresh else s
        for qid, s in scores.items()
    }


def make_eval_dict(
    exact: Mapping[str, float], f1: Mapping[str, float], qids: list[str] | None = None
) -> OrderedDict:
    """Percent EM and F1 over ``qids`` (all scored questions when None), plus the count."""
    if qids is None:
        qids = list(exact)
    total = len(qids)
    return OrderedDict(
        [
            ("exact", 100.0 * sum(exact[q] for q in qids) / total),
            ("f1", 100.0 * sum(f1[q] for q in qids) / total),
            ("total", total),
        ]
    )


def find_best_threshold(
    preds: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """The no-answer threshold that maximises the total score, and that score.

    Matches the official ``find_best_thresh``: start as if every question were answered
    "" (each unanswerable one scores 1), then walk the questions by increasing
    ``na_probs`` (ties keep the order of ``na_probs``), switching each one to its raw
    prediction: an answerable one adds its raw score, an unanswerable one with a
    non-empty prediction loses 1. The best running total wins; the threshold is the
    ``na_probs`` of the last question switched (0.0 if none helps).

    Args:
        preds: Question id -> predicted text.
        scores: Question id -> raw EM or F1 (only these ids are counted).
        na_probs: Question id -> no-answer probability.
        qid_to_has_ans: Question id -> whether it has a gold answer.

    Returns:
        ``(best_score_percent, best_threshold)``; the percentage divides by ``len(scores)``.
    """
    # The official script counts every unanswerable question of the dataset here; it never
    # gets this far with a prediction missing. Counting only scored ones keeps the total
    # within len(scores) when missing predictions are skipped (else best_* could pass 100).
    cur = sum(1 for qid in scores if not qid_to_has_ans[qid])
    best, best_thresh = cur, 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            cur += scores[qid]
        elif preds[qid]:
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def _check_predictions(missing: list[str], missing_ok: bool, shown: int = 5) -> None:
    if not missing:
        return
    head = ", ".join(missing[:shown]) + (", ..." if len(missing) > shown else "")
    if not missing_ok:
        raise MissingPredictionsError(
            f"{len(missing)} question(s) have no prediction: {head}. Predict every "
            f"question (\"\" for no answer) or pass missing_ok=True to skip them."
        )
    warnings.warn(f"Missing prediction for {len(missing)} question(s), skipped: {head}")


def squad_v2_eval(
    dataset: list[dict] | dict,
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    missing_ok: bool = True,
) -> OrderedDict:
    """The official SQuAD 2.0 evaluation, as ``evaluate-v2.0.py`` prints it.

    Keys, in order: exact, f1, total, HasAns_exact, HasAns_f1, HasAns_total,
    NoAns_exact, NoAns_f1, NoAns_total (a HasAns/NoAns group is left out when the
    dataset has no such question), then best_exact, best_exact_thresh, best_f1,
    best_f1_thresh only when ``na_probs`` is given (as the official script does only
    with ``--na-prob-file``). Scores are percentages; totals are question counts.

    Args:
        dataset: The official JSON's "data" list (or the whole JSON object).
        preds: Question id -> predicted text ("" for no answer).
        na_probs: Question id -> no-answer probability; None means 0.0 everywhere.
        na_prob_thresh: Predictions with ``na_probs[qid] > na_prob_thresh`` count as "".
        missing_ok: When True, questions without a prediction are skipped (with a
            warning) and left out of every total; when False they raise.

    Returns:
        An OrderedDict with the official keys.

    Raises:
        MissingPredictionsError: ``missing_ok`` is False and some question has no
            prediction (a ValueError naming the first ids).
        MetricsInputError: No question has a prediction, or ``na_probs`` lacks a scored id
            (a ValueError).
    """
    _check_predictions(missing_predictions(dataset, preds), missing_ok)
    exact_raw, f1_raw = exact_and_f1_scores(dataset, preds)
    if not exact_raw:
        raise MetricsInputError("No question of the dataset has a prediction; check the question ids.")
    if na_probs is None:
        na_probs_used: Mapping[str, float] = {qid: 0.0 for qid in preds}
    else:
        na_probs_used = na_probs
        lacking = [qid for qid in exact_raw if qid not in na_probs]
        if lacking:
            raise MetricsInputError(
                f"na_probs has no value for {len(lacking)} predicted question(s), "
                f"e.g. {lacking[0]}; give a no-answer probability for every prediction."
            )
    qid_to_has_ans = make_qid_to_has_ans(dataset)
    exact = apply_no_ans_threshold(exact_raw, na_probs_used, qid_to_has_ans, na_prob_thresh)
    f1 = apply_no_ans_threshold(f1_raw, na_probs_used, qid_to_has_ans, na_prob_thresh)

    out = make_eval_dict(exact, f1)
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has_ans in qid_to_has_ans.items() if has_ans == wanted and q in exact]
        if qids:
            for key, value in make_eval_dict(exact, f1, qids).items():
                out[f"{prefix}_{key}"] = value
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = find_best_threshold(
            preds, exact_raw, na_probs, qid_to_has_ans
        )
        out["best_f1"], out["best_f1_thresh"] = find_best_threshold(
            preds, f1_raw, na_probs, qid_to_has_ans
        )
    return out
