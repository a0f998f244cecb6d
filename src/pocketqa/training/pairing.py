"""Can this teacher be distilled into this student? Vocabulary, layer and head checks.

Everything that would make distillation compare the wrong things (token ids, layers,
attention heads) is found before any model trains, and reported at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pocketqa.data.formats import load_examples
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.training.attention import tap_problem
from pocketqa.training.layer_map import parse_layer_map, uniform_layer_map
from pocketqa.training.bridge import BUILTIN_SAMPLES, VocabBridge

if TYPE_CHECKING:
    from pocketqa.training.bridge import VocabBridge

BRIDGE_SAMPLES = 300  # training texts the vocabulary bridge is checked on (plus its built-in ones)


def _vocab_problem(teacher_tok, student_tok) -> str | None:
    tv, sv = teacher_tok.get_vocab(), student_tok.get_vocab()
    if tv != sv:
        differ = sorted(t for t in tv.keys() | sv.keys() if tv.get(t) != sv.get(t))
        shown = ", ".join(f"{t!r}: {tv.get(t)} vs {sv.get(t)}" for t in differ[:3])
        return (
            f"teacher and student tokenizers differ: vocabularies of {len(tv)} and {len(sv)} tokens, "
            f"{len(differ)} token(s) missing or with other ids ({shown}); distillation compares token "
            "positions, so the student needs the teacher's tokenizer (e.g. --student-base TEACHER --student-layers K), "
            "or --bridge auto to map ids when both tokenizers cut text into the same word pieces"
        )
    probe = "Hello World! ÉTÉ, naïve 1999 co-operate"
    if teacher_tok(probe)["input_ids"] != student_tok(probe)["input_ids"]:
        return (
            "teacher and student tokenizers share a vocabulary but split text differently (casing, accents "
            "or special tokens); use the teacher's tokenizer files for the student"
        )
    return None


def bridge_samples(
    paths: Sequence[str | os.PathLike], limit: int = BRIDGE_SAMPLES, data_format: str | None = None
) -> list[str]:
    """Questions and contexts spread over SQuAD files, to check a vocabulary bridge on.

    Two thirds questions, one third contexts, taken evenly over each file: SQuAD files are
    ordered by article, so the first few hundred questions would all be about one topic.
    """
    paths = list(dict.fromkeys(str(p) for p in paths))
    per_file = max(2, limit // max(1, len(paths)))
    n_questions = per_file * 2 // 3
    texts: list[str] = []
    for path in paths:
        examples = load_examples(path, format=data_format, offsets="ignore")  # texts only
        picked = examples[:: max(1, len(examples) // n_questions)][:n_questions]
        texts += [e.question for e in picked]
        texts += list(dict.fromkeys(e.context for e in picked))[: per_file - n_questions]
    return texts


def plan_vocabulary(
    teacher_tok, student_tok, mode: str = "auto", sample_texts: Sequence[str] = ()
) -> tuple[VocabBridge | None, str | None]:
    """Decides how teacher and student token ids meet: directly, through a bridge, or not at all.

    Same vocabularies never use a bridge. Different vocabularies with ``mode="auto"`` get a
    :class:`~pocketqa.training.bridge.VocabBridge`, checked on ``sample_texts`` plus its built-in
    samples; with ``"off"``, or when the bridge refuses, the pair cannot be distilled.

    Returns:
        (bridge, problem): bridge is None when ids are shared or no bridge could be built;
        problem is the message to report (with :func:`check_pair`'s others), or None.
    """
    problem = _vocab_problem(teacher_tok, student_tok)
    if problem is None or mode == "off" or teacher_tok.get_vocab() == student_tok.get_vocab():
        return None, problem

    texts = list(BUILTIN_SAMPLES) + list(sample_texts)
    try:
        return VocabBridge.build(student_tok, teacher_tok, texts, max_samples=len(texts)), None
    except PocketQAError as e:
        return None, f"teacher and student vocabularies differ and the vocabulary bridge refused them: {e}"


def check_pair(
    teacher_config,
    student_config,
    teacher_tok,
    student_tok,
    layer_map: str | None = None,
    attention_loss: bool = True,
    stage1: bool = True,
    teacher_model=None,
    student_model=None,
    bridge: VocabBridge | None = None,
    vocab_problem: str | None = None,
) -> list[tuple[int, int]]:
    """Checks that a teacher and a student can be distilled; returns the layer map.

    Args:
        bridge: The vocabulary bridge the pair will use (from :func:`plan_vocabulary`):
            with one, different vocabularies are expected and not a problem.
        vocab_problem: A problem :func:`plan_vocabulary` found (e.g. the bridge's refusal),
            reported instead of the plain vocabulary check.

    Raises:
        ConfigError: Listing every problem found (tokenizers, layer counts, head counts).
    """
    problems = []
    vocab = vocab_problem or (None if bridge is not None else _vocab_problem(teacher_tok, student_tok))
    if vocab:
        problems.append(vocab)
    n, m = teacher_config.num_hidden_layers, student_config.num_hidden_layers
    pairs: list[tuple[int, int]] = []
    if stage1:
        if layer_map is not None:
            pairs = parse_layer_map(layer_map)
            bad = [f"{s}:{t}" for s, t in pairs if not (0 <= s <= m and 0 <= t <= n)]
            if bad:
                problems.append(
                    f"layer_map pairs {', '.join(bad)} are out of range: student indices 0..{m}, teacher 0..{n} "
                    "(0 = embeddings)"
                )
            dupes = sorted({s for s, _ in pairs if [p[0] for p in pairs].count(s) > 1})
            if dupes:
                problems.append(f"layer_map maps student index(es) {dupes} more than once")
            if attention_loss and any(s > 0 and t == 0 for s, t in pairs):
                problems.append("layer_map maps a student layer to the teacher's embeddings (0), which has no attention")
        elif n % m:
            suggestion = ",".join(f"{i}:{round(i * n / m)}" for i in range(m + 1))
            problems.append(
                f"teacher has {n} layers and student {m}: {n} is not a multiple of {m}, so there is no uniform "
                f"layer map; pass one explicitly, e.g. --layer-map {suggestion}"
            )
        else:
            pairs = uniform_layer_map(m, n)
        if attention_loss:
            th, sh = teacher_config.num_attention_heads, student_config.num_attention_heads
            if th != sh:
                problems.append(
                    f"teacher has {th} attention heads and student {sh}: attention matrices cannot be compared "
                    "head by head; give the student the same number of heads or pass --no-attention-loss"
                )
            for who, model in (("teacher", teacher_model), ("student", student_model)):
                if model is not None and (problem := tap_problem(model)):
                    problems.append(f"{who} {problem}")
    if problems:
        raise ConfigError("cannot distil this teacher into this student: " + "; ".join(problems))
    return pairs
