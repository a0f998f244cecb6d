"""pocketqa decoding == transformers' utils_qa.postprocess_qa_predictions on the same logits.

tests/assets/utils_qa_golden.json holds fixed per-window logits and what utils_qa
(version_2_with_negative=True) made of them; python -m bench.tools.decode_golden wrote it. Here
we rebuild the windows with our own features.py and decode the stored logits with our
decode.py. One documented deviation: where no valid span exists, utils_qa answers the
literal "empty" and we abstain (no spans, null_odds = +inf).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import build_bpe_tokenizer, build_tokenizer

from pocketqa.inference.decode import decode_example, decode_features
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.squad import Example

GOLDEN = json.loads((Path(__file__).parent.parent / "assets" / "utils_qa_golden.json").read_text(encoding="utf-8"))
NO_SPAN = {ex["id"] for ex in GOLDEN["examples"] if ex["kind"] == "nospan"}
IDS = [ex["id"] for ex in GOLDEN["examples"]]


@pytest.fixture(scope="module")
def decoded() -> dict:
    examples = [Example(id=e["id"], title="", context=e["context"], question=e["question"]) for e in GOLDEN["examples"]]
    features = make_features(examples, build_tokenizer(), WindowConfig(**GOLDEN["window"]))
    windows = GOLDEN["windows"]
    # Our windows must be the ones the logits were made for (same count, owners and offsets).
    assert len(features) == len(windows)
    for w, stored in enumerate(windows):
        assert examples[features.example_index[w]].id == stored["example_id"]
        assert [list(o) if o is not None else None for o in features.offsets[w]] == stored["offsets"]
    starts = [np.asarray(w["start_logits"]) for w in windows]
    ends = [np.asarray(w["end_logits"]) for w in windows]
    out = decode_features(
        examples, features, starts, ends, n_best=GOLDEN["n_best"], max_answer_length=GOLDEN["max_answer_length"]
    )
    return {ex.id: d for ex, d in zip(examples, out)}


def test_golden_covers_both_thresholds_and_several_windows():
    answers = GOLDEN["expected"]["answers"]
    assert len(answers) == 2 and len(set(map(json.dumps, answers.values()))) == 2
    per_example = {i: sum(w["example_id"] == i for w in GOLDEN["windows"]) for i in IDS}
    assert sum(n > 1 for n in per_example.values()) >= 5


@pytest.mark.parametrize("threshold", list(GOLDEN["expected"]["answers"]))
def test_answers_match_utils_qa(decoded, threshold):
    expected = GOLDEN["expected"]["answers"][threshold]
    ours = {qid: decoded[qid].answer(float(threshold)) for qid in IDS if qid not in NO_SPAN}
    assert ours == {qid: expected[qid] for qid in ours}


@pytest.mark.parametrize("qid", [i for i in IDS if i not in NO_SPAN])
def test_null_odds_match_utils_qa(decoded, qid):
    assert decoded[qid].null_odds == pytest.approx(GOLDEN["expected"]["null_odds"][qid], abs=1e-6)


@pytest.mark.parametrize("qid", [i for i in IDS if i not in NO_SPAN])
def test_nbest_texts_and_probabilities_match_utils_qa(decoded, qid):
    expected = GOLDEN["expected"]["nbest"][qid]
    d = decoded[qid]
    # utils_qa lists the null answer (text "") among the n-best; we keep it apart.
    spans = [p for p in expected if p["text"] != ""]
    null = [p for p in expected if p["text"] == ""]
    assert [s.text for s in d.spans] == [p["text"] for p in spans]
    assert [s.probability for s in d.spans] == pytest.approx([p["probability"] for p in spans], abs=1e-6)
    assert len(null) == 1
    assert d.null_probability == pytest.approx(null[0]["probability"], abs=1e-6)


@pytest.mark.parametrize("qid", sorted(NO_SPAN))
def test_no_valid_span_deviation(decoded, qid):
    """utils_qa invents the answer "empty" (score 0); we abstain at any threshold."""
    assert GOLDEN["expected"]["nbest"][qid][0]["text"] == "empty"
    d = decoded[qid]
    assert d.spans == [] and math.isinf(d.null_odds) and d.null_odds > 0
    assert d.null_probability == pytest.approx(1.0)
    for threshold in GOLDEN["expected"]["answers"]:
        assert d.answer(float(threshold)) == ""


def test_a_span_without_characters_is_skipped_as_utils_qa_does():
    # Byte-level BPE gives a lone space its own token with empty (trimmed) offsets:
    context = "The  Normans"
    (offsets,) = make_features([Example(id="x", title="", context=context, question="Who?")],
                               build_bpe_tokenizer(), WindowConfig(64, 8, 16)).offsets
    assert any(o is not None and o[0] == o[1] for o in offsets)
    # Hand-made window over "alpha  beta": CLS, alpha, the empty space token, beta, SEP.
    # The best span is the space token alone (10 + 10) and has no text; utils_qa skips ""
    # predictions when it picks the best non-null one: "beta" (10 + 3; its span from the
    # space token is trimmed to the word), then null odds 0 - 13.
    offs = [None, (0, 5), (6, 6), (7, 11), None]
    starts = np.array([0.0, 1.0, 10.0, 2.0, 0.0])
    ends = np.array([0.0, 1.0, 10.0, 3.0, 0.0])
    d = decode_example("alpha  beta", [starts], [ends], [offs], [0])
    assert [s.text for s in d.spans] == ["beta", "alpha", "beta", "alpha  beta", "alpha"]
    assert [(s.start, s.end) for s in d.spans[:2]] == [(7, 11), (0, 5)]
    assert d.spans[0].score == 13.0 and d.null_odds == -13.0
    assert d.answer(0.0) == "beta"
