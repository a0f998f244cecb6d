"""SQuAD 1.1 / 2.0 JSON <-> typed examples.

Reading validates the file as it goes; the first problem raises one ``SquadFormatError``
naming the file, the article (index and title) and the question id, so a user can find
the offending record without a traceback.
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pocketqa.errors import PocketQAError, SquadFormatError


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


def iter_examples(data: dict, source: str = "<data>") -> Iterator[Example]:
    """Validates a parsed SQuAD dict and yields its examples in file order.

    Args:
        data: The parsed JSON (``{"version", "data": [{"title", "paragraphs": [...]}]}``).
        source: Name used in error messages (usually the file path).

    Raises:
        SquadFormatError: On the first malformed record, naming source, article and question id.
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SquadFormatError(f"{source}: expected a SQuAD JSON object with a 'data' list of articles")
    seen: set[str] = set()
    for a_idx, article in enumerate(data["data"]):
        where = f"{source}: article {a_idx}"
        if not isinstance(article, dict):
            raise SquadFormatError(f"{where}: expected an object with 'paragraphs'")
        title = article.get("title", "")
        if not isinstance(title, str):
            raise SquadFormatError(f"{where}: field 'title' must be a string")
        where = f"{source}: article {a_idx} ({title!r})" if title else where
        paragraphs = article.get("paragraphs")
        if not isinstance(paragraphs, list):
            raise SquadFormatError(f"{where}: missing field 'paragraphs' (a list)")
        for p_idx, paragraph in enumerate(paragraphs):
            p_where = f"{where}, paragraph {p_idx}"
            if not isinstance(paragraph, dict):
                raise SquadFormatError(f"{p_where}: expected an object with 'context' and 'qas'")
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise SquadFormatError(f"{p_where}: missing field 'context' (a string)")
            _check_encodable(context, "context", p_where)  # once per paragraph, not per question
            qas = paragraph.get("qas")
            if not isinstance(qas, list):
                raise SquadFormatError(f"{p_where}: missing field 'qas' (a list)")
            for q_idx, qa in enumerate(qas):
                yield _parse_qa(qa, title, context, f"{p_where}, question {q_idx}", seen)


def unencodable_at(text: str) -> int | None:
    """Index of the first character UTF-8 cannot encode (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def _check_encodable(text: str, field: str, where: str) -> None:
    if (bad := unencodable_at(text)) is not None:
        raise SquadFormatError(f"{where}: field {field!r} holds a lone surrogate (\\u{ord(text[bad]):04x}) at char {bad}")


def _parse_qa(qa: object, title: str, context: str, where: str, seen: set[str]) -> Example:
    if not isinstance(qa, dict):
        raise SquadFormatError(f"{where}: expected an object with 'id', 'question', 'answers'")
    qid = qa.get("id")
    if not isinstance(qid, (str, int)) or str(qid) == "":
        raise SquadFormatError(f"{where}: missing field 'id'")
    qid = str(qid)
    where = f"{where} (id {qid!r})"
    if qid in seen:
        raise SquadFormatError(f"{where}: duplicate question id {qid!r}")
    seen.add(qid)
    if not context.strip():
        raise SquadFormatError(f"{where}: empty context")
    question = qa.get("question")
    if not isinstance(question, str):
        raise SquadFormatError(f"{where}: missing field 'question' (a string)")
    if not question.strip():
        raise SquadFormatError(f"{where}: empty question")
    _check_encodable(question, "question", where)
    raw_answers = qa.get("answers", [])
    if not isinstance(raw_answers, list):
        raise SquadFormatError(f"{where}: field 'answers' must be a list")
    is_impossible = qa.get("is_impossible", False)
    if not isinstance(is_impossible, bool):
        raise SquadFormatError(f"{where}: field 'is_impossible' must be true or false")
    if is_impossible and raw_answers:
        raise SquadFormatError(
            f"{where}: flagged is_impossible but has {len(raw_answers)} answer(s); "
            "put them under 'plausible_answers' or drop the flag"
        )
    if "answers" not in qa and "is_impossible" not in qa:
        raise SquadFormatError(f"{where}: missing field 'answers' (use [] with is_impossible for no answer)")
    answers = []
    for n, ans in enumerate(raw_answers):
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), str) or "answer_start" not in ans:
            raise SquadFormatError(f"{where}, answer {n}: expected {{'text': str, 'answer_start': int}}")
        start = ans["answer_start"]
        if not isinstance(start, int) or isinstance(start, bool):
            raise SquadFormatError(f"{where}, answer {n}: 'answer_start' must be an integer, found {start!r}")
        text = ans["text"]
        if not text:
            raise SquadFormatError(f"{where}, answer {n}: empty answer text")
        found = context[start : start + len(text)] if 0 <= start <= len(context) else None
        if found != text:
            raise SquadFormatError(
                f"{where}, answer {n}: text {text!r} does not match context[{start}:{start + len(text)}]"
                f" = {found!r}{_normalization_hint(text, context, start)}"
            )
        answers.append(Answer(text=text, start=start))
    if not is_impossible and not answers:
        # SQuAD 1.1-style files may omit is_impossible; a question with no answers is then unanswerable.
        is_impossible = True
    return Example(
        id=qid, title=title, context=context, question=question, answers=tuple(answers), is_impossible=is_impossible
    )


def _normalization_hint(text: str, context: str, start: int) -> str:
    """Explains a mismatch that is only Unicode normalisation (NFC "ü" vs NFD "u" + combining mark)."""
    if 0 <= start <= len(context) and unicodedata.normalize("NFC", context[start:]).startswith(
        unicodedata.normalize("NFC", text)
    ):
        return " (the same text in another Unicode normalisation: NFC-normalise context and answers alike)"
    return ""


def load_squad(path: str | os.PathLike) -> list[Example]:
    """Reads and validates a SQuAD 1.1 or 2.0 JSON (or .json.gz) file.

    Raises:
        SquadFormatError: Naming the file, article and question id of the first problem.
    """
    path = Path(path)
    return list(iter_examples(read_json(path), source=str(path)))


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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with opener(tmp, "wt", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=indent)
        os.replace(tmp, path)
    except OSError as e:  # name the user's file, not the temp file beside it
        raise PocketQAError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_squad(examples: Iterable[Example], path: str | os.PathLike, version: str = "v2.0") -> None:
    """Writes examples as SQuAD JSON (plain or .json.gz), atomically."""
    write_json_atomic(to_squad_json(examples, version=version), path)
