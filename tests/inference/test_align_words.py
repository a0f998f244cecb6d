"""align_to_words: the QA pipeline's default widening of answers to whole words (scoring="pipeline")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import CONTEXTS, WINDOW, WORDS, build_bpe_tokenizer, build_tokenizer, examples, reference_features
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.backends import TorchBackend
from pocketqa.cli.main import main
from pocketqa.inference.decode import decode_example, decode_features
from pocketqa.inference.pipeline_rule import _word_chars
from pocketqa.errors import PocketQAError
from pocketqa.data.features import WindowConfig, make_features, truncate_questions
from pocketqa.models import load_qa_model
from pocketqa.data.squad import Example
from pocketqa.data.tokenizer import WindowTokenizer, as_window_tokenizer

CONTEXT = "The Normans came to Normandy, led by Rollo."
QUESTION = "Who came?"


@pytest.fixture(scope="module")
def piece_tokenizer():
    """The tiny WordPiece tokenizer with "normans" -> norm ##ans and "normandy" -> norm ##andy."""
    return build_tokenizer([w for w in WORDS if w not in ("normans", "normandy")] + ["norm", "##ans", "##andy"])


def one_window(tokenizer, context=CONTEXT, window=WindowConfig()):
    ex = Example(id="0", title="", context=context, question=QUESTION)
    return ex, make_features([ex], tokenizer, window, word_ids=True)


def at(tokenizer, features, w: int, token: str, nth: int = 0) -> int:
    """Position of the nth context token spelled ``token`` in window w."""
    tokens = tokenizer.convert_ids_to_tokens(features.input_ids[w])
    return [i for i, t in enumerate(tokens) if t == token and features.offsets[w][i] is not None][nth]


def logits_for(features, w: int, starts: dict[int, float], ends: dict[int, float]):
    """Start/end logits of window w: -20 everywhere (CLS too) except the given positions."""
    n = len(features.input_ids[w])
    s, e = np.full(n, -20.0), np.full(n, -20.0)
    for i, v in starts.items():
        s[i] = v
    for i, v in ends.items():
        e[i] = v
    return s, e


def decode(ex, features, s, e, align: bool, n_best: int = 1):
    return decode_features([ex], features, [s], [e], n_best=n_best, scoring="pipeline", align_to_words=align)[0]


def test_a_span_ending_or_starting_inside_a_word_widens_to_the_whole_word(piece_tokenizer):
    ex, f = one_window(piece_tokenizer)
    norm, ans = at(piece_tokenizer, f, 0, "norm"), at(piece_tokenizer, f, 0, "##ans")
    assert [CONTEXT[slice(*f.offsets[0][i])] for i in (norm, ans)] == ["Norm", "ans"]
    the = at(piece_tokenizer, f, 0, "the")
    # ends inside "Normans" ("The Norm"): widened to "The Normans"
    s, e = logits_for(f, 0, {the: 5.0}, {norm: 5.0})
    assert decode(ex, f, s, e, align=False).spans[0].text == "The Norm"
    assert decode(ex, f, s, e, align=True).spans[0].text == "The Normans"
    # starts inside "Normans" ("ans came"): widened to "Normans came"
    came_end = at(piece_tokenizer, f, 0, "##e")
    s, e = logits_for(f, 0, {ans: 5.0}, {came_end: 5.0})
    assert decode(ex, f, s, e, align=False).spans[0].text == "ans came"
    d = decode(ex, f, s, e, align=True)
    assert (d.spans[0].text, d.spans[0].start, d.spans[0].end) == ("Normans came", 4, 16)
    # the widened span has the chosen tokens' probability plus those of the (here tiny)
    # other spans that widen to the same words
    assert 0 <= d.spans[0].score - decode(ex, f, s, e, align=False).spans[0].score < 1e-9


