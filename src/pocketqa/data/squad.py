"""Typed examples, their validation (every problem at once), and SQuAD 1.1 / 2.0 JSON on disk.

``Example`` is the question every stage works on.

Each layout (SQuAD JSON articles here, the rows of :mod:`pocketqa.data.rows`) turns its
records into ``RawQuestion``s that say where they came from; :func:`build_examples` checks
them all, collects every problem (a count, then the first few with their places, as the
config checks do) and applies the answer-offset mode:

- ``strict``: an ``answer_start`` must point at its text (training needs exact offsets).
- ``repair``: a wrong ``answer_start`` moves to the occurrence of its text nearest to it;
  an answer whose text is not in the context is dropped, and a question left without the
  answers it had is dropped; :func:`OffsetRepairs.summary` is the one line that says so.
- ``ignore``: texts are kept and offsets not checked (scores compare texts only, as the
  official evaluate-v2.0.py does).
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pocketqa.data.files import atomic_path, open_text
from pocketqa.errors import SquadFormatError


@dataclass(frozen=True)
class Answer:
    """A gold answer: its text and the character offset where it starts in the context."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """Character offset one past the answer's last character."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class Example:
    """One question on one context.

    Attributes:
        id: The question id, unique in its file.
        title: The article title ("" when the file has none).
        context: The passage.
        question: The question text.
        answers: Gold answers (empty for unanswerable questions).
        is_impossible: True when the passage holds no answer (SQuAD 2.0).
    """

    id: str
    title: str
    context: str
    question: str
    answers: tuple[Answer, ...] = field(default_factory=tuple)
    is_impossible: bool = False


