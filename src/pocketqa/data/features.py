"""Examples -> question-first sliding windows for extractive QA.

Each example becomes one or more windows ("features") of at most ``max_seq_length``
tokens: ``[CLS] question [SEP] context-slice [SEP]`` (or the tokenizer's own pair
template). Consecutive windows overlap by ``doc_stride`` tokens, as in transformers'
run_qa.py (the tokenizer's ``stride``); the question is cut to ``max_query_length``
tokens first. For every window we keep, per token, the character span it covers in the
context (-1 for question, special and padding tokens), so spans decode back to exact
context substrings. On request we also keep each token's word id (the tokenizer's
pre-tokenizer words), which the QA pipeline's word widening needs (decode.py).

Windows are stored as padded 2-D arrays (one row per window), so that batching and
decoding work on many windows at once. When the tokenizer's pair template only adds
special tokens (``TemplateProcessing`` / ``BertProcessing``: every BERT-style tokenizer),
questions and *distinct* contexts are tokenized once each and the windows are cut here,
with the Rust tokenizer's own truncation rule (many SQuAD questions share a passage, so
most context tokenization is saved); other templates (RoBERTa's trims offsets per
window) go through the Rust tokenizer pair by pair. Both give the same windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pocketqa.errors import ConfigError
from pocketqa.data.squad import Example
from pocketqa.data.tokenizer import WindowTokenizer, as_window_tokenizer

# Post-processors that add special tokens around the two sequences and touch nothing else
# (ids, offsets and words of the sequences stay as the model made them).
_PLAIN_TEMPLATES = ("TemplateProcessing", "BertProcessing")
_TEMPLATES: dict[bytes, "_Template | None"] = {}  # post-processor state -> its template


@dataclass(frozen=True)
class WindowConfig:
    """How examples are cut into windows (the defaults of run_squad / run_qa)."""

    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64

    def __post_init__(self) -> None:
        problems = []
        if self.max_seq_length < 8:
            problems.append(f"max_seq_length must be >= 8, found {self.max_seq_length}")
        if self.max_query_length < 1:
            problems.append(f"max_query_length must be >= 1, found {self.max_query_length}")
        if self.doc_stride < 0:
            problems.append(f"doc_stride must be >= 0, found {self.doc_stride}")
        # The tokenizer needs room for at least doc_stride + 1 context tokens per window.
        if self.doc_stride >= self.max_seq_length - self.max_query_length - 4:
            problems.append(
                f"doc_stride ({self.doc_stride}) must be smaller than max_seq_length - max_query_length - 4 "
                f"({self.max_seq_length - self.max_query_length - 4}); lower --doc-stride or raise --max-seq-length"
            )
        if problems:
            raise ConfigError("; ".join(problems))

    def to_dict(self) -> dict:
        return {
            "max_seq_length": self.max_seq_length,
            "doc_stride": self.doc_stride,
            "max_query_length": self.max_query_length,
        }


@dataclass
class Features:
    """Windows of a list of examples, as padded arrays (one row per window).

    Attributes:
        ids: int32 [n_windows, width]: token ids, 0 past each window's length.
        types: int32 [n_windows, width]: segment ids, or None when the tokenizer has none.
        char_start / char_end: int32 [n_windows, width]: the context characters
            [char_start, char_end) of each token, -1 for tokens outside the context
            (question, special tokens, padding).
        lengths: int64 [n_windows]: tokens per window.
        example_index: Index of each window's example in the input list.
        cls_index: Position of the CLS token (the "no answer" position) in each window.
        start_positions / end_positions: Training labels (token positions; cls_index when
            the answer is absent or outside the window), or None when not requested.
        words: int32 [n_windows, width]: the tokenizer's word id of each token
            (``Encoding.word_ids``; -1 for none), or None when not requested.

    The list views ``input_ids``, ``token_type_ids``, ``offsets`` and ``word_ids`` give
    the same data per window, unpadded, with None where the arrays hold -1.
    """

    ids: np.ndarray
    types: np.ndarray | None
    char_start: np.ndarray
    char_end: np.ndarray
    lengths: np.ndarray
    example_index: np.ndarray
    cls_index: np.ndarray
    start_positions: np.ndarray | None = None
    end_positions: np.ndarray | None = None
    words: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    @cached_property
    def input_ids(self) -> list[list[int]]:
        """Token ids per window (unpadded)."""
        return _rows(self.ids, self.lengths)

    @cached_property
    def token_type_ids(self) -> list[list[int]] | None:
        """Segment ids per window, or None when the tokenizer has none."""
        return None if self.types is None else _rows(self.types, self.lengths)

    @cached_property
    def offsets(self) -> list[list[tuple[int, int] | None]]:
        """Per window, per token: (char_start, char_end) in the context, or None outside it."""
        out = []
        for starts, ends in zip(_rows(self.char_start, self.lengths), _rows(self.char_end, self.lengths)):
            out.append([(s, e) if s >= 0 else None for s, e in zip(starts, ends)])
        return out

    @cached_property
    def word_ids(self) -> list[list[int | None]] | None:
        """Per window, per token: its word id (None for special tokens), or None when not requested."""
        if self.words is None:
            return None
        return [[w if w >= 0 else None for w in row] for row in _rows(self.words, self.lengths)]


def _rows(array: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    return [row[:n] for row, n in zip(array.tolist(), lengths.tolist())]


def truncate_questions(tokenizer, questions: Sequence[str], max_query_length: int) -> list[str]:
    """Strips leading spaces and cuts each question to its first ``max_query_length`` tokens.

    Cutting the text (not the ids) keeps the pair template and offsets the tokenizer's own.
    Leading whitespace is removed as in run_qa.py: some SQuAD questions start with many
    spaces, which would waste window room.
    """
    return _truncate_questions(as_window_tokenizer(tokenizer), questions, max_query_length)[0]


def _truncate_questions(tok: WindowTokenizer, questions: Sequence[str], max_query_length: int) -> tuple[list[str], list]:
    """``truncate_questions``, plus each question's encoding when it was not cut (else None)."""
    questions = [q.lstrip() for q in questions]
    encodings = [enc for (enc,) in tok.encode(questions, add_special_tokens=False)]
    return _cut_questions(questions, encodings, max_query_length)


