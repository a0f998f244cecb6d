"""EM and F1 at every no-answer threshold, from one decoding of a data set (pure, no model)."""

from __future__ import annotations

import math

import numpy as np

from pocketqa.data.squad import to_squad_json
from pocketqa.evaluation.metrics import exact_and_f1_scores, make_qid_to_has_ans


def threshold_curve(examples, decoded) -> dict:
    """EM and F1 (all, HasAns, NoAns) at every no-answer threshold, computed once.

    Each question is scored twice, with its best span and with "" (metrics.py's official
    scoring). At threshold t a question answers "" when its null odds exceed t, so sorting
    by null odds and taking cumulative sums of (span score - empty score) gives the score
    at every threshold without re-running the evaluation per threshold.

    Returns:
        ``{"thresholds": [k], "exact"/"f1"/"HasAns_f1"/"NoAns_f1"/...: [k]}`` in percent;
        the score at ``thresholds[i]`` holds on [thresholds[i], thresholds[i + 1]) (a step
        function: plot with ``drawstyle="steps-post"``). ``thresholds[0]`` lies below every
        finite null odds value (everyone abstains), the last one above all of them.
    """
    dataset = to_squad_json(examples)["data"]
    ids = [ex.id for ex in examples]
    raw = {ex.id: (d.spans[0].text if d.spans else "") for ex, d in zip(examples, decoded)}
    span_em, span_f1 = exact_and_f1_scores(dataset, raw)
    null_em, null_f1 = exact_and_f1_scores(dataset, {q: "" for q in ids})
    has_answer = make_qid_to_has_ans(dataset)
    # No span at all -> +inf odds: such a question abstains at every threshold.
    odds = np.array([d.null_odds if d.spans else math.inf for d in decoded], dtype=np.float64)
    order = np.argsort(odds, kind="stable")
    sorted_odds = odds[order]
    finite = np.unique(sorted_odds[np.isfinite(sorted_odds)])
    if finite.size:
        pad = max(1.0, 0.05 * float(finite[-1] - finite[0]))
        thresholds = np.concatenate([[finite[0] - pad], finite, [finite[-1] + pad]])
    else:
        thresholds = np.array([-1.0, 1.0])
    # How many questions (in sorted order) answer with their span at each threshold.
    answered = np.searchsorted(sorted_odds, thresholds, side="right")

    groups = {"": np.ones(len(ids), dtype=bool), "HasAns_": np.array([has_answer[q] for q in ids])}
    groups["NoAns_"] = ~groups["HasAns_"]
    curve = {"thresholds": thresholds}
    for metric, span, null in (("exact", span_em, null_em), ("f1", span_f1, null_f1)):
        span_v = np.array([span[q] for q in ids], dtype=np.float64)[order]
        null_v = np.array([null[q] for q in ids], dtype=np.float64)[order]
        for prefix, mask in groups.items():
            mask = mask[order]
            n = int(mask.sum())
            if n == 0:
                continue
            gain = np.concatenate([[0.0], np.cumsum(np.where(mask, span_v - null_v, 0.0))])
            curve[f"{prefix}{metric}"] = 100.0 * (null_v[mask].sum() + gain[answered]) / n
    return curve


def curve_at(curve: dict, threshold: float, key: str = "f1") -> float:
    """Reads the step function of :func:`threshold_curve` at one threshold."""
    i = int(np.searchsorted(curve["thresholds"], threshold, side="right")) - 1
    return float(curve[key][max(i, 0)])
