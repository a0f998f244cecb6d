"""Streaming a SQuAD file through the answer-keeping edits (``pocketqa augment``), and merging shards.

The input is validated whole before anything is written; paragraphs go through the
candidate source a chunk at a time (one batched call per chunk) and the copies are
written as they are made, so memory stays bounded by a chunk however large the output.
Every paragraph draws from its own generator (``paragraph_rng``), so the output depends
neither on chunking nor on sharding: the shards of a ``--shard K/N`` run merge into
exactly the file of one full run.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pocketqa.augment.edits import AugmentConfig, CandidateSource, Span, augment_example_group, candidate_requests
from pocketqa.data.formats import load_examples
from pocketqa.data.squad import Example, read_json, squad_examples
from pocketqa.errors import ConfigError, PocketQAError, SquadFormatError


def parse_shard(text: str) -> tuple[int, int]:
    """Parses ``K/N`` (K counts from 0) into ``(K, N)``; range checks happen in AugmentConfig."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ConfigError(f"--shard must look like K/N (e.g. 0/4, K counts from 0), found {text!r}")
    return int(match.group(1)), int(match.group(2))


def paragraph_rng(seed: int, paragraph_index: int) -> random.Random:
    """The generator of one paragraph: depends on the seed and the paragraph's index in the file only.

    So output does not depend on batch size, chunking or sharding.
    """
    return random.Random(f"pocketqa-augment:{seed}:{paragraph_index}")


@dataclass(frozen=True)
class Paragraph:
    """One input paragraph: its position in the file, article, context and questions."""

    index: int
    article: int
    title: str
    context: str
    examples: tuple[Example, ...]


def iter_paragraphs(path: str | os.PathLike, data_format: str | None = None, offsets: str = "strict") -> Iterator[Paragraph]:
    """Validates a whole data file (SquadFormatError listing every problem), then yields its paragraphs.

    Validation happens before the first paragraph is yielded, so a malformed file fails
    before any model loads or any output is written. A paragraph is a run of consecutive
    questions on one context of one article (one SQuAD JSON paragraph, or rows in a row file).
    """
    examples = load_examples(path, format=data_format, offsets=offsets)
    index, article, title = 0, -1, None
    for context, group in group_by_context(examples):
        if group[0].title != title or article < 0:
            article, title = article + 1, group[0].title
        yield Paragraph(index, article, title, context, tuple(group))
        index += 1


def _qa_json(ex: Example) -> dict:
    return {
        "id": ex.id,
        "question": ex.question,
        "answers": [{"text": a.text, "answer_start": a.start} for a in ex.answers],
        "is_impossible": ex.is_impossible,
    }


def group_by_context(examples: Iterable[Example]) -> list[tuple[str, list[Example]]]:
    """Consecutive examples sharing a context -> ``[(context, examples), ...]``."""
    groups: list[tuple[str, list[Example]]] = []
    for ex in examples:
        if groups and groups[-1][0] == ex.context:
            groups[-1][1].append(ex)
        else:
            groups.append((ex.context, [ex]))
    return groups