def _open_text(path: Path):
    # utf-8-sig: JSON saved by Windows tools starts with a byte-order mark that json.load refuses.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def read_json(path: str | os.PathLike) -> dict:
    """Reads a plain or gzip-compressed JSON file, raising SquadFormatError on bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise SquadFormatError(f"{path}: no such file")
    try:
        with _open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SquadFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged .gz stream
        raise SquadFormatError(f"{path}: cannot read as UTF-8 JSON ({e})") from None


def unencodable_at(text: str) -> int | None:
    """Index of the first character UTF-8 cannot encode (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


OFFSET_MODES = ("strict", "repair", "ignore")
SHOWN = 5  # problems (and repaired ids) quoted in a message; the rest are counted
MISSING = object()  # a field the record does not have


@dataclass(frozen=True)
class BadAnswers:
    """A question's gold answers that could not be read, and why (a problem only where they are read)."""

    problem: str


@dataclass
class RawQuestion:
    """One question as a layout read it, before any check.

    Attributes:
        where: Its place, for messages ("row 12", "article 0 ('Normans'), paragraph 1, question 3").
        id, title, context, question: The fields as found (``MISSING`` when absent).
        answers: ``[(text, answer_start), ...]`` as found, ``MISSING``, or ``BadAnswers``
            (malformed: reported by training and scoring, ignored by prediction, which
            never reads gold answers).
        is_impossible: SQuAD JSON's flag (``MISSING`` elsewhere).
    """

    where: str
    id: object
    title: object
    context: object
    question: object
    answers: object
    is_impossible: object = MISSING


class Problems:
    """Collects every problem of one source; ``check`` raises them as one SquadFormatError."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []
        self.hints: dict[str, None] = {}  # the fixes, each said once after the problems

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def check(self) -> None:
        """Raises one error: the count, then the first ``SHOWN`` problems with their places."""
        if not self.items:
            return
        shown = "; ".join(self.items[:SHOWN])
        more = f"; ... and {len(self.items) - SHOWN} more" if len(self.items) > SHOWN else ""
        hints = "".join(f" ({hint})" for hint in self.hints)
        raise SquadFormatError(f"{self.source}: {len(self.items)} problem(s): {shown}{more}{hints}")


@dataclass
class OffsetRepairs:
    """What ``repair`` changed: nothing changes without being counted here."""

    repaired: list[str] = field(default_factory=list)  # ids whose answer_start moved (one per answer)
    dropped_answers: list[str] = field(default_factory=list)  # ids of answers whose text is not in the context
    dropped_questions: list[str] = field(default_factory=list)  # ids left without any answer

    def __bool__(self) -> bool:
        return bool(self.repaired or self.dropped_answers)

    def summary(self, source: str) -> str:
        """One line: counts and the first few ids of each kind of change."""
        parts = [f"{source}: --offsets repair moved {len(self.repaired)} answer_start(s) to the nearest "
                 f"occurrence of the answer text{_ids(self.repaired)}"]
        parts.append(f"dropped {len(self.dropped_answers)} answer(s) whose text is not in the context"
                     f"{_ids(self.dropped_answers)}")
        parts.append(f"dropped {len(self.dropped_questions)} question(s) left without an answer"
                     f"{_ids(self.dropped_questions)}")
        return "; ".join(parts)


def _ids(ids: list[str]) -> str:
    if not ids:
        return ""
    unique = list(dict.fromkeys(ids))
    more = ", ..." if len(unique) > SHOWN else ""
    return " (ids " + ", ".join(repr(i) for i in unique[:SHOWN]) + more + ")"


def nearest_occurrence(context: str, text: str, start: int) -> int | None:
    """The start of the occurrence of ``text`` in ``context`` nearest to ``start`` (earlier on ties)."""
    best = None
    at = context.find(text)
    while at != -1:
        if best is None or abs(at - start) < abs(best - start):
            best = at
        at = context.find(text, at + 1)
    return best


def build_examples(
    questions: Iterable[RawQuestion],
    problems: Problems,
    offsets: str = "strict",
    gold: bool = True,
) -> tuple[list[Example], OffsetRepairs]:
    """Checks every question and builds the examples; problems go to ``problems``.

    Args:
        questions: The questions of one source, in order.
        problems: Where each problem is recorded (the caller raises them together).
        offsets: ``strict``, ``repair`` or ``ignore`` (see the module docstring).
        gold: False for prediction: answers are not read (rows may have none) and an empty
            context or question is kept for the caller to abstain on, not refused.

    Returns:
        The examples (repair's dropped questions left out) and what repair changed.
    """
    if offsets not in OFFSET_MODES:
        raise ValueError(f"offsets must be one of {OFFSET_MODES}, got {offsets!r}")
    seen: set[str] = set()
    examples: list[Example] = []
    repairs = OffsetRepairs()
    for q in questions:
        before = len(problems.items)
        qid = q.id
        if isinstance(qid, int) and not isinstance(qid, bool):
            qid = str(qid)
        if not isinstance(qid, str) or not qid:
            problems.add(q.where, "missing field 'id' (a non-empty string)")
            continue
        where = f"{q.where} (id {qid!r})"
        if qid in seen:
            problems.add(where, f"duplicate question id {qid!r}")
        seen.add(qid)
        title = "" if q.title is MISSING or q.title is None else q.title
        if not isinstance(title, str):
            problems.add(where, f"field 'title' must be a string, found {title!r}")
        for name, value in (("context", q.context), ("question", q.question)):
            if not isinstance(value, str):
                problems.add(where, f"missing field {name!r} (a string)" if value is MISSING or value is None
                             else f"field {name!r} must be a string, found {type(value).__name__}")
            elif gold and not value.strip():
                problems.add(where, f"empty {name}")
            elif (bad := unencodable_at(value)) is not None:
                problems.add(where, f"field {name!r} holds a lone surrogate (\\u{ord(value[bad]):04x}) at char {bad}")
        answers: list[Answer] = []
        dropped = False
        if gold and len(problems.items) == before:
            answers, dropped = _answers(q, where, qid, problems, offsets, repairs)
        if len(problems.items) > before:
            continue
        if dropped and not answers:
            repairs.dropped_questions.append(qid)
            continue
        examples.append(Example(id=qid, title=title, context=q.context, question=q.question,
                                answers=tuple(answers), is_impossible=gold and not answers))
    return examples, repairs


def _answers(q: RawQuestion, where: str, qid: str, problems: Problems, offsets: str, repairs: OffsetRepairs):
    """The checked answers of one question and whether repair dropped any."""
    if isinstance(q.answers, BadAnswers):
        problems.add(where, q.answers.problem)
        return [], False
    if q.answers is MISSING:
        if q.is_impossible is MISSING:
            problems.add(where, "missing field 'answers' (give an empty list of texts for a question with no answer)")
        return [], False
    impossible = False if q.is_impossible is MISSING else q.is_impossible
    if not isinstance(impossible, bool):
        problems.add(where, "field 'is_impossible' must be true or false")
        return [], False
    if impossible and q.answers:
        problems.add(where, f"flagged is_impossible but has {len(q.answers)} answer(s); "
                            "put them under 'plausible_answers' or drop the flag")
        return [], False
    context = q.context
    answers, dropped = [], False
    for n, (text, start) in enumerate(q.answers):
        at = f"{where}, answer {n}"
        if not isinstance(text, str):
            problems.add(at, f"field 'text' must be a string, found {text!r}")
            continue
        if not text:
            problems.add(at, "empty answer text")
            continue
        if not isinstance(start, int) or isinstance(start, bool):
            problems.add(at, f"'answer_start' must be an integer, found {start!r}")
            continue
        found = context[start : start + len(text)] if 0 <= start <= len(context) else None
        if found == text or offsets == "ignore":
            answers.append(Answer(text=text, start=start))
        elif offsets == "repair":
            moved = nearest_occurrence(context, text, start)
            if moved is None:
                repairs.dropped_answers.append(qid)
                dropped = True
            else:
                repairs.repaired.append(qid)
                answers.append(Answer(text=text, start=moved))
        else:
            problems.add(at, f"text {text!r} does not match context[{start}:{start + len(text)}] = {found!r}"
                             f"{_normalization_hint(text, context, start)}")
            problems.hints["--offsets repair moves a wrong answer_start to the nearest occurrence of its text"] = None
    return answers, dropped


def _normalization_hint(text: str, context: str, start: int) -> str:
    """Explains a mismatch that is only Unicode normalisation (NFC "ü" vs NFD "u" + combining mark)."""
    if 0 <= start <= len(context) and unicodedata.normalize("NFC", context[start:]).startswith(
        unicodedata.normalize("NFC", text)
    ):
        return " (the same text in another Unicode normalisation: NFC-normalise context and answers alike)"
    return ""


# -- SQuAD 1.1 / 2.0 JSON (articles -> paragraphs -> qas) ------------------------------------


def squad_questions(data: object, problems: Problems) -> list[RawQuestion]:
    """The questions of a parsed SQuAD JSON file; structural problems go to ``problems``.

    Places read "article 0 ('Normans'), paragraph 1, question 3".
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        problems.add("file", "expected a SQuAD JSON object with a 'data' list of articles")
        return []
    questions = []
    for a_idx, article in enumerate(data["data"]):
        where = f"article {a_idx}"
        if not isinstance(article, dict):
            problems.add(where, "expected an object with 'paragraphs'")
            continue
        title = article.get("title", "")
        if isinstance(title, str) and title:
            where = f"article {a_idx} ({title!r})"
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            problems.add(where, "missing field 'paragraphs' (a list)")
            continue
        for p_idx, paragraph in enumerate(paragraphs):
            p_where = f"{where}, paragraph {p_idx}"
            if not isinstance(paragraph, dict):
                problems.add(p_where, "expected an object with 'context' and 'qas'")
                continue
            qas = paragraph.get("qas")
            if not isinstance(qas, list):
                problems.add(p_where, "missing field 'qas' (a list)")
                continue
            for q_idx, qa in enumerate(qas):
                q_where = f"{p_where}, question {q_idx}"
                if not isinstance(qa, dict):
                    problems.add(q_where, "expected an object with 'id', 'question', 'answers'")
                    continue
                questions.append(RawQuestion(
                    where=q_where, id=qa.get("id", MISSING), title=title, context=paragraph.get("context", MISSING),
                    question=qa.get("question", MISSING), answers=_squad_answers(qa, q_where, problems),
                    is_impossible=qa.get("is_impossible", MISSING),
                ))
    return questions


def _squad_answers(qa: dict, where: str, problems: Problems) -> object:
    raw = qa.get("answers", MISSING)
    if raw is MISSING:
        return MISSING
    if not isinstance(raw, list):
        problems.add(where, "field 'answers' must be a list")
        return []
    pairs = []
    for n, ans in enumerate(raw):
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), str) or "answer_start" not in ans:
            problems.add(f"{where}, answer {n}", "expected {'text': str, 'answer_start': int}")
            continue
        pairs.append((ans["text"], ans["answer_start"]))
    return pairs


