import json
import math

import numpy as np
import pytest

from helpers import CONTEXTS, build_bert
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.backends import TorchBackend
from pocketqa.inference.decode import decode_example
from pocketqa.errors import PocketQAError
from pocketqa.data.features import WindowConfig
from pocketqa.modeldir import update_meta
from pocketqa.data.squad import Example

LONG = " ".join(f"paris was built in year {i} by the king of france and the people of the city." for i in range(40))
QUESTIONS = [(q, ctx) for _, ctx, qas in CONTEXTS for q, _, _ in qas] + [
    ("who built paris?", LONG),
    ("when was paris built?", LONG),
]


@pytest.fixture(params=["tiny_bert_dir", "tiny_mobilebert_dir"])
def model_dir(request):
    return request.getfixturevalue(request.param)


def test_answers_are_exact_context_spans(model_dir):
    qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu", max_seq_length=64, doc_stride=16, max_query_length=16)
    for q, ctx in QUESTIONS:
        answers = qa(q, ctx, top_k=5, abstain=False)
        assert len(answers) == 5, (q, answers)  # every context holds more than five candidate spans
        for a in answers:
            assert ctx[a["start"] : a["end"]] == a["answer"]
            assert 0.0 <= a["score"] <= 1.0


def test_batched_equals_unbatched(model_dir):
    qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu", max_seq_length=64, doc_stride=16, max_query_length=16)
    qs, cs = zip(*QUESTIONS)
    qa.batch_size = 64
    batched = qa(list(qs), list(cs), top_k=3)
    qa.batch_size = 1
    one_by_one = [qa(q, c, top_k=3) for q, c in QUESTIONS]
    assert len(batched) == len(one_by_one)
    for b, o in zip(batched, one_by_one):
        assert [x["answer"] for x in b] == [x["answer"] for x in o]
        np.testing.assert_allclose([x["score"] for x in b], [x["score"] for x in o], atol=1e-5)
        np.testing.assert_allclose(b[0]["null_odds"], o[0]["null_odds"], atol=1e-4)


def test_with_backend_keeps_every_setting_but_the_backend(tiny_bert_dir):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", scoring="pipeline", align_to_words=True,
                                          n_best=3, max_answer_length=7, threshold=-0.5, batch_size=2,
                                          max_seq_length=64, doc_stride=16, max_query_length=16)
    qa.overlap = False
    backend = TorchBackend(qa.backend.model, device="cpu")
    other = qa.with_backend(backend)
    assert other is not qa and other.backend is backend and qa.backend is not backend
    assert other.decoding_settings() == qa.decoding_settings()
    assert other.decoding_settings()["scoring"] == "pipeline" and other.decoding_settings()["align_to_words"] is True
    kept = ("tokenizer", "window", "threshold", "n_best", "max_answer_length", "batch_size", "name", "meta", "overlap")
    assert all(getattr(other, name) == getattr(qa, name) for name in kept)
    examples = [Example(id=str(i), title="", context=c, question=q) for i, (q, c) in enumerate(QUESTIONS)]
    same = [(d.spans, d.null_odds) for d in qa.decode_examples(examples)]
    assert [(d.spans, d.null_odds) for d in other.decode_examples(examples)] == same


def test_long_context_uses_all_windows(tiny_bert_dir, tiny_tokenizer):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", max_seq_length=48, doc_stride=16, max_query_length=12)
    from pocketqa.data.squad import Example

    ex = Example(id="x", title="", context=LONG, question="who built paris?")
    (decoded,) = qa.decode_examples([ex])
    from pocketqa.data.features import make_features

    feats = make_features([ex], tiny_tokenizer, qa.window)
    starts, ends = qa.logits(feats)
    # null score is the minimum over windows of start[CLS] + end[CLS] (utils_qa rule)
    nulls = [float(s[c] + e[c]) for s, e, c in zip(starts, ends, feats.cls_index)]
    assert len(nulls) > 3
    assert math.isclose(decoded.null_score, min(nulls), rel_tol=1e-6, abs_tol=1e-6)
    # the best span comes from some window and is a real substring
    assert decoded.spans and LONG[decoded.spans[0].start : decoded.spans[0].end] == decoded.spans[0].text


def test_saved_and_reloaded_model_answers_the_same(tmp_path, tiny_tokenizer):
    model = build_bert(len(tiny_tokenizer), seed=3)
    qa1 = QuestionAnswerer(TorchBackend(model), tiny_tokenizer, window=WindowConfig(64, 16, 16))
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    qa2 = QuestionAnswerer.from_pretrained(tmp_path, device="cpu", max_seq_length=64, doc_stride=16, max_query_length=16)
    qs, cs = zip(*QUESTIONS)
    r1, r2 = qa1(list(qs), list(cs), top_k=2), qa2(list(qs), list(cs), top_k=2)
    assert [[a["answer"] for a in r] for r in r1] == [[a["answer"] for a in r] for r in r2]


