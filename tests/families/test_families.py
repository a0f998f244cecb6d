"""Every popular extractive-QA family, end to end: families x capabilities.

Each test is one cell of the matrix in docs/families.md (``python tests/families/matrix.py``
runs this module and writes that table from the results). The test name is the capability,
the parameter the family; a cell that cannot pass says why in its xfail/skip reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from families.builders import FAMILIES, UNICODE_CONTEXTS, build_model
from helpers import CONTEXTS

from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.squad import Example
from pocketqa.errors import PocketQAError
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.decode import decode_features
from pocketqa.inference.spans import trim_span
from pocketqa.models import load_tokenizer

NAMES = list(FAMILIES)
WINDOW = {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16}
# Families whose token offsets include the space before a word, so that their raw spans
# would start with whitespace: every Metaspace (SentencePiece-style) tokenizer, and
# ModernBERT's byte-level BPE, whose template does not trim offsets as RoBERTa's does.
LEADING_SPACE_OFFSETS = {"xlm-roberta", "deberta-v2", "deberta-v3", "albert", "modernbert"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _examples() -> list[Example]:
    return [Example(id=f"{title}-{i}", title=title, context=ctx, question=q)
            for title, ctx, qs in CONTEXTS for i, (q, _, _) in enumerate(qs)]


def _check_answers(examples: list[Example], answers: list[dict]) -> None:
    """Each answer is "" or the exact, whitespace-trimmed context substring at its offsets."""
    for ex, a in zip(examples, answers):
        if a["answer"]:
            assert ex.context[a["start"] : a["end"]] == a["answer"], (ex.id, a)
            assert a["answer"] == a["answer"].strip(), (ex.id, a)


def _ask(qa: QuestionAnswerer, examples: list[Example], abstain: bool = True) -> list[dict]:
    """All questions in one call: their windows are batched (and padded) together."""
    return qa([ex.question for ex in examples], [ex.context for ex in examples], abstain=abstain)


# -- answer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_answer(name, family_dirs):
    qa = QuestionAnswerer.from_pretrained(str(family_dirs(name)), device="cpu")
    examples = _examples()
    answers = _ask(qa, examples, abstain=False)  # every question's best span is checked
    _check_answers(examples, answers)
    assert all(a["answer"] and math.isfinite(a["null_odds"]) for a in answers)
    # The null position is the tokenizer's CLS token (<s> or [CLS]), wherever its template puts it.
    feats = qa.windows(examples)
    cls_id = qa.tokenizer.cls_token_id
    assert all(ids[int(c)] == cls_id for ids, c in zip(feats.input_ids, feats.cls_index))
    # Windows carry token types only for families whose tokenizer makes them.
    assert (feats.token_type_ids is not None) == ("token_type_ids" in FAMILIES[name].input_names)


@pytest.mark.parametrize("name", NAMES)
def test_no_pad_token_and_left_padding(name, family_dirs, tmp_path):
    """A tokenizer without a pad token, set to pad on the left (XLNet-style), answers the same:
    pocketqa pads windows itself, on the right, under an attention mask."""
    import shutil

    src = family_dirs(name)
    shutil.copytree(src, tmp_path / "m")
    config_file = tmp_path / "m" / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(pad_token=None, padding_side="left")
    config_file.write_text(json.dumps(config))
    tokenizer = load_tokenizer(str(tmp_path / "m"))
    assert tokenizer.pad_token_id is None and tokenizer.padding_side == "left"
    examples = _examples()  # windows of different lengths, batched by 4: padding is exercised
    expected = _ask(QuestionAnswerer.from_pretrained(str(src), device="cpu", batch_size=4), examples, abstain=False)
    got = _ask(QuestionAnswerer.from_pretrained(str(tmp_path / "m"), device="cpu", batch_size=4), examples, abstain=False)
    assert [(a["answer"], a["start"]) for a in got] == [(a["answer"], a["start"]) for a in expected]


def test_null_token_at_the_end_as_xlnet_puts_it(family_dirs, tmp_path):
    """A template with CLS last (XLNet's ``A <sep> B <sep> <cls>``): the null answer and the
    labels of unanswerable questions sit on that last token, not on position 0."""
    from tokenizers import processors

    tokenizer = load_tokenizer(str(family_dirs("bert")))
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [SEP] [CLS]", pair="$A [SEP] $B:1 [SEP]:1 [CLS]:2", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    examples = _examples()
    feats = make_features(examples, tokenizer, WindowConfig(**WINDOW), labels=True)
    ends = np.array([len(ids) - 1 for ids in feats.input_ids])
    assert (feats.cls_index == ends).all() and all(ids[-1] == cls for ids in feats.input_ids)
    impossible = np.array([("Italy" in ex.question or "Germany" in ex.question) for ex in examples])[feats.example_index]
    assert impossible.any() and (feats.start_positions[impossible] == ends[impossible]).all()
    rng = np.random.default_rng(0)
    start = [rng.normal(size=len(ids)).astype(np.float32) for ids in feats.input_ids]
    end = [rng.normal(size=len(ids)).astype(np.float32) for ids in feats.input_ids]
    for row, c in enumerate(feats.cls_index):
        start[row][c] = end[row][c] = 20.0  # the null token wins everywhere
    assert all(d.answer(0.0) == "" and d.null_odds > 0 for d in decode_features(examples, feats, start, end))


# -- spans: exact character mapping and whitespace trimming -----------------------------------


def _forced_logits(offsets, a: int, b: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits peaking at the first and last context tokens that overlap characters [a, b)."""
    hits = [i for i, o in enumerate(offsets) if o is not None and o[1] > a and o[0] < b and o[1] > o[0]]
    start, end = np.zeros(n, np.float32), np.zeros(n, np.float32)
    start[hits[0]], end[hits[-1]] = 50.0, 50.0
    return start, end


def test_trim_span_cuts_outer_whitespace_and_keeps_combining_marks():
    text = " \tflows   to\u00a0Zu\u0308 \n"
    assert trim_span(text, 0, len(text)) == (2, len(text) - 2)  # inner spaces stay, outer ones go
    z = text.index("Zu")
    assert trim_span(text, z, z + 2) == (z, z + 3)  # "Zu" + U+0308: the mark belongs to the letter
    assert trim_span(text, 0, 2) == (2, 2)  # whitespace only: empty
    assert trim_span("abc", 1, 2) == (1, 2)


@pytest.mark.parametrize("name", NAMES)
def test_spans_exact_and_trimmed(name, family_tokenizers):
    """Forced spans over CJK, ß, combining marks, full-width punctuation and runs of spaces
    decode to exactly the intended substring, never with surrounding whitespace."""
    tokenizer = family_tokenizers(name)
    raw_had_space = False
    for key, context, intended in UNICODE_CONTEXTS:
        a = context.index(intended)
        b = a + len(intended)
        ex = Example(id=key, title="", context=context, question="Which?")
        feats = make_features([ex], tokenizer, WindowConfig(128, 32, 16))
        offsets = feats.offsets[0]
        start, end = _forced_logits(offsets, a, b, len(offsets))
        for scoring in ("logits", "pipeline"):
            (decoded,) = decode_features([ex], feats, [start], [end], scoring=scoring)
            span = decoded.spans[0]
            assert (span.text, span.start, span.end) == (intended, a, b), (key, scoring, span)
            assert context[span.start : span.end] == span.text
        s, e = int(np.argmax(start)), int(np.argmax(end))
        raw = context[offsets[s][0] : offsets[e][1]]
        raw_had_space |= raw != raw.strip()
    # The trimming is what makes those spans exact for these families.
    assert raw_had_space == (name in LEADING_SPACE_OFFSETS)


@pytest.mark.parametrize("name", NAMES)
def test_span_ending_in_a_composed_letter_keeps_its_combining_mark(name, family_tokenizers):
    # NFKC (the Metaspace families) composes "u" + U+0308 and maps the token to "u" alone.
    context = "Zu\u0308rich and Zu\u0308 again"
    ex = Example(id="x", title="", context=context, question="Which?")
    feats = make_features([ex], family_tokenizers(name), WindowConfig(64, 16, 16))
    offsets = feats.offsets[0]
    a = context.index("Zu\u0308 again")
    start, end = _forced_logits(offsets, a, a + 3, len(offsets))
    (decoded,) = decode_features([ex], feats, [start], [end])
    assert decoded.spans[0].text == "Zu\u0308"


# -- ONNX -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exports(family_dirs, tmp_path_factory):
    """(name, int8) -> (export report, export dir), exported once per session."""
    from pocketqa.export.exporter import export_model

    made: dict = {}

    def get(name: str, int8: bool):
        if (name, int8) not in made:
            out = tmp_path_factory.mktemp(f"{name}-{'int8' if int8 else 'fp32'}")
            made[name, int8] = export_model(str(family_dirs(name)), out, int8=int8, threads=1), out
        return made[name, int8]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_fp32(name, family_dirs, exports, record_property):
    report, out = exports(name, False)
    fp32 = report["parity"]["fp32"]
    opt = report["optimization"]
    record_property("exporter", report["exporter"])
    record_property("fusion", ", ".join(f"{k} x{v}" for k, v in opt["fused"].items()) if opt["applied"] else "none")
    record_property("max |logit diff|", f"{fp32['max_abs_diff']:.1e}")
    assert fp32["passed"] and fp32["answers_identical"] == 1.0 and fp32["max_abs_diff"] < 1e-4
    examples = _examples()
    torch_answers = _ask(QuestionAnswerer.from_pretrained(str(family_dirs(name)), device="cpu"), examples)
    onnx_answers = _ask(QuestionAnswerer.from_pretrained(str(out)), examples)
    assert [a["answer"] for a in onnx_answers] == [a["answer"] for a in torch_answers]
    assert [(a["start"], a["end"]) for a in onnx_answers] == [(a["start"], a["end"]) for a in torch_answers]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_onnx_int8(name, exports, record_property):
    report, out = exports(name, True)
    record_property("int8 answers = PyTorch", f"{100 * report['parity']['int8']['answers_identical']:.0f}%")
    assert "int8_onnx" in report["sizes_mb"] and report["parity"]["fp32"]["passed"]
    qa = QuestionAnswerer.from_pretrained(str(out))
    assert not qa.backend.batch_invariant  # the quantized graph is the one loaded
    examples = _examples()
    answers = _ask(qa, examples)
    _check_answers(examples, answers)
    assert all(math.isfinite(a["null_odds"]) for a in answers)


# -- training ---------------------------------------------------------------------------------


def _train_config(model_dir, data, out: Path, **overrides):
    from pocketqa.recipes.configs import TrainConfig

    values = dict(model=str(model_dir), train=str(data), out=str(out), batch_size=4, max_steps=2,
                  learning_rate=1e-3, log_steps=1, save_steps=1, keep_checkpoints=None,
                  cache_dir=str(out.parent / "cache"), device="cpu", **WINDOW)
    values.update(overrides)
    return TrainConfig(**values)


def _weights(model_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(model_dir) / "model.safetensors")


@pytest.fixture(scope="session")
def trained(family_dirs, squad_file, tmp_path_factory):
    """name -> the output directory of an uninterrupted 2-step fine-tuning run."""
    from pocketqa.recipes.finetune import train

    made: dict = {}

    def get(name: str) -> Path:
        if name not in made:
            out = tmp_path_factory.mktemp(f"train-{name}") / "out"
            train(_train_config(family_dirs(name), squad_file, out))
            made[name] = out
        return made[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_train_two_steps(name, family_dirs, trained):
    from pocketqa.training.runlog import read_log

    out = trained(name)
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    before, after = _weights(family_dirs(name)), _weights(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    qa = QuestionAnswerer.from_pretrained(str(out), device="cpu")  # a trained head: no refusal
    _check_answers(_examples(), _ask(qa, _examples()))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_resume(name, family_dirs, squad_file, trained, tmp_path, monkeypatch):
    import pocketqa.recipes.finetune as finetune

    real_save = finetune.save_checkpoint

    def save_then_die(path, *args, **kwargs):
        saved = real_save(path, *args, **kwargs)
        if Path(path).name == "step-1":
            raise KeyboardInterrupt  # killed right after the first checkpoint
        return saved

    monkeypatch.setattr(finetune, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune.train(_train_config(family_dirs(name), squad_file, tmp_path / "killed"))
    monkeypatch.undo()
    finetune.train(_train_config(family_dirs(name), squad_file, tmp_path / "killed", resume="latest"))
    straight, resumed = _weights(trained(name)), _weights(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for key in straight:  # dropout is on: equality needs the RNG state restored too
        assert torch.equal(straight[key], resumed[key]), key


# -- distillation (stage 2: prediction layer) -------------------------------------------------


def _distill(teacher: Path, student: Path, data: Path, out: Path, **overrides) -> dict:
    from pocketqa.recipes.configs import DistillConfig
    from pocketqa.recipes.distill import distill

    values = dict(teacher=str(teacher), student=str(student), out=str(out), train=[str(data)], stage="2",
                  max_steps=2, batch_size=4, log_steps=1, cache_dir=str(out.parent / "cache"), device="cpu",
                  **WINDOW)
    values.update(overrides)
    return distill(DistillConfig(**values), progress=False)


def _check_student(out: Path, student_dir: Path) -> None:
    before, after = _weights(student_dir), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    qa = QuestionAnswerer.from_pretrained(str(out), device="cpu")
    _check_answers(_examples(), _ask(qa, _examples()))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_distill_same_family(name, family_dirs, squad_file, tmp_path):
    # The student: another random model of the family (other seed), with the same tokenizer.
    student_dir = tmp_path / "student"
    build_model(FAMILIES[name], load_tokenizer(str(family_dirs(name))), seed=3).save_pretrained(student_dir)
    load_tokenizer(str(family_dirs(name))).save_pretrained(student_dir)
    summary = _distill(family_dirs(name), student_dir, squad_file, tmp_path / "out")
    assert summary["stage2"]["steps"] == 2 and summary["bridge"] is None
    assert all(math.isfinite(x) for x in (summary["stage2"]["first_loss"], summary["stage2"]["last_loss"]))
    _check_student(tmp_path / "out", student_dir)


# Teacher -> student pairs across families. Those whose tokenizers segment alike distil
# through the vocabulary bridge: MPNet's vocabulary is BERT's renumbered; RoBERTa's and
# ModernBERT's byte-level BPE differ in specials and offset trimming; XLM-R's and
# DeBERTa-v3's share one SentencePiece vocabulary but transformers rebuilds different
# pipelines for them on load (XLM-R: whitespace split + Metaspace, so a lone "▁" points at
# the next letter; DeBERTa-v2: whitespace folding, NFC, strip). DistilBERT shares BERT's
# vocabulary and needs no bridge. The others are refused with the bridge's message
# (WordPiece vs byte-level BPE; lowercased ALBERT vs cased XLM-R).
BRIDGED = [("mpnet", "bert"), ("roberta", "modernbert"), ("xlm-roberta", "deberta-v3"), ("bert", "distilbert")]
REFUSED = [("roberta", "bert"), ("albert", "xlm-roberta")]


@pytest.mark.slow
@pytest.mark.parametrize(("teacher", "student"), BRIDGED, ids=[f"{t}->{s}" for t, s in BRIDGED])
def test_distill_across_families(teacher, student, family_dirs, squad_file, tmp_path, record_property):
    summary = _distill(family_dirs(teacher), family_dirs(student), squad_file, tmp_path / "out")
    record_property("bridge", summary["bridge"] or "none: shared vocabulary")
    assert summary["stage2"]["steps"] == 2
    shared = load_tokenizer(str(family_dirs(teacher))).get_vocab() == load_tokenizer(str(family_dirs(student))).get_vocab()
    assert (summary["bridge"] is None) == shared
    assert shared or "-> teacher" in summary["bridge"]
    _check_student(tmp_path / "out", family_dirs(student))


@pytest.mark.parametrize(("teacher", "student"), REFUSED, ids=[f"{t}->{s}" for t, s in REFUSED])
def test_distill_refuses_other_segmentation(teacher, student, family_dirs, squad_file, tmp_path, record_property):
    with pytest.raises(PocketQAError, match="segment") as refused:
        _distill(family_dirs(teacher), family_dirs(student), squad_file, tmp_path / "out")
    message = str(refused.value)
    record_property("bridge", "refused: " + message[message.index("first:") :].split(". The vocabulary")[0])
    assert not (tmp_path / "out" / "model.safetensors").exists()

