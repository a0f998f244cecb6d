"""Windows cut from once-tokenized questions and contexts == the Rust tokenizer's pair encodings.

The reference is the frozen window-by-window ``make_features`` in
bench/tools/host_reference.py (pair encodings of the Rust tokenizer, as before windows were
cut with numpy). Random questions and contexts over each tokenizer's vocabulary, with
repeated contexts, questions cut to max_query_length, special-token text inside questions,
leading spaces, contexts shorter and far longer than a window; the BPE tokenizer (RoBERTa
template, offsets trimmed per window) takes the pair-by-pair path and must agree too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import build_bpe_tokenizer, build_tokenizer

from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.squad import Answer, Example
from pocketqa.errors import ConfigError
from pocketqa.models import default_model_path

REFERENCE_FILE = Path(__file__).resolve().parents[2] / "bench" / "tools" / "host_reference.py"
WORDS = ["paris", "is", "the", "capital", "of", "france", "Norman", "river", "1066", "naïve", "x-ray", "über",
         "[CLS]", "[SEP]", "who", "what?", "  ", ",", "zzqx", "😀", "état"]


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("host_reference_features", REFERENCE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def _text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n)).replace("   ", " ")


def _examples(rng: np.random.Generator) -> list[Example]:
    contexts = [_text(rng, int(rng.integers(1, 120))) for _ in range(4)]
    examples = []
    for i in range(12):
        context = contexts[int(rng.integers(0, len(contexts)))]  # shared by several questions
        question = " " * int(rng.integers(0, 3)) + _text(rng, int(rng.integers(1, 25)))
        start = int(rng.integers(0, max(len(context) - 5, 1)))
        answer = Answer(context[start : start + 5], start)
        examples.append(Example(id=str(i), title="", context=context, question=question, answers=(answer,),
                                is_impossible=bool(rng.random() < 0.3)))
    return examples


def _tokenizers():
    from pocketqa.data.tokenizer import WindowTokenizer

    return {"tiny wordpiece": build_tokenizer(), "bpe (roberta template)": build_bpe_tokenizer(),
            "bundled model": WindowTokenizer.from_dir(default_model_path())}


@pytest.mark.parametrize("name", ["tiny wordpiece", "bpe (roberta template)", "bundled model"])
@pytest.mark.parametrize("config", [WindowConfig(32, 8, 10), WindowConfig(64, 16, 16), WindowConfig(384, 128, 64)],
                         ids=str)
def test_windows_equal_the_pair_encodings(reference, name, config):
    tokenizer = _tokenizers()[name]
    for seed in range(4):
        examples = _examples(np.random.default_rng(seed))
        got = make_features(examples, tokenizer, config, labels=True, word_ids=True)
        want = reference.make_features(examples, tokenizer, config, labels=True, word_ids=True)
        assert got.input_ids == want.input_ids
        assert got.token_type_ids == want.token_type_ids
        assert got.offsets == want.offsets
        assert got.word_ids == want.word_ids
        assert got.example_index.tolist() == want.example_index.tolist()
        assert got.cls_index.tolist() == want.cls_index.tolist()
        assert got.start_positions.tolist() == want.start_positions.tolist()
        assert got.end_positions.tolist() == want.end_positions.tolist()
        assert got.lengths.tolist() == [len(ids) for ids in want.input_ids]


def test_a_question_leaving_no_room_is_the_same_error_on_both_paths():
    from tokenizers import processors

    tok = build_tokenizer()
    token_id = tok.backend_tokenizer.token_to_id
    # A wider template (still plain special tokens: the numpy path) with too little room.
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] [CLS] $A [SEP] [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", token_id("[CLS]")), ("[SEP]", token_id("[SEP]"))],
    )
    ok = Example(id="a", title="", context="paris is a city " * 10, question="who?")
    f = make_features([ok], tok, WindowConfig(16, 3, 8))
    assert f.input_ids[0][:2] == [token_id("[CLS]")] * 2 and len(f) > 1
    crowded = Example(id="b", title="", context="paris is a city " * 10, question="paris " * 20)
    with pytest.raises(ConfigError, match="input 1: the question"):
        make_features([ok, crowded], tok, WindowConfig(16, 3, 8))


def test_no_examples_give_no_windows():
    f = make_features([], build_tokenizer(), labels=True, word_ids=True)
    assert len(f) == 0 and f.input_ids == [] and f.offsets == []
