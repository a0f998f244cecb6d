"""The vectorised logits rule (all windows at once) == the question-by-question decoder it replaced.

The reference is the frozen copy in bench/tools/host_reference.py (what the host benchmark
runs as "reference"). Random windows and logits, including what breaks naive vectorising:
score ties (logits rounded to a few values), windows without context tokens, tokens
without characters, n_best above the number of candidates, max_answer_length 1, and
questions without windows. Decodings must be equal exactly (texts, offsets, scores,
probabilities, null odds), not approximately.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pocketqa.data.features import Features
from pocketqa.data.squad import Example
from pocketqa.inference.decode import decode_example, decode_features

REFERENCE_FILE = Path(__file__).resolve().parents[2] / "bench" / "tools" / "host_reference.py"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("host_reference", REFERENCE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _random_case(rng: np.random.Generator, ties: bool):
    """Questions, their windows as Features, and padded float32 logits."""
    n_questions = int(rng.integers(1, 6))
    contexts, rows = [], []
    for q in range(n_questions):
        context = "".join(rng.choice(list("abc de"), size=int(rng.integers(5, 60))))
        contexts.append(context)
        for _ in range(int(rng.integers(0, 4))):  # 0: a question without windows
            n = int(rng.integers(1, 30))
            starts = np.full(n, -1)
            ends = np.full(n, -1)
            first = int(rng.integers(0, n + 1))
            last = int(rng.integers(first, n + 1))  # first == last: no context token
            for j in range(first, last):
                a = int(rng.integers(0, len(context)))
                b = a + int(rng.integers(-1, 6))  # b <= a: a token without characters
                starts[j], ends[j] = a, min(max(b, 0), len(context))
            cls = 0 if rng.random() < 0.8 else int(rng.integers(0, n))
            rows.append((q, n, starts, ends, cls))
    width = max([n for _, n, *_ in rows], default=0) + int(rng.integers(0, 3))
    char_start = np.full((len(rows), width), -1, dtype=np.int32)
    char_end = np.full((len(rows), width), -1, dtype=np.int32)
    for w, (_, n, s, e, _) in enumerate(rows):
        char_start[w, :n], char_end[w, :n] = s, e
    features = Features(
        ids=np.zeros((len(rows), width), dtype=np.int32), types=None, char_start=char_start, char_end=char_end,
        lengths=np.array([n for _, n, *_ in rows], dtype=np.int64),
        example_index=np.array([q for q, *_ in rows], dtype=np.int64),
        cls_index=np.array([c for *_, c in rows], dtype=np.int64),
    )
    logits = rng.standard_normal((2, len(rows), width)).astype(np.float32)
    if ties:
        logits = np.round(logits * 2) / 2  # few distinct values: many equal scores
    examples = [Example(id=str(i), title="", context=c, question="q") for i, c in enumerate(contexts)]
    return examples, features, logits[0], logits[1]


@pytest.mark.parametrize("seed", range(60))
def test_vectorised_decoding_equals_the_reference(reference, seed):
    rng = np.random.default_rng(seed)
    examples, features, starts, ends = _random_case(rng, ties=seed % 2 == 0)
    n_best = int(rng.choice([1, 2, 3, 5, 20, 60]))
    max_answer_length = int(rng.choice([1, 2, 4, 30]))
    per_window = [starts[w] for w in range(len(features))], [ends[w] for w in range(len(features))]
    old_features = reference.Features(
        input_ids=features.input_ids, token_type_ids=None, offsets=features.offsets,
        example_index=features.example_index, cls_index=features.cls_index,
    )
    expected = reference.decode_features(examples, old_features, *per_window, n_best=n_best,
                                         max_answer_length=max_answer_length)
    # one array per window, and the padded 2-D arrays, give the same decodings
    assert decode_features(examples, features, *per_window, n_best=n_best, max_answer_length=max_answer_length) == expected
    assert decode_features(examples, features, starts, ends, n_best=n_best, max_answer_length=max_answer_length) == expected
    for q, ex in enumerate(examples):
        windows = np.flatnonzero(features.example_index == q).tolist()
        args = (ex.context, [starts[w] for w in windows], [ends[w] for w in windows],
                [features.offsets[w] for w in windows], [int(features.cls_index[w]) for w in windows])
        assert decode_example(*args, n_best=n_best, max_answer_length=max_answer_length) == \
            reference.decode_example(*args, n_best=n_best, max_answer_length=max_answer_length)


def test_random_cases_reach_the_edge_cases(reference):
    """The random cases above do hold ties, empty windows, question without windows and short n-best lists."""
    seen = {"tie at the top": False, "window without context": False, "question without windows": False,
            "fewer candidates than n_best": False}
    for seed in range(60):
        rng = np.random.default_rng(seed)
        examples, features, starts, ends = _random_case(rng, ties=seed % 2 == 0)
        for q in range(len(examples)):
            windows = np.flatnonzero(features.example_index == q)
            seen["question without windows"] |= len(windows) == 0
            for w in windows:
                n = features.lengths[w]
                seen["window without context"] |= not (features.char_start[w, :n] >= 0).any()
                top = np.sort(starts[w, :n])[::-1]
                seen["tie at the top"] |= len(top) > 1 and top[0] == top[1]
        out = decode_features(examples, features, starts, ends, n_best=60, max_answer_length=30)
        seen["fewer candidates than n_best"] |= any(0 < len(d.spans) < 60 for d in out)
    assert all(seen.values()), seen
