"""THE REFERENCE for the host benchmark and the decoder tests: windowing and decoding as they were.

A frozen copy of ``make_features`` (pocketqa/data/features.py) and of the logits rule of
``decode_example`` / ``decode_features`` (pocketqa/inference/decode.py) before they worked
on many windows at once: windows built window by window from the Rust tokenizer's pair
encodings, decoding one question at a time. Nothing in pocketqa imports it.

- ``python -m bench host`` runs it side by side with today's code ("reference" arm) and
  asserts identical answers.
- tests/inference/test_decode_vectorised.py compares the vectorised decoder with
  ``decode_example`` here on random logits and offsets.

Only scoring="logits" is here (scoring="pipeline" decodes question by question still).
Do not change it: it is the yardstick (answers follow today's ``trim_span``, applied where
a span's characters are read).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pocketqa.data.features import WindowConfig
from pocketqa.data.model_inputs import length_sorted_batches
from pocketqa.data.squad import Example
from pocketqa.data.tokenizer import as_window_tokenizer
from pocketqa.inference.spans import Decoded, Span, trim_span


@dataclass
class Features:
    """Windows of a list of examples, column by column (one row per window).

    Attributes:
        input_ids: Token ids per window (unpadded, lengths vary).
        token_type_ids: Segment ids per window, or None when the tokenizer has none.
        offsets: Per window, per token: (char_start, char_end) in the context, or None
            for tokens outside the context (question, special tokens).
        example_index: Index of each window's example in the input list.
        cls_index: Position of the CLS token (the "no answer" position) in each window.
        start_positions / end_positions: Training labels (token positions; cls_index when
            the answer is absent or outside the window), or None when not requested.
        word_ids: Per window, per token: the index of the tokenizer's word it belongs to
            (``Encoding.word_ids``; None for special tokens), or None when not requested.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    offsets: list[list[tuple[int, int] | None]]
    example_index: np.ndarray
    cls_index: np.ndarray
    start_positions: np.ndarray | None = None
    end_positions: np.ndarray | None = None
    word_ids: list[list[int | None]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def truncate_questions(tokenizer, questions: Sequence[str], max_query_length: int) -> list[str]:
    """Strips leading spaces and cuts each question to its first ``max_query_length`` tokens.

    Cutting the text (not the ids) keeps the pair template and offsets the tokenizer's own.
    Leading whitespace is removed as in run_qa.py: some SQuAD questions start with many
    spaces, which would waste window room.
    """
    questions = [q.lstrip() for q in questions]
    out = []
    for q, (enc,) in zip(questions, as_window_tokenizer(tokenizer).encode(questions, add_special_tokens=False)):
        if len(enc.offsets) > max_query_length:
            end = enc.offsets[max_query_length - 1][1]
            # Byte-level BPE splits a multi-byte character (é, 😀) into several tokens that
            # all span the whole character: a cut inside one keeps the character, which then
            # re-tokenizes to more than max_query_length tokens. Cut before it instead.
            end = min(end, enc.offsets[max_query_length][0])
            q = q[:end]
        out.append(q)
    return out


def _label(example: Example, offsets: list[tuple[int, int] | None], cls_index: int) -> tuple[int, int]:
    """Token start/end of the first gold answer in this window, or (cls, cls)."""
    if example.is_impossible or not example.answers:
        return cls_index, cls_index
    answer = example.answers[0]
    start_char, end_char = answer.start, answer.end
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not ctx:
        return cls_index, cls_index
    first, last = ctx[0], ctx[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index  # answer not fully inside this window
    start = first
    while start <= last and (offsets[start] is None or offsets[start][1] <= start_char):
        start += 1
    end = last
    while end >= first and (offsets[end] is None or offsets[end][0] >= end_char):
        end -= 1
    if start > end:  # answer falls inside a single token boundary oddity
        return cls_index, cls_index
    return start, end


def make_features(
    examples: Sequence[Example],
    tokenizer,
    config: WindowConfig = WindowConfig(),
    labels: bool = False,
    word_ids: bool = False,
) -> Features:
    """Cuts examples into overlapping question-first windows with a fast tokenizer.

    Args:
        examples: The examples, in any order.
        tokenizer: A transformers fast (Rust-backed) tokenizer, or a WindowTokenizer.
        config: Window sizes.
        labels: Also compute training labels (start/end token positions).
        word_ids: Also keep each token's word id (for ``align_to_words`` decoding; off by
            default as nothing else reads them).

    Returns:
        Features with one row per window, windows of an example contiguous and in order.
    """
    tok = as_window_tokenizer(tokenizer)
    questions = truncate_questions(tok, [ex.question for ex in examples], config.max_query_length)
    pairs = list(zip(questions, (ex.context for ex in examples)))
    wants_types = "token_type_ids" in tok.model_input_names
    cls_id = tok.cls_token_id
    input_ids: list[list[int]] = []
    type_ids: list[list[int]] = []
    all_offsets: list[list[tuple[int, int] | None]] = []
    sample_map: list[int] = []
    cls_index: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    words: list[list[int | None]] = []
    for ex_idx, windows in enumerate(tok.encode(pairs, max_length=config.max_seq_length, stride=config.doc_stride)):
        for enc in windows:
            ids = enc.ids
            offsets = [o if s == 1 else None for o, s in zip(enc.offsets, enc.sequence_ids)]
            cls = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
            input_ids.append(ids)
            if wants_types:
                type_ids.append(enc.type_ids)
            all_offsets.append(offsets)
            sample_map.append(ex_idx)
            cls_index.append(cls)
            if word_ids:
                words.append(enc.word_ids)
            if labels:
                start, end = _label(examples[ex_idx], offsets, cls)
                starts.append(start)
                ends.append(end)
    return Features(
        input_ids=input_ids,
        token_type_ids=type_ids if wants_types else None,
        offsets=all_offsets,
        example_index=np.asarray(sample_map, dtype=np.int64),
        cls_index=np.asarray(cls_index, dtype=np.int64),
        start_positions=np.asarray(starts, dtype=np.int64) if labels else None,
        end_positions=np.asarray(ends, dtype=np.int64) if labels else None,
        word_ids=words if word_ids else None,
    )


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
    if scoring != "logits" or align_to_words:
        raise ValueError("the reference decodes scoring='logits' only")
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
        # Spans are cut to non-whitespace text (trim_span), a rule of answers, not of speed:
        # the one change made here since the copy was frozen.
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
    if scoring != "logits" or align_to_words:
        raise ValueError("the reference decodes scoring='logits' only")
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
            )
        )
    return out