def test_threshold_from_model_dir_and_override(tmp_path, tiny_tokenizer):
    build_bert(len(tiny_tokenizer), seed=5).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    q, ctx = QUESTIONS[0]
    base = QuestionAnswerer.from_pretrained(tmp_path, device="cpu")
    odds = base(q, ctx)["null_odds"]
    # a stored threshold just below the odds makes the model abstain, just above makes it answer
    update_meta(tmp_path, threshold=odds - 1.0, window={"max_seq_length": 128, "doc_stride": 32, "max_query_length": 32})
    qa = QuestionAnswerer.from_pretrained(tmp_path, device="cpu")
    assert qa.window == WindowConfig(128, 32, 32)
    assert qa(q, ctx)["answer"] == ""
    assert qa(q, ctx)["start"] is None
    assert qa(q, ctx, abstain=False)["answer"] != ""
    assert QuestionAnswerer.from_pretrained(tmp_path, device="cpu", threshold=odds + 1.0)(q, ctx)["answer"] != ""
    abstained = qa(q, ctx, top_k=3)
    assert abstained[0]["answer"] == "" and abstained[1]["answer"] != ""


def test_decode_rules_on_fixed_logits():
    context = "alpha beta gamma delta"
    offsets = [None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]
    start = np.array([1.0, 9.0, 0.0, 5.0, 0.0, 0.0, 9.0])
    end = np.array([1.0, 9.0, 0.0, 0.0, 4.0, 6.0, 9.0])
    d = decode_example(context, [start], [end], [offsets], [0], n_best=20, max_answer_length=30)
    # question/special positions (1, 6) never start or end a span, even with high logits
    assert d.spans[0].text == "beta gamma delta" and d.spans[0].score == 11.0
    assert d.null_score == 2.0 and d.null_odds == 2.0 - 11.0
    assert d.answer(0.0) == "beta gamma delta"
    short = decode_example(context, [start], [end], [offsets], [0], max_answer_length=2)
    assert short.spans[0].text == "beta gamma"
    # probabilities are a softmax over the n-best, null included
    total = sum(s.probability for s in d.spans) + d.null_probability
    assert math.isclose(total, 1.0, rel_tol=1e-9)


def test_a_mistyped_dir_next_to_an_existing_one_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(PocketQAError, match="runs/minilm-typo: no such model directory in runs"):
        QuestionAnswerer.from_pretrained("runs/minilm-typo")


def test_bad_inputs(tiny_bert_dir, tmp_path):
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu")
    with pytest.raises(PocketQAError, match="empty question"):
        qa(" ", "context")
    with pytest.raises(PocketQAError, match="2 questions but 3 contexts"):
        qa(["a", "b"], ["x", "y", "z"])
    with pytest.raises(PocketQAError, match="no such model directory"):
        QuestionAnswerer.from_pretrained(str(tmp_path / "missing" / "dir"))
    (tmp_path / "pocketqa.json").write_text("{bad", encoding="utf-8")
    with pytest.raises(PocketQAError, match="pocketqa.json: invalid JSON"):
        QuestionAnswerer.from_pretrained(tmp_path)
    json.dumps(qa("who?", "Ann wrote it."))  # results are JSON-serialisable


def test_overlapped_chunks_give_the_same_answers(tiny_bert_dir, one_thread, monkeypatch):
    import pocketqa.inference.answerer as answerer

    # Chunks of 8 instead of 512: the same path (windowing and decoding on a helper thread,
    # chunk boundaries, a short last chunk) in a few dozen examples instead of a thousand.
    monkeypatch.setattr(answerer, "OVERLAP_CHUNK", 8)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(3 * answerer.OVERLAP_CHUNK + 5):  # four chunks, the last one short
        _, ctx, qas = CONTEXTS[i % len(CONTEXTS)]
        words = ctx.split()
        cut = int(rng.integers(0, len(words)))
        examples.append(Example(id=str(i), title="", context=" ".join(words[cut:] + words[:cut]) * (1 + i % 3),
                                question=qas[i % len(qas)][0]))
    qa = QuestionAnswerer.from_pretrained(tiny_bert_dir, device="cpu", max_seq_length=64, doc_stride=16,
                                          max_query_length=16)
    assert not qa.overlaps()  # on by default only for CUDA
    expected = qa.decode_examples(examples)
    qa.overlap = True
    windowed = []  # the chunks the helper thread windows
    monkeypatch.setattr(qa, "windows", lambda chunk, real=qa.windows: windowed.append(len(chunk)) or real(chunk))
    got = qa.decode_examples(examples, progress=True)
    assert windowed == [8, 8, 8, 5]
    assert len(got) == len(examples)
    # chunks are batched apart, so padding differs: logits agree to float rounding only
    for d, e in zip(got, expected):
        assert [(s.text, s.start, s.end) for s in d.spans] == [(s.text, s.start, s.end) for s in e.spans]
        assert np.allclose([s.score for s in d.spans], [s.score for s in e.spans], rtol=1e-4, atol=1e-5)
        assert math.isclose(d.null_odds, e.null_odds, rel_tol=1e-4, abs_tol=1e-5)


class ConstantBackend:
    """Returns the same logits at every position (``value``), whatever the batch."""

    input_names = ["input_ids", "attention_mask", "token_type_ids"]

    def __init__(self, value: float):
        self.value = value

    def __call__(self, batch):
        shape = batch["input_ids"].shape
        return np.full(shape, self.value, dtype=np.float32), np.full(shape, self.value, dtype=np.float32)


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
