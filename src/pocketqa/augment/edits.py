"""TinyBERT-style augmentation as pure Example -> Examples transforms.

TinyBERT (Jiao et al. 2020, ``data_augmentation.py``) makes N noisy copies of every text:
each word is replaced, with probability p, by one of its top-k candidates, which come
from a masked LM when the word is a single WordPiece and from word-vector neighbours
when it is several. Unlike Haystack's ``augment_squad.py`` (which drops every answer,
keeps duplicate ids and lower-cases the text), the copies made here are real SQuAD 2.0
training examples:

- words overlapping a gold answer are never replaced, and every ``answer_start`` is
  recomputed so that ``context[start:start + len(text)] == text`` in every copy;
- unanswerable questions stay unanswerable; ids are ``<id>-aug<k>``; copies identical
  to the original or to an earlier copy are dropped;
- the context is rebuilt from character spans, so spacing and punctuation outside the
  replaced words are untouched, and a replacement takes the casing of the word it
  replaces (Capitalized, UPPER).

This module holds no model code and no file handling: the transforms take a
``candidates_fn(text, spans)`` returning candidate lists
(``pocketqa.augment.mlm.MaskedLMCandidates`` in real runs, a fake in tests);
``pocketqa.augment.runner`` streams a SQuAD file through them, paragraph by paragraph.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pocketqa.config import setting, validate
from pocketqa.data.formats import FORMATS
from pocketqa.data.squad import OFFSET_MODES
from pocketqa.data.squad import Answer, Example

Span = tuple[int, int]
CandidatesFn = Callable[[str, Sequence[Span]], list[list[str]]]

# Runs of letters/digits; BERT's pre-tokenizer splits on the same boundaries (whitespace
# and punctuation), so a word here is one or more whole WordPieces.
_WORD = re.compile(r"[^\W_]+")

# English function words that carry the sentence's structure; replacing them makes
# ungrammatical noise rather than paraphrases (TinyBERT keeps a similar list). The
# one- and two-letter pieces after an apostrophe ("don't" -> "don", "t") are here too.
STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can cannot could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how i if in into is it its itself just me more
    most my myself no nor not now of off on once only or other our ours ourselves out over own same she
    should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves also s t d ll m o re ve y don didn doesn isn wasn weren
    aren hasn haven hadn won wouldn shouldn couldn mustn ain may might must shall upon yet us
    """.split()
)


# -- words --------------------------------------------------------------------------------


def find_words(text: str) -> list[Span]:
    """Character spans ``(start, end)`` of the words (letter/digit runs) of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def is_eligible(word: str) -> bool:
    """True for words augmentation may replace: alphabetic and not a stop word.

    Numbers (and words with digits), punctuation and stop words are left alone.
    """
    return word.isalpha() and word.lower() not in STOP_WORDS


def eligible_spans(text: str, protected: Iterable[Span] = ()) -> list[Span]:
    """Spans of the replaceable words of ``text``, skipping words that overlap ``protected``.

    Args:
        text: The context or question.
        protected: Character spans (gold answers) that no replaced word may touch.

    Returns:
        Word spans, in text order.
    """
    protected = sorted(protected)
    spans = []
    for start, end in find_words(text):
        if not is_eligible(text[start:end]):
            continue
        # A word that overlaps an answer even by one character would change the answer.
        if any(p_start < end and start < p_end for p_start, p_end in protected):
            continue
        spans.append((start, end))
    return spans


def answer_spans(examples: Iterable[Example]) -> list[Span]:
    """The character spans of every gold answer of ``examples``."""
    return [(a.start, a.end) for ex in examples for a in ex.answers]


def match_case(original: str, replacement: str) -> str:
    """Gives ``replacement`` the casing pattern of ``original`` (UPPER, Capitalized, as is)."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


# -- one noisy copy -------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` by ``new``."""

    start: int
    end: int
    new: str


def sample_edits(
    text: str, spans: Sequence[Span], candidates: Sequence[Sequence[str]], rng: random.Random, p: float
) -> list[Edit]:
    """Draws the replacements of one copy: each word with candidates is replaced with probability p.

    The replacement is drawn uniformly from the word's candidates and given its casing.
    Words with no candidates are never replaced (and draw nothing from ``rng``).
    """
    edits = []
    for (start, end), cands in zip(spans, candidates):
        if not cands:
            continue
        if rng.random() < p:
            edits.append(Edit(start, end, match_case(text[start:end], rng.choice(cands))))
    return edits


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    """Rebuilds ``text`` with ``edits`` (sorted, non-overlapping) applied, character span by span."""
    pieces = []
    pos = 0
    for e in edits:
        pieces.append(text[pos : e.start])
        pieces.append(e.new)
        pos = e.end
    pieces.append(text[pos:])
    return "".join(pieces)


def shift_offset(offset: int, edits: Sequence[Edit]) -> int:
    """Where character ``offset`` of the original text lands after ``edits``.

    Only edits that end at or before ``offset`` move it; callers never edit across it.
    """
    return offset + sum(len(e.new) - (e.end - e.start) for e in edits if e.end <= offset)


# -- a paragraph's copies -----------------------------------------------------------------


