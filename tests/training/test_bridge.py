"""The vocabulary bridge: id mapping, refusal, window building, gather, and a KD step.

Student: helpers' BERT-style tokenizer, ``[CLS] A [SEP] B [SEP]``. Teacher: the same word
pieces numbered differently (reversed), with MPNet's special tokens and pair template
``<s> A </s></s> B </s>``, as all-mpnet-base-v2 is to MiniLM.
"""

from __future__ import annotations

import pytest
import torch
from helpers import WORDS, build_bert, build_mpnet, build_mpnet_style_tokenizer, build_tokenizer, squad_dict, word_pieces

from pocketqa.training.bridge import VocabBridge
from pocketqa.errors import PocketQAError
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.model_inputs import pad_batch
from pocketqa.data.squad import iter_examples

STEPS = 15
SMALL = WindowConfig(max_seq_length=28, doc_stride=6, max_query_length=10)


@pytest.fixture(scope="module")
def student_tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def teacher_tok():
    return build_mpnet_style_tokenizer()


@pytest.fixture(scope="module")
def examples():
    return list(iter_examples(squad_dict()))


@pytest.fixture(scope="module")
def bridge(student_tok, teacher_tok, examples):
    texts = [e.question for e in examples] + [e.context for e in examples]
    return VocabBridge.build(student_tok, teacher_tok, texts)


def _student_batch(tok, examples, config=SMALL):
    feats = make_features(examples, tok, config)
    batch = pad_batch(feats, list(range(len(feats))), tok.pad_token_id, tok.model_input_names)
    return feats, {k: torch.as_tensor(v) for k, v in batch.items()}


def naive_teacher_window(bridge, tokens: list[int], student_tok, teacher_tok) -> list[int]:
    """Slow reference: split a student window at its separators, map, re-wrap in teacher specials."""
    sep = student_tok.sep_token_id
    a_end = tokens.index(sep, 1)
    question, context = tokens[1:a_end], tokens[a_end + 1 : -1]
    vocab = teacher_tok.get_vocab()
    mapped = lambda ids: [vocab[t] for t in student_tok.convert_ids_to_tokens(ids)]  # noqa: E731
    t = teacher_tok
    return [t.cls_token_id] + mapped(question) + [t.sep_token_id, t.sep_token_id] + mapped(context) + [t.sep_token_id]


def test_templates_are_read_from_the_tokenizers(bridge):
    assert bridge.student.text == "[CLS] A [SEP] B [SEP]"
    assert bridge.teacher.text == "<s> A </s></s> B </s>"
    assert bridge.extra_positions == 1
    assert bridge.unmapped == ()


def test_ids_map_by_token_string_and_specials_by_role(bridge, student_tok, teacher_tok):
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    pieces = word_pieces()
    got = bridge.map_ids(torch.tensor([s_vocab[p] for p in pieces]))
    assert got.tolist() == [t_vocab[p] for p in pieces]
    # The numbering really differs, so an identity mapping would fail this test.
    assert sum(s_vocab[p] == t_vocab[p] for p in pieces) < len(pieces) // 10
    roles = {"[CLS]": "<s>", "[SEP]": "</s>", "[PAD]": "<pad>", "[UNK]": "<unk>", "[MASK]": "<mask>"}
    got = bridge.map_ids(torch.tensor([s_vocab[s] for s in roles]))
    assert got.tolist() == [t_vocab[t] for t in roles.values()]


def test_refuses_a_teacher_that_segments_differently(student_tok, examples):
    no_paris = build_mpnet_style_tokenizer(with_paris=False)  # "paris" -> p ##a ##r ##i ##s
    texts = list(dict.fromkeys(e.context for e in examples))
    with pytest.raises(PocketQAError, match=r"segment 1 of 2 sample texts differently.*'paris'"):
        VocabBridge.build(student_tok, no_paris, texts)
    # The check is only as wide as its samples: texts without the word pass.
    VocabBridge.build(student_tok, no_paris, [texts[0]])