def _cut_questions(questions: list[str], encodings: list, max_query_length: int) -> tuple[list[str], list]:
    """Questions (stripped) cut to ``max_query_length`` tokens of their encodings; None for a cut one's encoding."""
    out, kept = [], []
    for q, enc in zip(questions, encodings):
        if len(enc.offsets) > max_query_length:
            end = enc.offsets[max_query_length - 1][1]
            # Byte-level BPE splits a multi-byte character (é, 😀) into several tokens that
            # all span the whole character: a cut inside one keeps the character, which then
            # re-tokenizes to more than max_query_length tokens. Cut before it instead.
            end = min(end, enc.offsets[max_query_length][0])
            q = q[:end]
            enc = None
        out.append(q)
        kept.append(enc)
    return out, kept


def _label(example: Example, starts: np.ndarray, ends: np.ndarray, cls_index: int) -> tuple[int, int]:
    """Token start/end of the first gold answer in this window, or (cls, cls).

    ``starts``/``ends``: the window's character offsets (-1 outside the context).
    """
    if example.is_impossible or not example.answers:
        return cls_index, cls_index
    answer = example.answers[0]
    start_char, end_char = answer.start, answer.end
    ctx = np.flatnonzero(starts >= 0)
    if not len(ctx):
        return cls_index, cls_index
    first, last = int(ctx[0]), int(ctx[-1])
    if starts[first] > start_char or ends[last] < end_char:
        return cls_index, cls_index  # answer not fully inside this window
    # first context token ending after the answer start; last one starting before its end
    after = ctx[ends[ctx] > start_char]
    before = ctx[starts[ctx] < end_char]
    start = int(after[0]) if len(after) else last + 1
    end = int(before[-1]) if len(before) else first - 1
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
    questions, contexts = [ex.question for ex in examples], [ex.context for ex in examples]
    template = _pair_template(tok)
    windows = None
    if template is not None and examples:
        windows = _cut_windows(tok, template, questions, contexts, config, word_ids)
    if windows is None:  # another template, or a question leaving no room (the Rust tokenizer names it)
        questions = _truncate_questions(tok, questions, config.max_query_length)[0]
        windows = _pair_windows(tok, questions, contexts, config)
    ids, types, char_start, char_end, words, lengths, example_index = windows
    cls_index = _cls_positions(ids, lengths, tok.cls_token_id)
    features = Features(
        ids=ids,
        types=types if "token_type_ids" in tok.model_input_names else None,
        char_start=char_start,
        char_end=char_end,
        lengths=lengths,
        example_index=example_index,
        cls_index=cls_index,
        words=words if word_ids else None,
    )
    if labels:
        pairs = [_label(examples[i], s, e, c) for i, s, e, c in
                 zip(example_index.tolist(), char_start, char_end, cls_index.tolist())]
        features.start_positions = np.asarray([p[0] for p in pairs], dtype=np.int64).reshape(-1)
        features.end_positions = np.asarray([p[1] for p in pairs], dtype=np.int64).reshape(-1)
    return features