def test_punctuation_next_to_a_word_is_a_word_of_its_own(piece_tokenizer):
    ex, f = one_window(piece_tokenizer)
    norm = at(piece_tokenizer, f, 0, "norm", nth=1)  # of "Normandy,"
    s, e = logits_for(f, 0, {norm: 5.0}, {norm: 5.0})
    assert decode(ex, f, s, e, align=False).spans[0].text == "Norm"
    assert decode(ex, f, s, e, align=True).spans[0].text == "Normandy"  # not "Normandy,"
    # "Rollo." in one-character pieces: r ##o ##l ##l ##o .
    r = at(piece_tokenizer, f, 0, "r")
    s, e = logits_for(f, 0, {r + 2: 5.0}, {r + 2: 5.0})
    assert decode(ex, f, s, e, align=False).spans[0].text == "l"
    assert decode(ex, f, s, e, align=True).spans[0].text == "Rollo"


def test_a_word_cut_by_the_window_edge_widens_only_to_its_part_inside(piece_tokenizer):
    # "abcdefghijklmnop" comes in one-character pieces, more than the 5 context tokens of a
    # window: some windows see only its middle
    context = "Rollo abcdefghijklmnop went north."
    word = (6, 22)
    window = WindowConfig(max_seq_length=14, doc_stride=3, max_query_length=6)
    ex, f = one_window(piece_tokenizer, context, window)
    ctx = [[i for i, o in enumerate(offs) if o is not None] for offs in f.offsets]
    w = next(w for w in range(len(f)) if f.offsets[w][ctx[w][0]][0] > word[0] and f.offsets[w][ctx[w][-1]][1] < word[1])
    first, mid, last = ctx[w][0], ctx[w][2], ctx[w][-1]
    starts, ends = zip(*(logits_for(f, v, {mid: 5.0} if v == w else {}, {mid: 5.0} if v == w else {})
                         for v in range(len(f))))
    d = decode_features([ex], f, starts, ends, n_best=1, scoring="pipeline", align_to_words=True)[0]
    # this window's pieces of the word, not all of "abcdefghijklmnop"
    assert (d.spans[0].start, d.spans[0].end) == (f.offsets[w][first][0], f.offsets[w][last][1])
    assert len(d.spans[0].text) == len(ctx[w]) and d.spans[0].text in "abcdefghijklmnop"
    d_off = decode_features([ex], f, starts, ends, n_best=1, scoring="pipeline")[0]
    assert d_off.spans[0].text == context[slice(*f.offsets[w][mid])] and len(d_off.spans[0].text) == 1


def test_sub_word_spans_of_one_word_add_up_after_widening(piece_tokenizer):
    # The pipeline maps each of a window's top spans to characters (widening them) before it
    # looks their text up among the answers so far, so "Norm" and "Normans" both become
    # "Normans" and their probabilities add up; without widening they stay two answers.
    ex, f = one_window(piece_tokenizer)
    norm, ans, led = (at(piece_tokenizer, f, 0, t) for t in ("norm", "##ans", "led"))
    # spans (logit sums): led-led 4.1 > Norm 4.0 = Normans 4.0 > Normans...led 3.8
    s, e = logits_for(f, 0, {norm: 2.0, led: 2.3}, {norm: 2.0, ans: 2.0, led: 1.8})
    ctx = np.array([o is not None for o in f.offsets[0]])
    allowed = ctx.copy()
    allowed[int(f.cls_index[0])] = True

    def softmax(x):
        x = np.where(allowed, x, -np.inf)
        p = np.exp(x - x.max())
        return p / p.sum()

    ps, pe = softmax(s), softmax(e)
    plain = decode(ex, f, s, e, align=False, n_best=3)
    assert plain.spans[0].text == "led" and {sp.text for sp in plain.spans[1:]} == {"Norm", "Normans"}
    wide = decode(ex, f, s, e, align=True, n_best=3)
    assert [sp.text for sp in wide.spans[:2]] == ["Normans", "led"]
    # + ps[ans] * pe[ans], the third span widening to "Normans", 1e-10 of it
    assert math.isclose(wide.spans[0].score, ps[norm] * (pe[norm] + pe[ans]), rel_tol=1e-9)
    assert wide.spans[0].score > plain.spans[0].score == wide.spans[1].score


