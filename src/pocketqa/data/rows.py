"""The one-row-per-question layout of the datasets library's ``squad_v2``, both ways.

``id, title, context, question, answers: {text: [...], answer_start: [...]}``; the
questions it reads are checked by :func:`pocketqa.data.squad.build_examples` like every
other layout's.
"""

from __future__ import annotations

from pocketqa.data.squad import MISSING, BadAnswers, Example, Problems, RawQuestion

ROW_FIELDS = ("id", "title", "context", "question", "answers")


def row_question(row: object, where: str, problems: Problems) -> RawQuestion | None:
    """A ``squad_v2`` row (``id, title, context, question, answers: {text, answer_start}``) as a RawQuestion.

    ``answers`` may be missing (prediction-only data); an empty ``answers.text`` is an
    unanswerable question. Structural problems go to ``problems`` (and None is returned).
    """
    if not isinstance(row, dict):
        problems.add(where, f"expected an object with fields {', '.join(ROW_FIELDS)}, found {type(row).__name__}")
        return None
    raw = row.get("answers", MISSING)
    answers: object = MISSING
    if isinstance(raw, BadAnswers):
        answers = raw
    elif raw is not MISSING and raw is not None:
        answers = _row_answers(raw)
    return RawQuestion(where=where, id=row.get("id", MISSING), title=row.get("title", MISSING),
                       context=row.get("context", MISSING), question=row.get("question", MISSING), answers=answers)


def _row_answers(raw: object) -> list | BadAnswers:
    """``answers: {text: [...], answer_start: [...]}`` as ``[(text, start), ...]``, or what is wrong with it."""
    if not isinstance(raw, dict):
        return BadAnswers("field 'answers' must be an object {'text': [...], 'answer_start': [...]}, "
                          f"found {type(raw).__name__}")
    texts, starts = raw.get("text", MISSING), raw.get("answer_start", MISSING)
    bad = [name for name, v in (("text", texts), ("answer_start", starts)) if not isinstance(v, (list, tuple))]
    if bad:
        return BadAnswers(" and ".join(f"field 'answers.{b}' must be a list" for b in bad)
                          + f", found {', '.join(repr(raw.get(b, None)) for b in bad)}")
    if len(texts) != len(starts):
        return BadAnswers(f"'answers.text' has {len(texts)} item(s) but 'answers.answer_start' {len(starts)}")
    return list(zip(texts, starts))


def example_row(ex: Example) -> dict:
    """An example in the ``squad_v2`` row layout (what ``row_question`` reads back)."""
    return {"id": ex.id, "title": ex.title, "context": ex.context, "question": ex.question,
            "answers": {"text": [a.text for a in ex.answers], "answer_start": [a.start for a in ex.answers]}}
