"""Inference-path edge cases: empty-text spans, question cuts inside a character, a question
that crowds out the context, NaN logits, bad answerer settings, bad settings at export."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from helpers import build_bpe_tokenizer, build_tokenizer
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.decode import decode_example
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.export.exporter import export_model
from pocketqa.data.features import WindowConfig, make_features, truncate_questions
from pocketqa.data.squad import Example


class ConstantBackend:
    """Returns the same logits at every position (``value``), whatever the batch."""

    input_names = ["input_ids", "attention_mask", "token_type_ids"]

    def __init__(self, value: float):
        self.value = value

    def __call__(self, batch):
        shape = batch["input_ids"].shape
        return np.full(shape, self.value, dtype=np.float32), np.full(shape, self.value, dtype=np.float32)


def test_a_span_without_characters_is_skipped_as_utils_qa_does():
    # Byte-level BPE gives a lone space its own token with empty (trimmed) offsets:
    context = "The  Normans"
    (offsets,) = make_features([Example(id="x", title="", context=context, question="Who?")],
                               build_bpe_tokenizer(), WindowConfig(64, 8, 16)).offsets
    assert any(o is not None and o[0] == o[1] for o in offsets)
    # Hand-made window over "alpha  beta": CLS, alpha, the empty space token, beta, SEP.
    # The best span is the space token alone (10 + 10) and has no text; utils_qa skips ""
    # predictions when it picks the best non-null one: " beta" (10 + 3), then null odds 0 - 13.
    offs = [None, (0, 5), (6, 6), (7, 11), None]
    starts = np.array([0.0, 1.0, 10.0, 2.0, 0.0])
    ends = np.array([0.0, 1.0, 10.0, 3.0, 0.0])
    d = decode_example("alpha  beta", [starts], [ends], [offs], [0])
    assert [s.text for s in d.spans] == [" beta", "alpha ", "beta", "alpha  beta", "alpha"]
    assert d.spans[0].score == 13.0 and d.null_odds == -13.0
    assert d.answer(0.0) == " beta"


def test_a_question_cut_inside_a_character_stays_within_max_query_length():
    tok = build_bpe_tokenizer()
    question = "\ufb01" * 6  # "ﬁ": three byte-level tokens, each spanning the whole character
    (cut,) = truncate_questions(tok, [question], 4)
    assert cut == "\ufb01" and len(tok(cut, add_special_tokens=False)["input_ids"]) == 3
    # A cut that kept the second "ﬁ" (6 tokens) left 16 - 6 - 4 = 6 context tokens, fewer than
    # the stride: the Rust tokenizer panicked.
    ex = Example(id="x", title="", context="The Normans were the people of Normandy in France.", question=question)
    features = make_features([ex], tok, WindowConfig(16, 7, 4))
    assert len(features) > 1


def test_a_question_leaving_no_room_past_the_stride_is_a_config_error_naming_it():
    from tokenizers import processors

    tok = build_tokenizer()
    token_id = tok.backend_tokenizer.token_to_id
    # A pair template of five special tokens: one more than WindowConfig allows for.
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] [CLS] $A [SEP] [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", token_id("[CLS]")), ("[SEP]", token_id("[SEP]"))],
    )
    exs = [Example(id="a", title="", context="paris is a city " * 10, question="who?"),
           Example(id="b", title="", context="paris is a city " * 10, question="paris " * 20)]
    with pytest.raises(ConfigError, match=r"input 1: the question 'paris paris .*' takes 8 tokens, leaving 3"):
        make_features(exs, tok, WindowConfig(16, 3, 8))


def test_nan_logits_are_an_error_not_an_answer(tiny_tokenizer):
    qa = QuestionAnswerer(ConstantBackend(math.nan), tiny_tokenizer, window=WindowConfig(64, 16, 16), name="broken")
    with pytest.raises(PocketQAError, match="broken: the model gave NaN logits"):
        qa("Who?", "Paris is the capital of France.")


def test_bad_answerer_settings_are_named(tiny_tokenizer):
    with pytest.raises(PocketQAError, match="n_best must be a whole number >= 1, found 0"):
        QuestionAnswerer(ConstantBackend(0.0), tiny_tokenizer, n_best=0)
    qa = QuestionAnswerer(ConstantBackend(0.0), tiny_tokenizer)
    with pytest.raises(PocketQAError, match="top_k must be a whole number >= 1, found 2.5"):
        qa("Who?", "Paris.", top_k=2.5)
    with pytest.raises(PocketQAError, match="threshold must be a finite number, found nan"):
        qa("Who?", "Paris.", threshold=math.nan)
    with pytest.raises(PocketQAError, match="threshold must be a finite number, found '1'"):
        qa.predict([Example(id="x", title="", context="Paris.", question="Who?")], threshold="1")
    assert qa("Who?", "Paris.", top_k=np.int64(2), threshold=np.float32(0.5))


@pytest.mark.parametrize("meta, message", [
    ({"window": {"stride": 8}}, r"pocketqa.json: unknown window setting\(s\) \['stride'\]"),
    ({"threshold": "high"}, r"pocketqa.json: threshold must be a finite number, found 'high'"),
])
def test_export_checks_the_model_settings_as_loading_does(tiny_bert_dir, tmp_path, meta, message):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    (model / "pocketqa.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(PocketQAError, match=message):
        export_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