def test_widening_keeps_more_candidates_so_the_merged_word_can_win_at_n_best_1(piece_tokenizer):
    # The pipeline widens and merges 2 * top_k + 10 spans per window, not top_k: at top_k=1
    # the merged "Normans" (two sub-word spans) beats the single best span "led", which is
    # what transformers 4.57.6's pipeline answers (1,000/1,000 dev answers identical on two
    # random-init models, docs/results.md).
    ex, f = one_window(piece_tokenizer)
    norm, ans, led = (at(piece_tokenizer, f, 0, t) for t in ("norm", "##ans", "led"))
    s, e = logits_for(f, 0, {norm: 2.0, led: 2.3}, {norm: 2.0, ans: 2.0, led: 1.8})
    assert decode(ex, f, s, e, align=False, n_best=1).spans[0].text == "led"
    assert [sp.text for sp in decode(ex, f, s, e, align=True, n_best=1).spans] == ["Normans"]


def test_a_token_without_a_word_falls_back_to_token_offsets():
    offsets = [[None, None, (0, 3), (3, 6), (7, 10), None]]
    logits = [np.array([-9.0, -9.0, 5.0, -9.0, -9.0, -9.0])]
    with_words = decode_example("abcdef ghi", logits, logits, offsets, [0], scoring="pipeline",
                                word_ids=[[None, 0, 0, 0, 1, None]], align_to_words=True)
    assert with_words.spans[0].text == "abcdef"
    no_word = decode_example("abcdef ghi", logits, logits, offsets, [0], scoring="pipeline",
                             word_ids=[[None, 0, None, 0, 1, None]], align_to_words=True)
    assert no_word.spans[0].text == "abc"


@pytest.mark.parametrize("build", [build_tokenizer, build_bpe_tokenizer], ids=["wordpiece", "byte-level-bpe"])
def test_both_windowing_paths_give_the_word_ids_and_widening_of_the_pipeline(build, tmp_path):
    tokenizer = build()
    exs = examples()
    words = reference_features(tokenizer, exs, WINDOW)[4]
    via_transformers = make_features(exs, tokenizer, WINDOW, word_ids=True)
    tokenizer.save_pretrained(tmp_path)
    lite = WindowTokenizer.from_dir(tmp_path, model_input_names=tokenizer.model_input_names)
    via_tokenizers = make_features(exs, lite, WINDOW, word_ids=True)
    assert via_transformers.word_ids == via_tokenizers.word_ids == words
    assert make_features(exs, lite, WINDOW).word_ids is None  # only when asked for
    # _word_chars gives what the pipeline's Encoding.word_to_chars calls give, for every
    # start and end token of every window
    questions = truncate_questions(tokenizer, [ex.question for ex in exs], WINDOW.max_query_length)
    encodings = [enc for windows in as_window_tokenizer(tokenizer).encode(
        [(q, ex.context) for q, ex in zip(questions, exs)], max_length=WINDOW.max_seq_length, stride=WINDOW.doc_stride)
        for enc in windows]
    checked = 0
    for w, (offs, enc) in enumerate(zip(via_tokenizers.offsets, encodings, strict=True)):
        ctx = [i for i, o in enumerate(offs) if o is not None]
        for i in ctx:
            want_start = enc.word_to_chars(enc.token_to_word(i), sequence_index=1)[0]
            want_end = enc.word_to_chars(enc.token_to_word(i), sequence_index=1)[1]
            assert _word_chars(offs, via_tokenizers.word_ids[w], i, ctx[-1])[0] == want_start
            assert _word_chars(offs, via_tokenizers.word_ids[w], ctx[0], i)[1] == want_end
            checked += 1
    assert checked > 300


def pre_tokenized_words(tokenizer, context: str) -> tuple[set[int], set[int]]:
    """Start and end characters of the tokenizer's pre-tokenizer words (ASCII contexts: no
    normalizer changes lengths)."""
    words = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(context)
    return {s for _, (s, _) in words}, {e for _, (_, e) in words}


