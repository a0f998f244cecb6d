"""The callable class each Ray actor holds: one QuestionAnswerer, loaded once per actor.

Ray Data's ``map_batches`` hands an actor whole rows (questions) at a time; the actor
windows them itself and decodes all the windows of a question together
(``QuestionAnswerer.decode_examples``), so a question is never split across batches or
actors and the answers equal single-process ``predict``'s.
"""

from __future__ import annotations

import sys

from pocketqa.data.predictions import PREDICTION_COLUMNS
from pocketqa.data.squad import Example
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.spans import Decoded

PATH_COLUMN = "path"  # the input file of each row (Ray Data's include_paths)
SKIPPED_COLUMN = "skipped"  # true where an empty question or context was answered with an abstention


def answer_rows(qa: QuestionAnswerer, ids: list, questions: list, contexts: list, threshold: float) -> list[dict]:
    """Prediction rows (``QuestionAnswerer.records``) for parallel lists of ids, questions and contexts.

    A row whose question or context is empty or missing gets the abstention of a question
    without any span (answer "", null_odds 1e6, answerability 0) and ``skipped`` true, instead
    of failing the whole batch.
    """
    examples, decoded, keep = [], [], []
    for i, (qid, question, context) in enumerate(zip(ids, questions, contexts, strict=True)):
        example = Example(id=str(qid), title="", context=context or "", question=question or "")
        examples.append(example)
        usable = isinstance(question, str) and question.strip() and isinstance(context, str) and context.strip()
        if usable:
            keep.append(i)
        decoded.append(Decoded())  # no span: the abstention, replaced below for usable rows
    for i, d in zip(keep, qa.decode_examples([examples[i] for i in keep])):
        decoded[i] = d
    rows = qa.records(examples, decoded, threshold)
    usable = set(keep)
    for i, row in enumerate(rows):
        row[SKIPPED_COLUMN] = i not in usable
    return rows


class AnswerActor:
    """Answers batches of rows (a pyarrow Table with id, question, context, path) on one actor.

    Args:
        model: Model directory, hub id, ``pip:NAME`` or None (the bundled model).
        threshold: The no-answer threshold (None: the model's calibrated one).
        answerer_kwargs: Keyword arguments of ``QuestionAnswerer.from_pretrained`` (device,
            threads, batch_size, scoring, window settings, ...).
    """

    def __init__(self, model: str | None, threshold: float | None, answerer_kwargs: dict):
        self.qa = QuestionAnswerer.from_pretrained(model, threshold=threshold, **answerer_kwargs)
        self.threshold = self.qa.threshold

    def __call__(self, batch):
        import pyarrow as pa

        data = batch.select(["id", "question", "context", PATH_COLUMN]).to_pydict()
        rows = answer_rows(self.qa, data["id"], data["question"], data["context"], self.threshold)
        skipped = [row["id"] for row in rows if row[SKIPPED_COLUMN]]
        if skipped:  # Ray forwards an actor's stderr to the driver's terminal
            print(f"pocketqa: warning: {len(skipped)} row(s) with an empty question or context answered with an "
                  f"abstention (ids {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''})", file=sys.stderr)
        columns = {c: [row[c] for row in rows] for c in (*PREDICTION_COLUMNS, SKIPPED_COLUMN)}
        columns[PATH_COLUMN] = data[PATH_COLUMN]
        return pa.table(columns, schema=output_schema())


def output_schema():
    """The Arrow schema of an actor's output: the prediction columns, ``skipped`` and ``path``."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("answer", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
        ("score", pa.float64()), ("null_odds", pa.float64()), ("answerability", pa.float64()),
        ("abstained", pa.bool_()), (SKIPPED_COLUMN, pa.bool_()), (PATH_COLUMN, pa.string()),
    ])