def test_refuses_same_offsets_with_different_tokens():
    """Accents kept by the teacher: 'café' and 'cafe' cover the same characters."""
    student = build_tokenizer(WORDS + ["cafe"])
    teacher = build_mpnet_style_tokenizer(strip_accents=False, words=WORDS + ["cafe"], extra=["café"])
    with pytest.raises(PocketQAError, match=r"at token 1: student \['cafe'.*\(2, 6\).*teacher \['café'.*\(2, 6\)"):
        VocabBridge.build(student, teacher, ["a café in paris"])


def test_student_tokens_the_teacher_lacks_map_to_its_unk(student_tok, examples):
    no_paris = build_mpnet_style_tokenizer(with_paris=False)
    normans = [e.context for e in examples if e.title == "Normans"][:1]
    bridge = VocabBridge.build(student_tok, no_paris, normans)
    assert bridge.unmapped == ("paris",)
    assert bridge.map_ids(torch.tensor([student_tok.convert_tokens_to_ids("paris")])).item() == no_paris.unk_token_id


def test_refuses_a_cased_teacher_on_builtin_samples(student_tok):
    with pytest.raises(PocketQAError, match="differently"):
        VocabBridge.build(student_tok, build_mpnet_style_tokenizer(lowercase=False))


def test_teacher_windows_match_reference_and_teacher_tokenizer(bridge, student_tok, teacher_tok, examples):
    feats, batch = _student_batch(student_tok, examples)
    assert len(feats) > len(examples)  # several windows per example, so strides are exercised
    teacher, index = bridge.teacher_batch(batch)
    assert set(teacher) == {"input_ids", "attention_mask"}  # MPNet takes no token_type_ids
    assert teacher["input_ids"].shape == (len(feats), batch["input_ids"].shape[1] + 1)
    assert index.shape == batch["input_ids"].shape
    lengths = teacher["attention_mask"].sum(1)
    for row, ids in enumerate(feats.input_ids):
        want = naive_teacher_window(bridge, ids, student_tok, teacher_tok)
        n = int(lengths[row])
        assert teacher["input_ids"][row, :n].tolist() == want
        assert (teacher["input_ids"][row, n:] == teacher_tok.pad_token_id).all()
    # The teacher's own tokenizer, one position wider, cuts exactly the same windows.
    wider = WindowConfig(SMALL.max_seq_length + 1, SMALL.doc_stride, SMALL.max_query_length)
    own = make_features(examples, teacher_tok, wider)
    assert own.input_ids == [teacher["input_ids"][r, : int(lengths[r])].tolist() for r in range(len(feats))]
    # ... and the index points each student context token at the teacher token of the same span.
    for row in range(len(feats)):
        for pos, off in enumerate(feats.offsets[row]):
            if off is not None:
                assert own.offsets[row][int(index[row, pos])] == off


def test_reverse_direction_drops_a_separator_and_fills_token_types(examples):
    """An MPNet-style student and a BERT-style teacher: one position fewer, segment ids made."""
    student, teacher = build_mpnet_style_tokenizer(), build_tokenizer()
    rev = VocabBridge.build(student, teacher, [e.context for e in examples])
    assert rev.extra_positions == -1
    feats, batch = _student_batch(student, examples)
    out, index = rev.teacher_batch(batch)
    narrower = WindowConfig(SMALL.max_seq_length - 1, SMALL.doc_stride, SMALL.max_query_length)
    own = make_features(examples, teacher, narrower)
    lengths = out["attention_mask"].sum(1)
    for r in range(len(feats)):
        n = int(lengths[r])
        assert out["input_ids"][r, :n].tolist() == own.input_ids[r]
        assert out["token_type_ids"][r, :n].tolist() == own.token_type_ids[r]
    # Both student separators "</s></s>" gather from the teacher's single [SEP].
    assert torch.equal(rev.gather(out["input_ids"], index), rev.map_ids(batch["input_ids"]))


