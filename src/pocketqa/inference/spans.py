"""What decoding gives: candidate spans and a question's decoding, and how characters become answer text."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field


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


def span_text(context: str, start: int, end: int) -> tuple[str, int, int]:
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
