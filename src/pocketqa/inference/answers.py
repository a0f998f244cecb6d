"""What a user sees of a decoding: answers, the abstain decision and its answerability.

``QuestionAnswerer.__call__``, ``respond`` and ``records``, the HTTP API and ``pocketqa ask``
all format through these functions, so every surface shows the same decision and scores.
"""

from __future__ import annotations

import math

from pocketqa.inference.spans import Decoded


def format_response(d: Decoded, top_k: int, abstain: bool, threshold: float) -> dict:
    """One decoding as the HTTP API and ``pocketqa ask --json`` return it, whatever top_k is.

    Returns:
        ``{"answers": [...], "abstained", "answerability", "threshold"}``: up to top_k
        answers best first (each ``answer, start, end, score, null_odds``, as
        ``format_decoded``), whether the first is the no-answer, and the decision's
        answerability (at least 0.5 exactly when it answers) under ``threshold``.
    """
    result = format_decoded(d, top_k, abstain, threshold)
    answers = [result] if isinstance(result, dict) else result
    sure = answers[0]["answerability"]
    answers = [{k: v for k, v in a.items() if k != "answerability"} for a in answers]
    return {"answers": answers, "abstained": answers[0]["start"] is None, "answerability": sure,
            "threshold": float(threshold)}


def format_decoded(d: Decoded, top_k: int, abstain: bool, threshold: float):
    """One decoding as ``QuestionAnswerer.__call__`` returns it (dicts; a list when top_k > 1).

    Every entry carries the question's ``answerability`` (``answerability(null_odds,
    threshold)``: at least 0.5 exactly when the model answers). A span's ``score`` is
    its weight among the n-best; the no-answer's ``score`` is ``1 - answerability``,
    so it is above 0.5 exactly when the model abstains by its threshold.

    Args:
        d: The decoding of one question.
        top_k: 1 for one dict, more for a list of up to top_k dicts.
        abstain: Put the no-answer first when null odds exceed ``threshold`` (or no span exists).
        threshold: The no-answer threshold.
    """
    odds = finite(d.null_odds)
    sure = answerability(d.null_odds, threshold)
    answers = [
        {"answer": s.text, "start": s.start, "end": s.end, "score": s.probability, "null_odds": odds,
         "answerability": sure}
        for s in d.spans
    ]
    no_answer = {"answer": "", "start": None, "end": None, "score": 1.0 - sure, "null_odds": odds,
                 "answerability": sure}
    if (abstain and (not d.spans or d.null_odds > threshold)) or not answers:
        answers.insert(0, no_answer)
    return answers[0] if top_k == 1 else answers[:top_k]


def answerability(null_odds: float, threshold: float) -> float:
    """How sure the model is that the passage answers the question, with 0.5 at the threshold.

    ``sigmoid(threshold - null_odds)``: null_odds is a log-odds of the no-answer against
    the best span, so this is the best span's two-way probability against the no-answer,
    shifted so that the calibrated threshold sits at 0.5. At least 0.5 exactly when the
    model answers (null_odds <= threshold); 0.0 when no span exists (null_odds = +inf).
    """
    margin = threshold - null_odds
    if margin >= 0:
        return 1.0 / (1.0 + math.exp(-margin))
    z = math.exp(margin)  # margin < 0: no overflow, and -inf gives 0.0
    return z / (1.0 + z)


def finite(x: float, big: float = 1e6) -> float:
    """JSON has no infinity: clamp +-inf to a large finite value."""
    if math.isinf(x):
        return big if x > 0 else -big
    return float(x)