def test_gather_puts_teacher_values_on_student_positions(bridge, student_tok, examples):
    feats, batch = _student_batch(student_tok, examples)
    teacher, index = bridge.teacher_batch(batch)
    B, Tt = teacher["input_ids"].shape
    # Ids: every student position (specials and padding included) gets its mapped token back.
    assert torch.equal(bridge.gather(teacher["input_ids"], index), bridge.map_ids(batch["input_ids"]))
    # Logits [B, Tt]: value = teacher position, so gather must return the index itself.
    positions = torch.arange(Tt, dtype=torch.float32).expand(B, Tt)
    assert torch.equal(bridge.gather(positions, index), index.float())
    # Hidden states [B, Tt, H] and attention maps [B, heads, Tt, Tt].
    hidden = positions[..., None] * 10 + torch.arange(4)
    assert torch.equal(bridge.gather(hidden, index), index[..., None].float() * 10 + torch.arange(4))
    att = torch.randn(B, 2, Tt, Tt)
    picked = bridge.gather(bridge.gather(att, index, dim=2), index, dim=3)
    b, h, i, j = 1, 1, 3, 5
    assert picked[b, h, i, j] == att[b, h, index[b, i], index[b, j]]
    # The CLS (no-answer) position and the first context token line up.
    assert (index[:, 0] == 0).all()
    first_ctx = [next(p for p, o in enumerate(offs) if o is not None) for offs in feats.offsets]
    assert index[torch.arange(B), torch.tensor(first_ctx)].tolist() == [p + 1 for p in first_ctx]


def test_refuses_rows_that_are_not_right_padded_pairs(bridge, student_tok, examples):
    _, batch = _student_batch(student_tok, examples)
    short = int(batch["attention_mask"].sum(1).argmin())
    pad = int((batch["attention_mask"][short] == 0).sum())
    left = {k: v.clone() for k, v in batch.items()}
    for v in left.values():  # move one row's padding to the front
        v[short] = v[short].roll(pad)
    with pytest.raises(PocketQAError, match=f"row {short} does not follow the student pair template"):
        bridge.teacher_batch(left)
    single = student_tok(["the city"], return_tensors="pt")  # one sequence: no separator run before B
    with pytest.raises(PocketQAError, match="row 0"):
        bridge.teacher_batch({"input_ids": single["input_ids"], "attention_mask": single["attention_mask"]})


def test_refuses_teacher_windows_over_the_teacher_limit(student_tok, examples):
    teacher_tok = build_mpnet_style_tokenizer()
    teacher_tok.model_max_length = SMALL.max_seq_length
    tight = VocabBridge.build(student_tok, teacher_tok, [examples[0].context])
    _, batch = _student_batch(student_tok, examples)
    with pytest.raises(PocketQAError, match=f"lower max_seq_length to {SMALL.max_seq_length - 1}"):
        tight.teacher_batch(batch)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_prediction_layer_kd_through_the_bridge(bridge, student_tok, teacher_tok, examples):
    """A BERT student learns an MPNet teacher's start/end distributions across vocabularies."""
    from pocketqa.training.losses import masked_kl_div

    paris = [e for e in examples if e.title == "Paris"]  # 12 windows: quick on a busy CPU
    feats, batch = _student_batch(student_tok, paris, WindowConfig(48, 8, 10))
    teacher_model = build_mpnet(len(teacher_tok), seed=1)
    with torch.no_grad():  # a sharper teacher than random init gives a clear target
        teacher_model.qa_outputs.weight.mul_(30)
        t_inputs, index = bridge.teacher_batch(batch)
        t_out = teacher_model(**t_inputs)
    t_start = bridge.gather(t_out.start_logits, index)
    t_end = bridge.gather(t_out.end_logits, index)
    mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)  # context tokens + CLS
    for row, offs in enumerate(feats.offsets):
        mask[row, [p for p, o in enumerate(offs) if o is not None]] = True
        mask[row, int(feats.cls_index[row])] = True

    torch.manual_seed(0)
    student = build_bert(len(student_tok), seed=2).train()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(STEPS):
        out = student(**batch)
        start_kl = masked_kl_div(out.start_logits, t_start, mask, temperature=2.0)
        loss = (start_kl + masked_kl_div(out.end_logits, t_end, mask, temperature=2.0)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    student.eval()
    with torch.no_grad():
        s_start = student(**batch).start_logits.masked_fill(~mask, -1e9)
    agree = (s_start.argmax(1) == t_start.masked_fill(~mask, -1e9).argmax(1)).float().mean()
    assert agree >= 0.75  # chance is about 1 in 20 positions

