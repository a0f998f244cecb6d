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
for users who want the answers their pipeline code gave:

- per window, softmax over the context tokens and CLS, separately for start and end;
  span score = p_start(i) * p_end(j), CLS excluded; the ``n_best`` best spans per window
  (the pipeline keeps ``top_k``: n_best=1 reproduces its default top_k=1);
- with ``align_to_words=True`` (the pipeline's default; ours is False, as utils_qa) the
  ``2 * n_best + 10`` best spans per window are kept instead (as the pipeline: widening
  merges some), and each is widened to whole words: from the start of its first token's
  word to the end of its last token's word, words being the tokenizer's pre-tokenizer
  words as seen in that window (a word cut by the window edge widens only to its part
  inside);
- spans with the same text (case-insensitive) in several windows add up their scores
  (after widening, as the pipeline maps each span to characters before it looks the text
  up: two sub-word spans of one word count as one answer);
- null score = min over windows of p_start(CLS) * p_end(CLS); null_odds =
  log(null score / best span score), so threshold 0 is the pipeline's own rule (the null
  answer wins when its probability is higher than the best span's).

Within one window both rules pick the same best span and the same null decision at
threshold 0; they can differ when a question needs several windows.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pocketqa.errors import PocketQAError
from pocketqa.data.features import Features

SCORINGS = ("logits", "pipeline")


@dataclass(frozen=True)
class Span:
    """A candidate answer: context characters [start, end) and its logit score."""

    text: str
    start: int
    end: int
    score: float
    probability: float = 0.0


@dataclass
class Decoded:
    """Decoding of one question.

    Attributes:
        spans: Non-null candidates, best first (at most n_best).
        null_score: min over windows of start[CLS] + end[CLS] (scoring="pipeline": of
            p_start(CLS) * p_end(CLS)).
        null_odds: null_score - best span score (+inf when there is no span); with
            scoring="pipeline", log(null_score / best span score).
        null_probability: softmax weight of the null answer among the n-best.
    """

    spans: list[Span] = field(default_factory=list)
    null_score: float = 0.0
    null_odds: float = math.inf
    null_probability: float = 1.0

    def answer(self, threshold: float = 0.0) -> str:
        """The answer text, or "" when the question is judged unanswerable."""
        if not self.spans or self.null_odds > threshold:
            return ""
        return self.spans[0].text


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
        return _decode_pipeline(context, start_logits, end_logits, offsets, cls_index, n_best, max_answer_length, words)
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
            text, cs, ce = _span_text(context, starts_chars[c], ends_chars[c])
            # No characters (e.g. a byte-level BPE token for a lone space, whose trimmed
            # offsets are empty): not an answer. utils_qa also skips such "" texts when it
            # picks the best non-null prediction (their probabilities still count in the
            # softmax above, as in utils_qa; they are just not listed).
            if ce > cs:
                spans.append(Span(text, cs, ce, score, p))
        null_odds = null[q] - spans[0].score if spans else math.inf
        out.append(Decoded(spans=spans, null_score=null[q], null_odds=null_odds, null_probability=null_probability))
    return out


def _span_text(context: str, start: int, end: int) -> tuple[str, int, int]:
    """The answer a span of context characters [start, end) gives: (text, start, end).

    The one place where a candidate's characters become answer text, for both scorings:
    the span cut to whole, non-whitespace text (``trim_span``).
    """
    start, end = trim_span(context, start, end)
    return context[start:end], start, end


def trim_span(context: str, start: int, end: int) -> tuple[int, int]:
    """The character span [start, end) of ``context`` cut to whole, non-whitespace text.

    Token offsets may cover the space before a word: a Metaspace (SentencePiece) tokenizer
    folds it into "▁word" (DeBERTa-v2/v3 and mDeBERTa answer " Sweden."), a byte-level BPE
    one without trimmed offsets into "Ġword" (ModernBERT), and a lone "Ġ" or "▁" token covers
    only a space. An answer is the text between; a span of whitespace alone comes back empty
    (start == end). A normalizer that composes characters (NFKC: "u" + U+0308 -> "ü") maps
    the composed token to the base letter only, so a span ending there is extended over the
    combining marks that follow: "Zü", not "Zu".
    """
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    while start < end < len(context) and unicodedata.combining(context[end]):
        end += 1
    return start, end


def _window_probabilities(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    x = np.where(allowed, logits, -np.inf)
    p = np.exp(x - x.max())
    return p / p.sum()


def _word_chars(offs: Sequence, words: Sequence, start: int, end: int) -> tuple[int, int]:
    """Characters of tokens start..end widened to whole words within one window.

    As the pipeline's ``get_indices``: ``Encoding.word_to_chars`` of the start and end
    tokens' words, which sees only this window's context tokens; a token without a word
    falls back to the token offsets of both ends, as its ``except`` does.
    """
    w_start, w_end = words[start], words[end]
    if w_start is None or w_end is None:
        return offs[start][0], offs[end][1]
    while start > 0 and offs[start - 1] is not None and words[start - 1] == w_start:
        start -= 1
    while end + 1 < len(offs) and offs[end + 1] is not None and words[end + 1] == w_end:
        end += 1
    return offs[start][0], offs[end][1]


def _decode_pipeline(context, start_logits, end_logits, offsets, cls_index, n_best, max_answer_length,
                     word_ids=None) -> Decoded:
    null_prob = math.inf
    by_text: dict[str, list] = {}  # lower-cased text -> [score, char_start, char_end], first seen kept
    for w, (s_log, e_log, offs, cls) in enumerate(zip(start_logits, end_logits, offsets, cls_index)):
        n = len(offs)
        is_ctx = np.fromiter((o is not None for o in offs), dtype=bool, count=n)
        allowed = is_ctx.copy()
        allowed[cls] = True
        p_start = _window_probabilities(np.asarray(s_log[:n], dtype=np.float64), allowed)
        p_end = _window_probabilities(np.asarray(e_log[:n], dtype=np.float64), allowed)
        null_prob = min(null_prob, float(p_start[cls] * p_end[cls]))
        ctx = np.flatnonzero(is_ctx)
        if not len(ctx):
            continue
        # Only spans of at most max_answer_length tokens: a band of the start x end matrix,
        # row a = start ctx[a], column d = end ctx[a + d] (row-major order as the pipeline's).
        m = len(ctx)
        stop = np.searchsorted(ctx, ctx + max_answer_length)  # first end too far from each start
        width = int((stop - np.arange(m)).max())
        end_at = np.arange(m)[:, None] + np.arange(width)[None, :]
        valid = end_at < stop[:, None]
        end_at = np.minimum(end_at, m - 1)
        scores = np.where(valid, p_start[ctx][:, None] * p_end[ctx][end_at], -1.0).ravel()
        # Widening merges some candidates, so the pipeline then keeps 2 * top_k + 10 per window.
        k = min(n_best if word_ids is None else 2 * n_best + 10, int(valid.sum()))
        if k == 1:
            top = np.array([np.argmax(scores)])  # the first best, as the pipeline's argmax
        else:
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
        for flat in top.tolist():
            a, d = divmod(flat, width)
            if word_ids is None:
                start, end = offs[ctx[a]][0], offs[ctx[a + d]][1]
            else:
                start, end = _word_chars(offs, word_ids[w], int(ctx[a]), int(ctx[a + d]))
            # Widened before the same-text lookup, as the pipeline's postprocess (get_indices, then get_answer).
            text, start, end = _span_text(context, start, end)
            key = text.lower()
            if key in by_text:
                by_text[key][0] += float(scores[flat])
            else:
                by_text[key] = [float(scores[flat]), start, end]
    ranked = sorted(by_text.values(), key=lambda c: c[0], reverse=True)[:n_best]
    spans = [Span(text=context[cs:ce], start=cs, end=ce, score=sc, probability=sc) for sc, cs, ce in ranked]
    if not math.isfinite(null_prob):
        null_prob = 0.0
    if not spans:
        null_odds = math.inf
    elif spans[0].score <= 0.0:  # best span underflowed to 0: only the null answer has weight
        null_odds = math.inf if null_prob > 0 else 0.0
    else:
        null_odds = math.log(null_prob) - math.log(spans[0].score) if null_prob > 0 else -math.inf
    return Decoded(spans=spans, null_score=null_prob, null_odds=null_odds, null_probability=null_prob)


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
            _decode_pipeline(
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