def pad_batch(
    features: Features, indices: Sequence[int], pad_id: int, input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Pads the windows at ``indices`` to their longest one (per-batch padding).

    Returns int64 arrays keyed by model input name (input_ids, attention_mask and,
    when asked for and available, token_type_ids).
    """
    width = max(len(features.input_ids[i]) for i in indices)
    n = len(indices)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    attention = np.zeros((n, width), dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    for row, i in enumerate(indices):
        ids = features.input_ids[i]
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
        if features.token_type_ids is not None:
            types[row, : len(ids)] = features.token_type_ids[i]
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if "token_type_ids" in input_names:
        batch["token_type_ids"] = types
    return batch


def logits(features: Features, backend, batch_size: int, pad_id: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``QuestionAnswerer.logits`` as it was (without its progress bar and NaN check)."""
    starts: list[np.ndarray | None] = [None] * len(features)
    ends: list[np.ndarray | None] = [None] * len(features)
    for idx in length_sorted_batches(features.lengths, batch_size):
        batch = pad_batch(features, idx, pad_id, backend.input_names)
        s, e = backend(batch)
        for row, w in enumerate(idx.tolist()):
            n = len(features.input_ids[w])
            starts[w] = s[row, :n]
            ends[w] = e[row, :n]
    return starts, ends
