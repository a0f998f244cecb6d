"""The scoring rule of transformers' QA pipeline (4.x; removed in 5.3), ``scoring="pipeline"``,
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from pocketqa.inference.spans import Decoded, Span, span_text


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


def decode_pipeline(context, start_logits, end_logits, offsets, cls_index, n_best, max_answer_length,
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
            text, start, end = span_text(context, start, end)
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
