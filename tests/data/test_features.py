import pytest

from helpers import build_bpe_tokenizer, build_tokenizer
from pocketqa.errors import ConfigError
from pocketqa.data.features import WindowConfig, make_features, truncate_questions
from pocketqa.data.model_inputs import pad_batch
from pocketqa.data.squad import Answer, Example

LONG = " ".join(f"word{i} is the city of paris in france" for i in range(60))


def _long_example():
    answer = "word37 is the city"
    start = LONG.index(answer)
    return Example(id="long", title="t", context=LONG, question="what is word37?", answers=(Answer(answer, start),))


def test_windows_cover_long_context_with_overlap(tiny_tokenizer):
    ex = _long_example()
    cfg = WindowConfig(max_seq_length=64, doc_stride=16, max_query_length=16)
    f = make_features([ex], tiny_tokenizer, cfg, labels=True)
    assert len(f) > 3
    assert all(len(ids) <= 64 for ids in f.input_ids)
    covered = set()
    spans = []
    for offs in f.offsets:
        ctx = [o for o in offs if o is not None]
        spans.append((ctx[0][0], ctx[-1][1]))
        for s, e in ctx:
            covered.update(range(s, e))
    # every non-space character of the context is in some window
    assert all(i in covered for i, ch in enumerate(ex.context) if not ch.isspace())
    # consecutive windows overlap (doc_stride tokens of overlap)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s1 < e0


def test_offsets_map_back_to_exact_context_substrings(tiny_tokenizer):
    ex = _long_example()
    f = make_features([ex], tiny_tokenizer, WindowConfig(64, 16, 16))
    checked = 0
    for ids, offs in zip(f.input_ids, f.offsets):
        tokens = tiny_tokenizer.convert_ids_to_tokens(ids)
        for tok, off in zip(tokens, offs):
            if off is None:
                continue
            piece = ex.context[off[0] : off[1]].lower()
            assert piece == tok.removeprefix("##") or tok == "[UNK]"
            checked += 1
    # every word of the context is at least one context token of some window
    assert checked >= len(ex.context.split())


def test_labels_point_at_answer_or_cls(tiny_tokenizer):
    ex = _long_example()
    f = make_features([ex], tiny_tokenizer, WindowConfig(64, 16, 16), labels=True)
    hits = 0
    for i in range(len(f)):
        s, e = int(f.start_positions[i]), int(f.end_positions[i])
        if s == f.cls_index[i]:
            assert e == f.cls_index[i]
            continue
        hits += 1
        assert ex.context[f.offsets[i][s][0] : f.offsets[i][e][1]] == ex.answers[0].text
    assert hits >= 1
    impossible = Example(id="x", title="", context=LONG[:200], question="who?", is_impossible=True)
    g = make_features([impossible], tiny_tokenizer, WindowConfig(64, 16, 16), labels=True)
    assert (g.start_positions == g.cls_index).all() and (g.end_positions == g.cls_index).all()


def test_question_truncated_to_max_query_length(tiny_tokenizer):
    q = "   " + " ".join(["paris"] * 50) + "?"
    (cut,) = truncate_questions(tiny_tokenizer, [q], 10)
    assert not cut.startswith(" ")
    assert len(tiny_tokenizer(cut, add_special_tokens=False)["input_ids"]) == 10
    ex = Example(id="q", title="", context=LONG[:300], question=q)
    f = make_features([ex], tiny_tokenizer, WindowConfig(64, 16, 10))
    # [CLS] + 10 question tokens + [SEP] before the context starts
    first_ctx = next(i for i, o in enumerate(f.offsets[0]) if o is not None)
    assert first_ctx == 12


def test_token_type_ids_follow_tokenizer(tiny_tokenizer):
    ex = _long_example()
    f = make_features([ex], tiny_tokenizer, WindowConfig(64, 16, 16))
    assert f.token_type_ids is not None
    batch = pad_batch(f, [0, len(f) - 1], 0, ["input_ids", "attention_mask", "token_type_ids"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["attention_mask"][1].sum() == len(f.input_ids[-1])
    no_types = pad_batch(f, [0], 0, ["input_ids", "attention_mask"])
    assert "token_type_ids" not in no_types


def test_window_config_reports_all_problems():
    with pytest.raises(ConfigError) as info:
        WindowConfig(max_seq_length=4, doc_stride=-1, max_query_length=0)
    msg = str(info.value)
    assert "max_seq_length" in msg and "max_query_length" in msg and "doc_stride" in msg
    with pytest.raises(ConfigError, match="doc_stride"):
        WindowConfig(max_seq_length=128, doc_stride=100, max_query_length=64)


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
