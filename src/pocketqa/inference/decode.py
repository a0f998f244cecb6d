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


def _context_mask(offsets: Sequence) -> np.ndarray:
    """True where a token lies in the context (its offsets are not None)."""
    n = len(offsets)
    first, last = 0, n - 1
    while first < n and offsets[first] is None:
        first += 1
    while last >= first and offsets[last] is None:
        last -= 1
    mask = np.zeros(n, dtype=bool)
    if hasattr(offsets, "count") and offsets.count(None) == first + n - 1 - last:  # one contiguous run (C-speed check)
        mask[first : last + 1] = True
    else:
        mask[:] = [o is not None for o in offsets]
    return mask


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


def _top(x: np.ndarray, n: int) -> np.ndarray:
    # argsort descending, as utils_qa does (ties broken the same way)
    return np.argsort(x)[-1 : -n - 1 : -1]


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
    null_score = math.inf
    # Candidates as arrays in utils_qa's order (window, then top starts, then top ends), so
    # that a stable sort breaks score ties as its Python sort does; text is looked up only
    # for the n-best.
    scores, windows, span_starts, span_ends = [], [], [], []
    for w, (s_log, e_log, offs, cls) in enumerate(zip(start_logits, end_logits, offsets, cls_index)):
        n = len(offs)
        s_log = np.asarray(s_log[:n], dtype=np.float64)
        e_log = np.asarray(e_log[:n], dtype=np.float64)
        null_score = min(null_score, float(s_log[cls] + e_log[cls]))
        is_ctx = _context_mask(offs)
        s_grid, e_grid = _top(s_log, n_best)[:, None], _top(e_log, n_best)[None, :]
        valid = is_ctx[s_grid] & is_ctx[e_grid] & (e_grid >= s_grid) & (e_grid - s_grid + 1 <= max_answer_length)
        s_idx, e_idx = np.broadcast_to(s_grid, valid.shape)[valid], np.broadcast_to(e_grid, valid.shape)[valid]
        scores.append(s_log[s_idx] + e_log[e_idx])
        windows.append(np.full(len(s_idx), w))
        span_starts.append(s_idx)
        span_ends.append(e_idx)
    # n-best of spans and null sorted together, null re-added if it fell out (as utils_qa),
    # then a softmax over that list gives each entry a probability-like score.
    has_null = math.isfinite(null_score)
    all_scores = np.concatenate([*scores, [null_score] if has_null else []])
    null_at = len(all_scores) - 1 if has_null else -1
    kept = np.argsort(-all_scores, kind="stable")[:n_best]
    if has_null and null_at not in kept:
        kept = np.append(kept, null_at)
    kept_scores = all_scores[kept]
    probs = np.exp(kept_scores - kept_scores.max()) if len(kept) else kept_scores
    probs = probs / probs.sum() if len(kept) else probs
    windows, span_starts, span_ends = (np.concatenate(a).tolist() if a else [] for a in (windows, span_starts, span_ends))
    null_probability = 0.0
    spans = []
    for k, sc, p in zip(kept.tolist(), kept_scores.tolist(), probs.tolist()):
        if k == null_at:
            null_probability = p
            continue
        offs = offsets[windows[k]]
        cs, ce = trim_span(context, offs[span_starts[k]][0], offs[span_ends[k]][1])
        if ce <= cs:
            # No characters (e.g. a byte-level BPE token for a lone space, whose trimmed
            # offsets are empty): not an answer. utils_qa also skips such "" texts when it
            # picks the best non-null prediction (their probabilities still count in the
            # softmax above, as in utils_qa; they are just not listed).
            continue
        spans.append(Span(context[cs:ce], cs, ce, sc, p))
    null_odds = null_score - spans[0].score if spans else math.inf
    return Decoded(spans=spans, null_score=null_score, null_odds=null_odds, null_probability=null_probability)


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
            start, end = trim_span(context, start, end)
            # Widened before the same-text lookup, as the pipeline's postprocess (get_indices, then get_answer).
            key = context[start:end].lower()
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
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best: int = 20,
    max_answer_length: int = 30,
    scoring: str = "logits",
    align_to_words: bool = False,
) -> list[Decoded]:
    """Decodes every example from the logits of its windows (rows aligned with ``features``).

    ``align_to_words`` (scoring="pipeline" only) needs features made with ``word_ids=True``.
    """
    if check_align_to_words(check_scoring(scoring), align_to_words) and features.word_ids is None:
        raise PocketQAError("align_to_words needs features made with make_features(..., word_ids=True)")
    words = features.word_ids if align_to_words else None
    by_example: list[list[int]] = [[] for _ in examples]
    for w, ex_idx in enumerate(features.example_index.tolist()):
        by_example[ex_idx].append(w)
    out = []
    for ex, windows in zip(examples, by_example):
        out.append(
            decode_example(
                ex.context,
                [start_logits[w] for w in windows],
                [end_logits[w] for w in windows],
                [features.offsets[w] for w in windows],
                [int(features.cls_index[w]) for w in windows],
                n_best=n_best,
                max_answer_length=max_answer_length,
                scoring=scoring,
                word_ids=[words[w] for w in windows] if words is not None else None,
                align_to_words=align_to_words,
            )
        )
    return out