def _cls_positions(ids: np.ndarray, lengths: np.ndarray, cls_id: int | None) -> np.ndarray:
    """Each window's first CLS token (the question may hold one too), else position 0."""
    if cls_id is None or not len(ids):
        return np.zeros(len(ids), dtype=np.int64)
    is_cls = (ids == cls_id) & (np.arange(ids.shape[1])[None, :] < lengths[:, None])
    return np.where(is_cls.any(axis=1), is_cls.argmax(axis=1), 0).astype(np.int64)


@dataclass(frozen=True)
class _Template:
    """A pair template that only adds special tokens: prefix, A, middle, B, suffix."""

    special_ids: tuple[np.ndarray, np.ndarray, np.ndarray]  # ids before A, between A and B, after B
    special_types: tuple[np.ndarray, np.ndarray, np.ndarray]
    type_a: int
    type_b: int

    @property
    def added(self) -> int:
        return sum(len(s) for s in self.special_ids)


def _pair_template(tok: WindowTokenizer) -> _Template | None:
    """The pair template of ``tok`` when it only adds special tokens, else None.

    Read off one probe pair encoded by the Rust tokenizer, checked against its two texts
    encoded alone; remembered per post-processor (the probe costs as much as windowing one
    question).
    """
    processor = tok.backend.post_processor
    if type(processor).__name__ not in _PLAIN_TEMPLATES:
        return None
    key = processor.__getstate__()
    if key not in _TEMPLATES:
        _TEMPLATES[key] = _probe_template(tok)
    return _TEMPLATES[key]


