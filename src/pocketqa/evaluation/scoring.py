"""Scoring a model or a predictions file on a SQuAD file, and calibrating the threshold."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from pocketqa.data.formats import load_examples
from pocketqa.data.predictions import write_prediction_rows
from pocketqa.data.squad import read_json, to_squad_json, write_json_atomic
from pocketqa.errors import PocketQAError
from pocketqa.evaluation.metrics import squad_v2_eval
from pocketqa.modeldir import store_threshold
from pocketqa.models import resolve_model

BEST_KEYS = ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")


def load_questions(
    path, data_format: str | None = None, offsets: str = "repair", gold: bool = True
) -> list:
    """``load_examples`` (any format), refusing a source with no questions (nothing to score or predict).

    Scoring compares answer texts only (as the official evaluate-v2.0.py), so offsets
    default to ``repair``; prediction passes ``gold=False`` and never reads answers.
    """
    examples = load_examples(path, format=data_format, offsets=offsets, gold=gold)
    if not examples:
        raise PocketQAError(f"{path}: the file holds no questions")
    return examples


def _type_names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def _read_prediction_map(path: str | os.PathLike, what: str, kind: type | tuple[type, ...]) -> dict:
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise PocketQAError(f"{path}: {what} must be a JSON object {{question id: value}}")
    for qid, value in obj.items():
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PocketQAError(f"{path}: question id {qid!r}: {what} value must be {_type_names(kind)}, found {value!r}")
    return obj


def evaluate_files(
    data_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    null_odds_path: str | os.PathLike | None = None,
    na_prob_thresh: float = 1.0,
    data_format: str | None = None,
    offsets: str = "repair",
) -> dict:
    """The official evaluate-v2.0.py on files: same inputs, same output keys.

    ``null_odds_path`` plays the role of the official --na-prob-file (and
    ``na_prob_thresh`` of --na-prob-thresh): questions whose odds exceed it count as
    answered "" for exact/f1, and best_* thresholds are searched over the odds.
    """
    examples = load_questions(data_path, data_format, offsets)
    preds = _read_prediction_map(predictions_path, "prediction", str)
    odds = None
    if null_odds_path is not None:
        odds = {k: float(v) for k, v in _read_prediction_map(null_odds_path, "null odds", (int, float)).items()}
    known = {ex.id for ex in examples}
    unknown = [qid for qid in preds if qid not in known]
    if unknown:
        raise PocketQAError(f"{predictions_path}: {len(unknown)} prediction id(s) not in {data_path}, e.g. {unknown[0]!r}")
    if odds is not None:
        missing = [ex.id for ex in examples if ex.id not in odds]
        if missing:
            raise PocketQAError(f"{null_odds_path}: no null odds for {len(missing)} question(s), e.g. {missing[0]!r}")
    dataset = to_squad_json(examples)["data"]
    return squad_v2_eval(dataset, preds, na_probs=odds, na_prob_thresh=na_prob_thresh)


def score_decoded(examples, decoded, threshold: float) -> dict:
    """Official scores at ``threshold`` plus best_* thresholds from the real null odds.

    exact/f1 use answers thresholded at ``threshold``; best_* come from the best span of
    every question (never abstaining) ranked by null odds, as the official
    find_all_best_thresh expects. (The transformers examples pass all-zero odds here,
    transformers #7319, which makes best_* meaningless.)
    """
    dataset = to_squad_json(examples)["data"]
    at_threshold = {ex.id: d.answer(threshold) for ex, d in zip(examples, decoded)}
    raw = {ex.id: (d.spans[0].text if d.spans else "") for ex, d in zip(examples, decoded)}
    odds = {ex.id: (d.null_odds if math.isfinite(d.null_odds) else 1e6) for ex, d in zip(examples, decoded)}
    scores = dict(squad_v2_eval(dataset, at_threshold))
    best = dict(squad_v2_eval(dataset, raw, na_probs=odds, na_prob_thresh=math.inf))
    for metric in ("exact", "f1"):
        # The official search starts from "abstain everywhere" with threshold 0.0, which is
        # right for na_probs in [0, 1] but not for unbounded null odds: when abstaining
        # everywhere wins, return a threshold below every odds value instead.
        thresh = best[f"best_{metric}_thresh"]
        check = squad_v2_eval(dataset, {q: ("" if odds[q] > thresh else t) for q, t in raw.items()})
        if abs(check[metric] - best[f"best_{metric}"]) > 1e-9:
            best[f"best_{metric}_thresh"] = min(odds.values()) - 1.0
    for k in BEST_KEYS:
        scores[k] = best[k]
    scores["threshold"] = threshold
    return scores


def score_answerer(qa, examples, progress: bool = False) -> dict:
    """Scores of a ``QuestionAnswerer`` on ``examples``: ``score_decoded`` at ``qa.threshold``.

    The one way a model is scored (``pocketqa evaluate``, and dev evaluation while
    training): the answers come from ``qa.decode_examples`` with the answerer's own
    window, scoring and word-alignment settings, so the scores are those users get.
    """
    decoded = qa.decode_examples(examples, progress=progress)
    return score_decoded(examples, decoded, qa.threshold)


def format_table(scores: dict, speed: dict | None = None) -> str:
    """The scores as a small text table, with the timing line when ``speed`` is given."""
    rows = [
        ("all", scores.get("exact"), scores.get("f1"), scores.get("total")),
        ("HasAns", scores.get("HasAns_exact"), scores.get("HasAns_f1"), scores.get("HasAns_total")),
        ("NoAns", scores.get("NoAns_exact"), scores.get("NoAns_f1"), scores.get("NoAns_total")),
    ]
    lines = [f"{'split':<8}{'EM':>8}{'F1':>8}{'n':>8}"]
    for name, em, f1, n in rows:
        if n:
            lines.append(f"{name:<8}{em:>8.2f}{f1:>8.2f}{n:>8d}")
    if speed:
        lines.append(f"{speed['questions']} questions in {speed['seconds']:.1f} s "
                     f"({speed['questions_per_second']:.1f} questions/s)")
    lines.append(
        f"threshold {scores['threshold']:.4f}; best F1 {scores['best_f1']:.2f} at {scores['best_f1_thresh']:.4f}, "
        f"best EM {scores['best_exact']:.2f} at {scores['best_exact_thresh']:.4f}"
    )
    return "\n".join(lines)


def evaluate_model(
    qa,
    data_path,
    save_threshold: bool = False,
    model_arg=None,
    data_format: str | None = None,
    offsets: str = "repair",
    save_predictions: str | os.PathLike | None = None,
    domain: str | None = None,
) -> dict:
    """Predicts and scores a data source; optionally stores the best-F1 threshold in the model dir.

    ``qa`` is any object with ``decode_examples`` and the decoding settings of a
    ``QuestionAnswerer`` (threshold, scoring, n_best, max_answer_length, align_to_words):
    evaluation needs nothing else from inference (``save_predictions`` also needs ``records``).

    Args:
        qa: The answerer.
        data_path: Any source ``load_examples`` reads.
        save_threshold: Store the best-F1 threshold in ``model_arg``'s pocketqa.json.
        model_arg: The model as the user named it.
        data_format / offsets: How to read ``data_path``.
        save_predictions: A directory to write ``predictions.json`` (each question's best
            span, for the official script with ``--na-prob-file null_odds.json``),
            ``null_odds.json`` and ``predictions.jsonl`` (one row per question, thresholded).

    Returns {"scores": official keys + best_* + threshold, "speed": {questions, seconds,
    questions_per_second}, "table": text}. The timing stays out of the scores, so that the
    same data, model and settings give the same scores JSON byte for byte.
    """
    examples = load_questions(data_path, data_format, offsets)
    started = time.perf_counter()
    decoded = qa.decode_examples(examples, progress=True)
    seconds = time.perf_counter() - started
    scores = score_decoded(examples, decoded, qa.threshold)
    speed = {"questions": len(examples), "seconds": round(seconds, 3),
             "questions_per_second": round(len(examples) / seconds, 2) if seconds > 0 else None}
    if save_predictions is not None:
        save_prediction_files(save_predictions, qa, examples, decoded)
    if save_threshold:
        model_dir = Path(resolve_model(model_arg))
        if not model_dir.is_dir():
            raise PocketQAError(f"--save-threshold needs a local model directory, got {model_arg!r}")
        # The decoding settings the threshold was found with: null odds depend on them.
        calibration = {"data": str(data_path), "best_f1": scores["best_f1"], "best_exact": scores["best_exact"],
                       "n_best": qa.n_best, "max_answer_length": qa.max_answer_length,
                       **({"align_to_words": True} if qa.align_to_words else {})}
        # Keys of the stored entry that other steps wrote (e.g. "backend") survive; the ones
        # calibration owns are all replaced, so an earlier align_to_words cannot linger.
        store_threshold(model_dir, qa.scoring, scores["best_f1_thresh"], calibration, domain=domain)
        scores["saved_threshold"] = scores["best_f1_thresh"]
    return {"scores": scores, "speed": speed, "table": format_table(scores, speed)}


def save_prediction_files(directory: str | os.PathLike, qa, examples, decoded) -> None:
    """``predictions.json`` (best spans), ``null_odds.json`` and ``predictions.jsonl`` (rows) in ``directory``.

    The official evaluate-v2.0.py thresholds with its own ``--na-prob-thresh`` and searches
    the best threshold over the na-prob file, which is only right on each question's best
    span; the thresholded decisions are in the rows (``abstained``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic({ex.id: (d.spans[0].text if d.spans else "") for ex, d in zip(examples, decoded)},
                      directory / "predictions.json", indent=2)
    write_json_atomic({ex.id: max(-1e6, min(1e6, d.null_odds)) for ex, d in zip(examples, decoded)},  # JSON has no inf
                      directory / "null_odds.json", indent=2)
    write_prediction_rows(directory / "predictions.jsonl", qa.records(examples, decoded, qa.threshold),
                          {"threshold": qa.threshold})
