"""Start/end logits over windows -> n-best answers, null score, abstain decision.

The rules follow transformers' examples ``utils_qa.postprocess_qa_predictions`` with
``version_2_with_negative=True`` so that scores are comparable with published numbers:

- candidate spans: the top ``n_best`` start and top ``n_best`` end positions of each
  window, both inside the context, end >= start, at most ``max_answer_length`` tokens;
  span score = start_logit + end_logit;
- null score = the *minimum* over the example's windows of start[CLS] + end[CLS];
- score_diff = null score - best span score; abstain when score_diff > threshold.
  score_diff is what the official evaluation calls the "na_prob" of a question (we call
  it ``null_odds``): larger means "more likely no answer".

One deliberate difference: when no valid span exists at all, utils_qa answers the
literal text "empty"; we abstain instead (null_odds = +inf).

``scoring="pipeline"`` instead scores like transformers' QA pipeline (4.x; removed in 5.3),
for users who want the answers their pipeline code gave: ``pipeline_rule.py``.

Within one window both rules pick the same best span and the same null decision at
threshold 0; they can differ when a question needs several windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pocketqa.data.features import Features
from pocketqa.errors import PocketQAError
from pocketqa.inference.pipeline_rule import decode_pipeline
from pocketqa.inference.spans import Decoded, Span, span_text

SCORINGS = ("logits", "pipeline")


def check_scoring(scoring: str) -> str:
    """Returns ``scoring`` if it names a scoring rule, else raises PocketQAError."""
    if scoring not in SCORINGS:
        raise PocketQAError(f"scoring must be one of {', '.join(SCORINGS)}, found {scoring!r}")
    return scoring


def check_align_to_words(scoring: str, align_to_words: bool) -> bool:
    """Returns ``align_to_words`` if it is a bool usable with ``scoring``, else raises PocketQAError."""
    if not isinstance(align_to_words, bool):
        raise PocketQAError(f"align_to_words must be True or False, found {align_to_words!r}")
    if align_to_words and scoring != "pipeline":
        raise PocketQAError(
            f"align_to_words (--align-to-words) needs scoring='pipeline' (--scoring pipeline), found {scoring!r}: "
            "it is the QA pipeline's word widening; utils_qa's rule never widens"
        )
    return align_to_words


def decode_example(
    context: str,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[Sequence[tuple[int, int] | None]],
    cls_index: Sequence[int],
    n_best: int = 20,
    max_answer_length: int = 30,
    scoring: str = "logits",
    word_ids: Sequence[Sequence[int | None]] | None = None,
    align_to_words: bool = False,
) -> Decoded:
    """Decodes one question from the logits of all its windows.

    Args:
        context: The passage the offsets point into.
        start_logits: One float array per window, of length >= len(offsets[w]) (extra
            positions, e.g. padding, are ignored).
        end_logits: Same shape as start_logits.
        offsets: Per window, per token: (char_start, char_end) or None outside the context.
        cls_index: Per window, the position of the null ("no answer") token.
        n_best: Candidates kept per window per side, and in the final list.
        max_answer_length: Longest answer in tokens.
        scoring: "logits" (utils_qa, the default) or "pipeline" (see the module docstring).
        word_ids: Per window, per token: its word id (``Features.word_ids``); needed by
            align_to_words.
        align_to_words: Widen spans to whole words, as the QA pipeline's default; only
            with scoring="pipeline".
    """
    if check_align_to_words(check_scoring(scoring), align_to_words) and word_ids is None:
        raise PocketQAError("align_to_words needs the windows' word ids (make_features(..., word_ids=True))")
    if scoring == "pipeline":
        words = word_ids if align_to_words else None
        return decode_pipeline(context, start_logits, end_logits, offsets, cls_index, n_best, max_answer_length, words)
    lengths = np.fromiter((len(offs) for offs in offsets), dtype=np.int64, count=len(offsets))
    width = int(lengths.max()) if len(lengths) else 0
    char_start = np.full((len(offsets), width), -1, dtype=np.int64)
    char_end = np.full_like(char_start, -1)
    for w, offs in enumerate(offsets):
        for j, o in enumerate(offs):
            if o is not None:
                char_start[w, j], char_end[w, j] = o
    starts, ends = _padded(start_logits, lengths, width), _padded(end_logits, lengths, width)
    windows = _Windows(starts, ends, lengths, char_start, char_end, np.asarray(cls_index, dtype=np.int64).reshape(-1),
                       np.zeros(len(offsets), dtype=np.int64))
    return _decode_logits([context], windows, n_best, max_answer_length)[0]


@dataclass(frozen=True)
class _Windows:
    """Padded per-window arrays the logits rule reads (row w = window w).

    starts / ends: float32 or float64 [n, width] logits; lengths: tokens per window; char_start /
    char_end: context characters per token (-1 outside the context); cls_index: the null
    position per window; example_index: each window's question (windows of a question
    contiguous and in order).
    """

    starts: np.ndarray
    ends: np.ndarray
    lengths: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray
    cls_index: np.ndarray
    example_index: np.ndarray


def _padded(logits, lengths: np.ndarray, width: int) -> np.ndarray:
    """[n, width] per-window logits (a 2-D array, or one array per window); 0 past each length.

    float32 stays float32 (half the memory to sort through); anything else becomes float64.
    Scores are always added up in float64, as utils_qa's.
    """
    if isinstance(logits, np.ndarray) and logits.ndim == 2 and logits.shape[1] >= width:
        return logits[:, :width] if logits.dtype == np.float32 else np.asarray(logits[:, :width], dtype=np.float64)
    dtypes = {getattr(x, "dtype", None) for x in logits}
    out = np.zeros((len(lengths), width), dtype=np.float32 if dtypes == {np.dtype(np.float32)} else np.float64)
    for w, n in enumerate(lengths.tolist()):
        out[w, :n] = logits[w][:n]
    return out


def _top(x: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """[rows, min(n, width)] positions of each row's n largest values (within its length), best first; -1 past.

    Matches ``np.argsort(row[:length])[-1 : -n - 1 : -1]`` per row, as utils_qa picks its
    candidates: rows without ties among their top n + 1 values have only one such order,
    found on the whole array at once; the few rows with ties (or inf / NaN) are sorted alone the
    way utils_qa does, so that ties are broken exactly as there.
    """
    rows, width = x.shape
    k = min(n, width)
    if k == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    masked = np.where(np.arange(width)[None, :] < lengths[:, None], x, -np.inf)
    k1 = min(k + 1, width)  # one more than kept: a tie at the cut changes which are kept
    if k1 < width:
        part = np.argpartition(masked, width - k1, axis=1)[:, width - k1 :]
    else:
        part = np.broadcast_to(np.arange(width), (rows, width))
    at = np.arange(rows)[:, None]  # row of each element, for indexing row by row
    values = masked[at, part]
    order = np.argsort(-values, axis=1, kind="stable")
    top = part[at, order]
    values = values[at, order]
    real = np.arange(k1)[None, :] < lengths[:, None]
    tied = ((values[:, 1:] == values[:, :-1]) & real[:, 1:]).any(axis=1) | ~np.isfinite(x).all(axis=1)
    top = np.where(real, top, -1)[:, :k]
    for w in np.flatnonzero(tied).tolist():
        n_w = int(lengths[w])
        exact = np.argsort(x[w, :n_w].astype(np.float64))[-1 : -n - 1 : -1]
        top[w] = -1
        top[w, : len(exact)] = exact
    return top


def _decode_logits(contexts: Sequence[str], windows: _Windows, n_best: int, max_answer_length: int) -> list[Decoded]:
    """utils_qa's rule for every question at once (see the module docstring).

    Candidates are found for all windows together; each question then keeps its n-best
    of spans and null sorted together, the null re-added if it fell out (as utils_qa), and
    a softmax over that list gives each entry a probability-like score.
    """
    w = windows
    n_windows = len(w.lengths)
    rows = np.arange(n_windows)
    null_per_window = w.starts[rows, w.cls_index].astype(np.float64) + w.ends[rows, w.cls_index]
    null = np.full(len(contexts), np.inf)
    np.minimum.at(null, w.example_index, null_per_window)
    # Candidates: top starts x top ends of each window, in utils_qa's order (window, start
    # rank, end rank), so that a stable sort breaks score ties as its Python sort does.
    s_top, e_top = _top(w.starts, w.lengths, n_best), _top(w.ends, w.lengths, n_best)
    in_context = w.char_start >= 0
    s_at, e_at = np.maximum(s_top, 0), np.maximum(e_top, 0)
    at = rows[:, None]
    s_ok = (s_top >= 0) & in_context[at, s_at]
    e_ok = (e_top >= 0) & in_context[at, e_at]
    s_grid, e_grid = s_top[:, :, None], e_top[:, None, :]
    k = s_top.shape[1]
    valid = (s_ok[:, :, None] & e_ok[:, None, :] & (e_grid >= s_grid)
             & (e_grid - s_grid + 1 <= max_answer_length)).reshape(n_windows, k * k)
    scores = (w.starts[at, s_at].astype(np.float64)[:, :, None]
              + w.ends[at, e_at].astype(np.float64)[:, None, :]).reshape(n_windows, k * k)
    if valid.shape[1] > n_best:
        # A span below its window's n_best-th score is below the n_best-th of its question
        # too: only spans scoring at least that (ties included) can be kept.
        masked = np.where(valid, scores, -np.inf)
        floor = np.partition(masked, valid.shape[1] - n_best, axis=1)[:, valid.shape[1] - n_best]
        valid &= (masked >= np.where(np.isnan(floor), -np.inf, floor)[:, None]) | np.isnan(masked)
    cand_w, cand_flat = np.nonzero(valid)
    cand_score = scores[cand_w, cand_flat]
    cand_start = w.char_start[cand_w, s_top[cand_w, cand_flat // k]] if k else np.zeros(0, dtype=np.int64)
    cand_end = w.char_end[cand_w, e_top[cand_w, cand_flat % k]] if k else np.zeros(0, dtype=np.int64)
    # Spans and nulls together, per question best first; a null comes after its spans on ties.
    has_null = np.isfinite(null)
    questions = np.concatenate([w.example_index[cand_w], np.flatnonzero(has_null)])
    scores = np.concatenate([cand_score, null[has_null]])
    is_null = np.concatenate([np.zeros(len(cand_w), dtype=bool), np.ones(int(has_null.sum()), dtype=bool)])
    order = np.lexsort((is_null, -scores, questions))  # stable: candidate order kept within ties
    questions, scores, is_null = questions[order], scores[order], is_null[order]
    first = np.searchsorted(questions, np.arange(len(contexts) + 1))
    rank = np.arange(len(questions)) - first[questions]
    # The n_best best of each question; its null always stays, re-added last when it fell out.
    position = np.where(is_null & (rank >= n_best), n_best, rank)
    keep = np.lexsort((position, questions))
    keep = keep[(rank < n_best)[keep] | is_null[keep]]
    questions, scores, which = questions[keep], scores[keep], np.where(is_null, -1, order)[keep]
    bounds = np.searchsorted(questions, np.arange(len(contexts) + 1))
    # Softmax over each question's kept list. Each sum is np.sum over that list alone, as
    # in utils_qa: a pairwise sum, whose rounding depends on the list's length.
    has_kept = np.diff(bounds) > 0
    top = np.zeros(len(contexts))
    top[has_kept] = np.maximum.reduceat(scores, bounds[:-1][has_kept])
    weights = np.exp(scores - top[questions])
    total = np.array([weights[a:b].sum() for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())])
    probs = (weights / total[questions]).tolist() if len(questions) else []
    starts_chars, ends_chars = cand_start.tolist(), cand_end.tolist()
    scores, which, bounds, null = scores.tolist(), which.tolist(), bounds.tolist(), null.tolist()
    out = []
    for q, context in enumerate(contexts):
        a, b = bounds[q], bounds[q + 1]
        null_probability = 0.0
        spans = []
        for c, score, p in zip(which[a:b], scores[a:b], probs[a:b]):
            if c < 0:
                null_probability = p
                continue
            text, cs, ce = span_text(context, starts_chars[c], ends_chars[c])
            # No characters (e.g. a byte-level BPE token for a lone space, whose trimmed
            # offsets are empty): not an answer. utils_qa also skips such "" texts when it
            # picks the best non-null prediction (their probabilities still count in the
            # softmax above, as in utils_qa; they are just not listed).
            if ce > cs:
                spans.append(Span(text, cs, ce, score, p))
        null_odds = null[q] - spans[0].score if spans else math.inf
        out.append(Decoded(spans=spans, null_score=null[q], null_odds=null_odds, null_probability=null_probability))
    return out


def decode_features(
    examples: Sequence,
    features: Features,
    start_logits: Sequence[np.ndarray] | np.ndarray,
    end_logits: Sequence[np.ndarray] | np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
    scoring: str = "logits",
    align_to_words: bool = False,
) -> list[Decoded]:
    """Decodes every example from the logits of its windows (rows aligned with ``features``).

    The logits are one array per window (at least as long as the window) or a 2-D array
    [n_windows, width >= the longest window]. With scoring="logits" every window is
    decoded at once; ``align_to_words`` (scoring="pipeline" only) needs features made with
    ``word_ids=True``.
    """
    if check_align_to_words(check_scoring(scoring), align_to_words) and features.word_ids is None:
        raise PocketQAError("align_to_words needs features made with make_features(..., word_ids=True)")
    if scoring == "logits":
        width = features.char_start.shape[1] if len(features) else 0
        windows = _Windows(_padded(start_logits, features.lengths, width), _padded(end_logits, features.lengths, width),
                           features.lengths, features.char_start, features.char_end, features.cls_index,
                           features.example_index)
        return _decode_logits([ex.context for ex in examples], windows, n_best, max_answer_length)
    words = features.word_ids if align_to_words else None
    by_example: list[list[int]] = [[] for _ in examples]
    for w, ex_idx in enumerate(features.example_index.tolist()):
        by_example[ex_idx].append(w)
    out = []
    for ex, windows in zip(examples, by_example):
        out.append(
            decode_pipeline(
                ex.context,
                [start_logits[w] for w in windows],
                [end_logits[w] for w in windows],
                [features.offsets[w] for w in windows],
                [int(features.cls_index[w]) for w in windows],
                n_best,
                max_answer_length,
                [words[w] for w in windows] if words is not None else None,
            )
        )
    return out