def _probe_template(tok: WindowTokenizer) -> _Template | None:
    (a,), (b,) = tok.encode(["a b", "c d e"], add_special_tokens=False)
    ((pair,),) = tok.encode([("a b", "c d e")])
    seq = [-1 if s is None else s for s in pair.sequence_ids]
    runs = [0]
    for i in range(1, len(seq)):
        if seq[i] != seq[i - 1]:
            runs.append(i)
    runs.append(len(seq))
    # Expect: [specials] A [specials] B [specials], the special runs possibly empty.
    pieces = [(seq[s], s, e) for s, e in zip(runs, runs[1:])]
    kinds = [k for k, _, _ in pieces]
    stripped = [k for k in kinds if k != -1]
    if stripped != [0, 1] or kinds.count(0) != 1 or kinds.count(1) != 1 or pair.overflowing:
        return None
    ids, types = np.asarray(pair.ids, dtype=np.int64), np.asarray(pair.type_ids, dtype=np.int64)
    a_at, b_at = kinds.index(0), kinds.index(1)
    _, a_start, a_end = pieces[a_at]
    _, b_start, b_end = pieces[b_at]
    if (ids[a_start:a_end].tolist() != a.ids or ids[b_start:b_end].tolist() != b.ids
            or pair.offsets[a_start:a_end] != a.offsets or pair.offsets[b_start:b_end] != b.offsets
            or len(set(pair.type_ids[a_start:a_end])) > 1 or len(set(pair.type_ids[b_start:b_end])) > 1):
        return None
    cuts = ((0, a_start), (a_end, b_start), (b_end, len(seq)))
    return _Template(
        special_ids=tuple(ids[s:e] for s, e in cuts),
        special_types=tuple(types[s:e] for s, e in cuts),
        type_a=int(types[a_start]),
        type_b=int(types[b_start]),
    )


def _token_arrays(encodings: list, offsets: bool, words: bool):
    """Flat ids, char starts, char ends and words (-1 for none) of encodings, and where each begins.

    Offsets and words are None unless asked for.
    """
    lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    base = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(lengths, out=base[1:])
    total = int(base[-1])
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    starts = ends = word_ids = None
    if offsets:
        pairs = np.array(list(chain.from_iterable(e.offsets for e in encodings)), dtype=np.int32).reshape(total, 2)
        starts, ends = pairs[:, 0], pairs[:, 1]
    if words:
        flat = chain.from_iterable(e.word_ids for e in encodings)
        word_ids = np.fromiter((-1 if w is None else w for w in flat), dtype=np.int32, count=total)
    return ids, starts, ends, word_ids, base