class SquadStreamWriter:
    """Writes SQuAD 2.0 JSON paragraph by paragraph, closing each article as the next begins.

    Memory stays bounded by one paragraph however large the output. The file is written
    under a temporary name and renamed into place by ``close()``, so an interrupted run
    never leaves a truncated file where a complete one is expected. ``.gz`` names are gzipped.
    """

    def __init__(self, path: str | os.PathLike, meta: dict | None = None, version: str = "v2.0"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        if self.path.suffix == ".gz":  # level 6: ~3x faster than gzip's default 9, nearly as small
            self._f = gzip.open(self._tmp, "wt", encoding="utf-8", compresslevel=6)
        else:
            self._f = open(self._tmp, "w", encoding="utf-8")
        head = {"version": version}
        if meta:
            head["pocketqa_augment"] = meta
        self._f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "data": [')
        self._article_key: object = None
        self._n_articles = 0
        self._n_paragraphs_in_article = 0
        self.questions = 0
        self.paragraphs = 0

    def add_paragraph(self, article_key: object, title: str, context: str, examples: Sequence[Example]) -> None:
        """Appends one paragraph; a new ``article_key`` closes the current article."""
        if article_key != self._article_key or self._n_articles == 0:
            if self._n_articles:
                self._f.write("]}, ")
            self._f.write('{"title": ' + json.dumps(title, ensure_ascii=False) + ', "paragraphs": [')
            self._article_key = article_key
            self._n_articles += 1
            self._n_paragraphs_in_article = 0
        if self._n_paragraphs_in_article:
            self._f.write(", ")
        paragraph = {"context": context, "qas": [_qa_json(ex) for ex in examples]}
        self._f.write(json.dumps(paragraph, ensure_ascii=False))
        self._n_paragraphs_in_article += 1
        self.paragraphs += 1
        self.questions += len(examples)

    def close(self) -> None:
        """Finishes the JSON and moves the file into place."""
        self._f.write("]}]}\n" if self._n_articles else "]}\n")
        self._f.close()
        try:
            os.replace(self._tmp, self.path)
        except OSError:
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Drops the partial output."""
        self._f.close()
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def augment_paragraphs(
    paragraphs: Iterable[Paragraph], source: CandidateSource, config: AugmentConfig
) -> Iterator[tuple[Paragraph, list[Example]]]:
    """Augments paragraphs chunk by chunk: one batched candidate call per chunk, then sampling.

    Yields each input paragraph with its output examples (the original questions first
    when ``config.include_original``), in input order.
    """
    for chunk in _chunks(paragraphs, config.chunk_paragraphs):
        requests = []
        for par in chunk:
            requests.extend(candidate_requests(par.context, par.examples, config.augment_questions))
        answers = source.candidates_many(requests) if requests else []
        table = {(text, tuple(spans)): cands for (text, spans), cands in zip(requests, answers)}

        def lookup(text: str, spans: Sequence[Span]) -> list[list[str]]:
            return table[(text, tuple(spans))]

        for par in chunk:
            copies = augment_example_group(
                par.context,
                par.examples,
                lookup,
                paragraph_rng(config.seed, par.index),
                config.factor,
                config.replace_prob,
                config.augment_questions,
            )
            yield par, (list(par.examples) if config.include_original else []) + copies


def select_paragraphs(
    data: str | os.PathLike, config: AugmentConfig, limit_paragraphs: int | None = None
) -> list[Paragraph]:
    """Validates ``data`` and keeps this shard's paragraphs (index ``i % num_shards == shard_index``).

    Paragraph indices, and so the random draws, are those of the whole file, so a set of
    shard outputs holds exactly the examples of one full run.
    """
    paragraphs = [par for par in iter_paragraphs(data, config.format, config.offsets) if par.index % config.num_shards == config.shard_index]
    return paragraphs if limit_paragraphs is None else paragraphs[:limit_paragraphs]


def write_augmented(
    paragraphs: Sequence[Paragraph],
    out: str | os.PathLike,
    source: CandidateSource,
    config: AugmentConfig,
    progress: bool = True,
    meta: dict | None = None,
) -> dict:
    """Augments ``paragraphs`` and streams the result to ``out`` as SQuAD 2.0 JSON (.json or .json.gz).

    Args:
        paragraphs: From ``select_paragraphs``.
        out: Output path; written under a temporary name, renamed when complete.
        source: Candidate lists for ``(text, spans)`` requests.
        config: Factor, probability, seed, shard ...
        progress: Show a tqdm bar.
        meta: Extra fields for the ``pocketqa_augment`` header of the output.

    Returns:
        Counts: paragraphs and questions read and written.
    """
    header = {
        "factor": config.factor,
        "replace_prob": config.replace_prob,
        "candidates": config.candidates,
        "seed": config.seed,
        "include_original": config.include_original,
        "augment_questions": config.augment_questions,
        "shard": f"{config.shard_index}/{config.num_shards}",
        **(meta or {}),
    }
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paragraphs), desc="augment", unit="par")
    stats = {"paragraphs_in": len(paragraphs), "questions_in": sum(len(p.examples) for p in paragraphs)}
    try:
        with SquadStreamWriter(out, meta=header) as writer:
            for par, examples in augment_paragraphs(paragraphs, source, config):
                for context, group in group_by_context(examples):
                    writer.add_paragraph(par.article, par.title, context, group)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    stats.update(paragraphs_out=writer.paragraphs, questions_out=writer.questions)
    return stats


def augment_squad_file(
    data: str | os.PathLike,
    out: str | os.PathLike,
    source: CandidateSource,
    config: AugmentConfig,
    progress: bool = True,
    limit_paragraphs: int | None = None,
) -> dict:
    """``select_paragraphs`` + ``write_augmented``: augments a SQuAD file (this shard of it) into ``out``."""
    paragraphs = select_paragraphs(data, config, limit_paragraphs)
    return write_augmented(paragraphs, out, source, config, progress, meta={"source": Path(data).name})


def merge_shards(shards: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Concatenates the shard outputs of one ``augment --shard K/N`` run into one SQuAD file.

    Checks that the shards come from the same run (same settings), that each of 0..N-1 is
    present once, and that no question id repeats; one shard is in memory at a time and
    nothing is left at ``out`` when a check fails.

    Raises:
        PocketQAError: Naming the missing, repeated or mismatched shard.
    """
    if not shards:
        raise ConfigError("--merge needs the shard files to merge")
    seen_ids: set[str] = set()
    seen_shards: set[int] = set()
    settings = n = None
    with SquadStreamWriter(out) as writer:
        for s_idx, path in enumerate(shards):
            data = read_json(path)
            head = data.get("pocketqa_augment") if isinstance(data, dict) else None
            if not isinstance(head, dict) or "shard" not in head:
                raise PocketQAError(f"{path}: not a 'pocketqa augment --shard' output (no pocketqa_augment header)")
            if not isinstance(head["shard"], str):
                raise PocketQAError(f"{path}: pocketqa_augment header has shard {head['shard']!r}, expected 'K/N'")
            k, this_n = parse_shard(head["shard"])
            these = {key: v for key, v in head.items() if key != "shard"}
            if settings is None:
                settings, n = these, this_n
            elif these != settings or this_n != n:
                raise PocketQAError(f"{path}: made by another run than {shards[0]} (settings or shard count differ)")
            if k in seen_shards:
                raise PocketQAError(f"{path}: shard {k}/{n} given twice")
            seen_shards.add(k)
            # Validated as every data file is (a damaged shard is named, never merged), then regrouped.
            validated = iter(squad_examples(data, str(path))[0])
            for a_idx, article in enumerate(data["data"]):
                for paragraph in article["paragraphs"]:
                    examples = [next(validated) for _ in paragraph["qas"]]
                    for ex in examples:
                        if ex.id in seen_ids:
                            raise SquadFormatError(f"{path}: question id {ex.id!r} also appears in an earlier shard")
                        seen_ids.add(ex.id)
                    writer.add_paragraph((s_idx, a_idx), article.get("title", ""), paragraph["context"], examples)
            del data
        missing = sorted(set(range(n)) - seen_shards)
        if missing:
            raise PocketQAError(f"missing shard(s) {', '.join(f'{k}/{n}' for k in missing)}; run them, then merge again")
    return {"shards": n, "paragraphs": writer.paragraphs, "questions": writer.questions}