def augment_example_group(
    context: str,
    examples: Sequence[Example],
    candidates_fn: CandidatesFn,
    rng: random.Random,
    factor: int,
    p: float,
    augment_questions: bool = False,
) -> list[Example]:
    """Makes up to ``factor`` noisy copies of the questions on one context.

    Candidate lists are computed once per word (one ``candidates_fn`` call for the
    context, one per distinct question) and the ``factor`` copies are sampled from them.

    Args:
        context: The shared passage of ``examples``.
        examples: The questions on it (every ``ex.context == context``).
        candidates_fn: ``(text, spans) -> one candidate list per span``; candidates must
            already exclude the word itself.
        rng: The paragraph's random generator (seed it per paragraph for reproducibility).
        factor: Copies to make (copies identical to an earlier one are dropped).
        p: Probability of replacing each word that has candidates.
        augment_questions: Also replace question words (drawn independently per copy).

    Returns:
        The copies, copy by copy, in ``examples`` order within a copy; ids ``<id>-aug<k>``
        with k = 1..factor. Every answer's start is recomputed for the new context.
    """
    spans = eligible_spans(context, answer_spans(examples))
    cands = candidates_fn(context, spans) if spans else []
    question_plans: dict[str, tuple[list[Span], list[list[str]]]] = {}
    if augment_questions:
        for ex in examples:
            if ex.question not in question_plans:
                q_spans = eligible_spans(ex.question)
                question_plans[ex.question] = (q_spans, candidates_fn(ex.question, q_spans) if q_spans else [])

    seen = {ex.id: {(context, ex.question)} for ex in examples}
    out = []
    for k in range(1, factor + 1):
        edits = sample_edits(context, spans, cands, rng, p)
        new_context = apply_edits(context, edits)
        for ex in examples:
            question = ex.question
            if augment_questions:
                q_spans, q_cands = question_plans[ex.question]
                question = apply_edits(question, sample_edits(question, q_spans, q_cands, rng, p))
            key = (new_context, question)
            if key in seen[ex.id]:
                continue
            seen[ex.id].add(key)
            answers = tuple(Answer(a.text, shift_offset(a.start, edits)) for a in ex.answers)
            for a in answers:
                # Cannot fail unless an edit touched an answer; a wrong label is worse than a crash.
                if new_context[a.start : a.end] != a.text:
                    raise AssertionError(f"{ex.id}: answer {a.text!r} lost at {a.start} in copy {k}")
            out.append(
                Example(
                    id=f"{ex.id}-aug{k}",
                    title=ex.title,
                    context=new_context,
                    question=question,
                    answers=answers,
                    is_impossible=ex.is_impossible,
                )
            )
    return out


def candidate_requests(context: str, examples: Sequence[Example], augment_questions: bool) -> list[tuple[str, list[Span]]]:
    """The ``(text, spans)`` lookups ``augment_example_group`` will make for one paragraph.

    Lets a batched candidate source answer a whole chunk of paragraphs in a few forward passes.
    """
    requests = []
    spans = eligible_spans(context, answer_spans(examples))
    if spans:
        requests.append((context, spans))
    if augment_questions:
        for question in dict.fromkeys(ex.question for ex in examples):
            q_spans = eligible_spans(question)
            if q_spans:
                requests.append((question, q_spans))
    return requests


# -- candidate sources and settings ------------------------------------------------------


class CandidateSource(Protocol):
    """Answers many ``(text, spans)`` requests at once (one candidate list per span)."""

    def candidates_many(self, requests: Sequence[tuple[str, Sequence[Span]]]) -> list[list[list[str]]]: ...


class FunctionSource:
    """A ``CandidateSource`` over a per-text ``candidates_fn`` (tests, word-vector-only runs)."""

    def __init__(self, candidates_fn: CandidatesFn):
        self.candidates_fn = candidates_fn

    def candidates_many(self, requests):
        return [self.candidates_fn(text, spans) for text, spans in requests]


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of ``pocketqa augment`` (TinyBERT's defaults: p=0.4, k=15; the seed card used x20)."""

    factor: int = setting(20, "copies per paragraph", group="augmentation")
    replace_prob: float = setting(0.4, "chance to replace each eligible word", group="augmentation")
    candidates: int = setting(15, "top-k candidates per word", group="augmentation")
    seed: int = setting(0, "random seed (each paragraph draws from its own generator)", group="augmentation")
    include_original: bool = setting(False, "also write the original questions", group="augmentation")
    augment_questions: bool = setting(False, "also replace question words", group="augmentation")
    shard_index: int = setting(0, flag=False)  # both set by --shard K/N
    num_shards: int = setting(1, flag=False)
    format: str | None = setting(None, "layout of --data (default: from its name; see docs/data.md)", group="data",
                                 choices=FORMATS)
    offsets: str = setting("strict", "a wrong answer_start: strict refuses the file; repair moves it to the nearest "
                           "occurrence of its text (one summary line)", group="data", choices=OFFSET_MODES[:2])
    chunk_paragraphs: int = setting(
        64, "paragraphs whose candidates are looked up together (memory; the output does not depend on it)",
        group="runtime",
    )

    def __post_init__(self) -> None:
        validate(self)

    def problems(self, skip: set[str]) -> list[str]:
        """Range checks, named by flag (a value of the wrong type was reset to its default)."""
        problems = []
        if self.factor < 1:
            problems.append(f"--factor must be an integer >= 1, found {self.factor!r}")
        if not 0.0 <= self.replace_prob <= 1.0:
            problems.append(f"--replace-prob must be in [0, 1], found {self.replace_prob!r}")
        if self.candidates < 1:
            problems.append(f"--candidates must be >= 1, found {self.candidates!r}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            problems.append(
                f"--shard K/N needs N >= 1 and 0 <= K < N (K counts from 0), found {self.shard_index}/{self.num_shards}"
            )
        if self.chunk_paragraphs < 1:
            problems.append(f"chunk_paragraphs must be >= 1, found {self.chunk_paragraphs!r}")
        return problems