def _cut_windows(tok: WindowTokenizer, template: _Template, questions: list[str], contexts: list[str],
                 config: WindowConfig, words: bool):
    """Windows assembled from once-tokenized questions and distinct contexts (None: a question leaves no room).

    Follows the Rust tokenizer's "only_second" truncation with a stride: the context is cut
    into pieces of ``max_seq_length - added - len(question)`` tokens starting every
    ``piece - doc_stride`` tokens, the last piece ending at the context's end.
    """
    distinct: dict[str, int] = {}
    context_of = np.fromiter((distinct.setdefault(c, len(distinct)) for c in contexts), dtype=np.int64,
                             count=len(contexts))
    questions = [q.lstrip() for q in questions]
    # One call to the Rust tokenizer for both (each call has a fixed cost: one question per
    # call is how a server asks).
    encodings = [enc for (enc,) in tok.encode(questions + list(distinct), add_special_tokens=False)]
    questions, question_encodings = _cut_questions(questions, encodings[: len(questions)], config.max_query_length)
    context_encodings = encodings[len(questions) :]
    recut = [i for i, enc in enumerate(question_encodings) if enc is None]
    if recut:  # questions cut to max_query_length: tokenized again, as the pair encoding would
        for i, (enc,) in zip(recut, tok.encode([questions[i] for i in recut], add_special_tokens=False)):
            question_encodings[i] = enc
    q_ids, _, _, q_words, q_base = _token_arrays(question_encodings, offsets=False, words=words)
    c_ids, c_start, c_end, c_words, c_base = _token_arrays(context_encodings, offsets=True, words=words)
    q_len = np.diff(q_base)
    c_len = np.diff(c_base)[context_of]
    room = config.max_seq_length - template.added  # tokens for question + context
    piece = room - q_len  # context tokens per window, when the pair is too long
    too_long = q_len + c_len > room
    if (too_long & ((c_len <= q_len + c_len - room) | (config.doc_stride >= piece))).any():
        return None
    # Window starts per example: 0, step, 2 step, ... until a piece reaches the context's end.
    step = np.maximum(piece - config.doc_stride, 1)
    n_windows = np.where(too_long, 1 + np.ceil(np.maximum(c_len - piece, 0) / step).astype(np.int64), 1)
    example_index = np.repeat(np.arange(len(contexts)), n_windows)
    first_window = np.zeros(len(contexts) + 1, dtype=np.int64)
    np.cumsum(n_windows, out=first_window[1:])
    k = np.arange(len(example_index)) - first_window[example_index]
    b_from = np.where(too_long[example_index], k * step[example_index], 0)
    b_to = np.where(too_long[example_index], np.minimum(b_from + piece[example_index], c_len[example_index]),
                    c_len[example_index])
    (pre, mid, post), (pre_t, mid_t, post_t) = template.special_ids, template.special_types
    a_len, b_len = q_len[example_index], b_to - b_from
    a_at = len(pre)
    m_at = a_at + a_len
    b_at = m_at + len(mid)
    p_at = b_at + b_len
    lengths = p_at + len(post)
    width = int(lengths.max())
    j = np.arange(width)[None, :]
    in_a = (j >= a_at) & (j < m_at[:, None])
    in_b = (j >= b_at[:, None]) & (j < p_at[:, None])
    a_src = np.where(in_a, q_base[example_index][:, None] + j - a_at, 0)
    b_src = np.where(in_b, (c_base[context_of[example_index]] + b_from)[:, None] + j - b_at[:, None], 0)
    ids = np.zeros((len(example_index), width), dtype=np.int32)
    types = np.zeros_like(ids)
    char_start = np.full_like(ids, -1)
    char_end = np.full_like(ids, -1)
    a_src, b_src = a_src[in_a], b_src[in_b]
    ids[in_a], types[in_a] = q_ids[a_src], template.type_a
    ids[in_b], types[in_b] = c_ids[b_src], template.type_b
    char_start[in_b], char_end[in_b] = c_start[b_src], c_end[b_src]
    word_ids = None
    if words:
        word_ids = np.full_like(ids, -1)
        word_ids[in_a], word_ids[in_b] = q_words[a_src], c_words[b_src]
    for specials, special_types, at in ((pre, pre_t, np.zeros_like(m_at)), (mid, mid_t, m_at), (post, post_t, p_at)):
        for i, (token, token_type) in enumerate(zip(specials.tolist(), special_types.tolist())):
            rows = np.arange(len(ids))
            ids[rows, at + i] = token
            types[rows, at + i] = token_type
    return ids, types, char_start, char_end, word_ids, lengths, example_index


def _pair_windows(tok: WindowTokenizer, questions: list[str], contexts: list[str], config: WindowConfig):
    """Windows from the Rust tokenizer's pair encoding, window by window."""
    encodings, owners = [], []
    for ex_idx, windows in enumerate(tok.encode(list(zip(questions, contexts)), max_length=config.max_seq_length,
                                                stride=config.doc_stride)):
        encodings.extend(windows)
        owners.extend([ex_idx] * len(windows))
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    width = int(lengths.max()) if len(lengths) else 0
    ids = np.zeros((len(encodings), width), dtype=np.int32)
    types = np.zeros_like(ids)
    char_start = np.full_like(ids, -1)
    char_end = np.full_like(ids, -1)
    words = np.full_like(ids, -1)
    for w, enc in enumerate(encodings):
        n = lengths[w]
        ids[w, :n] = enc.ids
        types[w, :n] = enc.type_ids
        in_context = np.asarray([s == 1 for s in enc.sequence_ids], dtype=bool)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(n, 2)
        char_start[w, :n] = np.where(in_context, offsets[:, 0], -1)
        char_end[w, :n] = np.where(in_context, offsets[:, 1], -1)
        words[w, :n] = [-1 if x is None else x for x in enc.word_ids]
    return ids, types, char_start, char_end, words, lengths, np.asarray(owners, dtype=np.int64)
