"""Examples -> question-first sliding windows for extractive QA.

Each example becomes one or more windows ("features") of at most ``max_seq_length``
tokens: ``[CLS] question [SEP] context-slice [SEP]`` (or the tokenizer's own pair
template). Consecutive windows overlap by ``doc_stride`` tokens, as in transformers'
run_qa.py (the tokenizer's ``stride``); the question is cut to ``max_query_length``
tokens first. For every window we keep, per token, the character span it covers in the
context (``None`` for question, special and padding tokens), so spans decode back to
exact context substrings. On request we also keep each token's word id (the tokenizer's
pre-tokenizer words), which the QA pipeline's word widening needs (decode.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pocketqa.errors import ConfigError
from pocketqa.data.squad import Example
from pocketqa.data.tokenizer import as_window_tokenizer


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


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches of windows of similar length, longest first, so padding stays small."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