def squad_examples(
    data: object, source: str, offsets: str = "strict", gold: bool = True
) -> tuple[list[Example], OffsetRepairs]:
    """Validated examples of a parsed SQuAD JSON file, in file order.

    Raises:
        SquadFormatError: Every problem at once: their count, then the first few, each
            naming ``source``, the article, paragraph and question id, and the field.
    """
    problems = Problems(source)
    questions = squad_questions(data, problems)
    examples, repairs = build_examples(questions, problems, offsets=offsets, gold=gold)
    problems.check()
    return examples, repairs


def iter_examples(data: object, source: str = "<data>") -> list[Example]:
    """The validated examples of a parsed SQuAD JSON file (strict offsets), in file order.

    Raises:
        SquadFormatError: Every problem at once, naming ``source``, article, paragraph and question id.
    """
    return squad_examples(data, source)[0]


def load_squad(path: str | os.PathLike) -> list[Example]:
    """Reads and validates a SQuAD 1.1 or 2.0 JSON (or .json.gz) file with strict offsets.

    Other layouts, and the repair / ignore offset modes, are :func:`pocketqa.data.formats.load_examples`'s.
    """
    return iter_examples(read_json(path), source=str(Path(path)))


def to_squad_json(examples: Iterable[Example], version: str = "v2.0") -> dict:
    """Groups examples back into SQuAD JSON (articles by title, paragraphs by context), in order."""
    articles: list[dict] = []
    article_index: dict[str, dict] = {}
    paragraph_index: dict[tuple[str, str], dict] = {}
    for ex in examples:
        article = article_index.get(ex.title)
        if article is None:
            article = {"title": ex.title, "paragraphs": []}
            article_index[ex.title] = article
            articles.append(article)
        paragraph = paragraph_index.get((ex.title, ex.context))
        if paragraph is None:
            paragraph = {"context": ex.context, "qas": []}
            paragraph_index[(ex.title, ex.context)] = paragraph
            article["paragraphs"].append(paragraph)
        paragraph["qas"].append(
            {
                "id": ex.id,
                "question": ex.question,
                "answers": [{"text": a.text, "answer_start": a.start} for a in ex.answers],
                "is_impossible": ex.is_impossible,
            }
        )
    return {"version": version, "data": articles}


def write_json_atomic(obj: object, path: str | os.PathLike, indent: int | None = None) -> None:
    """Writes JSON (gzip when the name ends in .gz) to a temp file, then renames it into place.

    A crash or bad input half-way never leaves a truncated file where a good one was.
    """
    with atomic_path(path) as tmp, open_text(tmp, "wt", like=path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)


def write_squad(examples: Iterable[Example], path: str | os.PathLike, version: str = "v2.0") -> None:
    """Writes examples as SQuAD JSON (plain or .json.gz), atomically."""
    write_json_atomic(to_squad_json(examples, version=version), path)