def test_answers_are_whole_words(tiny_bert_dir, one_thread):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    backend = TorchBackend(load_qa_model(tiny_bert_dir, device="cpu"), device="cpu")
    # words outside the tiny vocabulary ("Rollo", "Iceland", "fealty") come in pieces
    questions = [(q, ctx) for _, ctx, qs in CONTEXTS for q, _, _ in qs]
    questions += [(q, CONTEXTS[0][1]) for q in ("Who swore fealty?", "Where from?", "Which king?", "Who led?")]
    qs, ctxs = [q for q, _ in questions], [c for _, c in questions]
    changed = 0
    for n_best in (1, 20):
        plain = QuestionAnswerer(backend, tokenizer, scoring="pipeline", n_best=n_best)
        wide = QuestionAnswerer(backend, tokenizer, scoring="pipeline", n_best=n_best, align_to_words=True)
        all_plain = plain(qs, ctxs, top_k=n_best, abstain=False)
        all_wide = wide(qs, ctxs, top_k=n_best, abstain=False)
        for ctx, a_plain, a_wide in zip(ctxs, all_plain, all_wide):
            a_plain, a_wide = [a_plain] if n_best == 1 else a_plain, [a_wide] if n_best == 1 else a_wide
            starts, ends = pre_tokenized_words(tokenizer, ctx)
            for a in a_wide:
                assert a["start"] in starts and a["end"] in ends, a
                assert ctx[a["start"] : a["end"]] == a["answer"]
            if n_best == 1:
                # Widened spans only gain probability (merged sub-word spans add up), so the
                # widened answer scores at least the plain one; usually it is that span, widened.
                p, w = a_plain[0], a_wide[0]
                assert w["score"] >= p["score"] * (1 - 1e-9)
                changed += (w["start"], w["end"]) != (p["start"], p["end"])
    assert changed >= 3  # widening had something to do


def test_align_to_words_needs_pipeline_scoring(tiny_bert_dir, tiny_tokenizer, capsys):
    with pytest.raises(PocketQAError, match="align_to_words .*needs scoring='pipeline'"):
        QuestionAnswerer(object(), tiny_tokenizer, align_to_words=True)
    with pytest.raises(PocketQAError, match="needs scoring='pipeline'"):  # before looking for the model
        QuestionAnswerer.from_pretrained("/no/such/model", align_to_words=True)
    with pytest.raises(PocketQAError, match="align_to_words must be True or False, found 'yes'"):
        QuestionAnswerer.from_pretrained("/no/such/model", scoring="pipeline", align_to_words="yes")
    with pytest.raises(PocketQAError, match="needs scoring='pipeline'"):
        decode_example("abc", [np.zeros(3)], [np.zeros(3)], [[None, (0, 3), None]], [0], align_to_words=True,
                       word_ids=[[None, 0, None]])
    ex, f = one_window(tiny_tokenizer)
    plain = make_features([ex], tiny_tokenizer)
    with pytest.raises(PocketQAError, match="word_ids=True"):
        decode_features([ex], plain, [np.zeros(40)], [np.zeros(40)], scoring="pipeline", align_to_words=True)

    base = ["ask", "--model", str(tiny_bert_dir), "--device", "cpu", "-q", QUESTION, "-c", CONTEXT]
    assert main([*base, "--align-to-words"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--scoring pipeline" in err and "Traceback" not in err
    assert main([*base, "--scoring", "pipeline", "--align-to-words", "--json", "--no-abstain"]) == 0
    out = capsys.readouterr().out
    assert '"answer"' in out


def test_serve_takes_align_to_words(tiny_bert_dir, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    import socket

    import uvicorn

    import pocketqa.cli.main as cli

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: started.append(app))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    base = ["serve", "--model", str(tiny_bert_dir), "--device", "cpu", "--port", port, "--align-to-words"]
    assert cli.main(base) == 2 and not started
    assert "--scoring pipeline" in capsys.readouterr().err
    assert cli.main([*base, "--scoring", "pipeline"]) == 0
    assert started[0].state.qa.align_to_words is True
