"""Tests for pocketqa.augment.edits (pure transforms, files, shards) and pocketqa.augment.mlm (candidates, head fitting)."""

from __future__ import annotations

import json
import random
import re
import warnings

import pytest
import torch
from helpers import build_tokenizer, one_line_exit_2, squad_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocketqa.augment.edits import (
    STOP_WORDS,
    AugmentConfig,
    FunctionSource,
    augment_example_group,
    eligible_spans,
    find_words,
    is_eligible,
    match_case,
)
from pocketqa.augment.runner import augment_squad_file, merge_shards
from pocketqa.cli.main import main
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.data.squad import Answer, Example, load_squad

FAKE_WORDS = ["zebra", "yacht", "xylophone", "walrus", "violet"]
SEPARATORS = re.compile(r"[^\W_]+")


def fake_candidates(text: str, spans) -> list[list[str]]:
    """Deterministic candidates: a few fixed words (never the word itself)."""
    return [[c for c in FAKE_WORDS if c != text[s:e].lower()] for s, e in spans]


def make_example(context: str, answers: list[tuple[int, int]], qid: str = "q", question: str = "Who?") -> Example:
    return Example(
        id=qid,
        title="t",
        context=context,
        question=question,
        answers=tuple(Answer(context[s:e], s) for s, e in answers),
        is_impossible=not answers,
    )


# -- property: answers stay valid -----------------------------------------------------------

WORD = st.sampled_from(
    ["the", "Paris", "river", "NASA", "built", "Normans", "of", "1066", "king's", "well-known", "Rome", "ÉCOLE", "été"]
)
SEP = st.sampled_from([" ", "  ", ", ", ". ", " (", ") ", "\n", " - ", "; ", "\t"])


@st.composite
def context_and_answers(draw):
    words = draw(st.lists(WORD, min_size=1, max_size=40))
    seps = draw(st.lists(SEP, min_size=len(words), max_size=len(words)))
    context = "".join(w + s for w, s in zip(words, seps)).strip() or "x"
    spans = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, len(context) - 1))
        end = draw(st.integers(start + 1, min(len(context), start + 30)))
        if context[start:end].strip():
            spans.append((start, end))
    return context, spans


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=context_and_answers(), seed=st.integers(0, 10_000), p=st.sampled_from([0.0, 0.4, 1.0]))
def test_answers_stay_valid_and_only_eligible_words_change(data, seed, p):
    context, spans = data
    examples = [make_example(context, [span], qid=f"q{i}") for i, span in enumerate(spans)]
    examples.append(make_example(context, [], qid="noans"))
    copies = augment_example_group(context, examples, fake_candidates, random.Random(seed), factor=4, p=p)

    orig_words = find_words(context)
    for copy in copies:
        source = next(ex for ex in examples if copy.id.startswith(ex.id + "-aug"))
        assert copy.is_impossible == source.is_impossible
        assert len(copy.answers) == len(source.answers)
        new_words = find_words(copy.context)
        # Spacing and punctuation outside words are untouched; words are replaced one for one.
        assert SEPARATORS.split(copy.context) == SEPARATORS.split(context)
        assert len(new_words) == len(orig_words)
        protected = [(a.start, a.end) for ex in examples for a in ex.answers]
        for (os_, oe), (ns, ne) in zip(orig_words, new_words):
            old, new = context[os_:oe], copy.context[ns:ne]
            if old == new:
                continue
            assert is_eligible(old), old
            assert not any(s < oe and os_ < e for s, e in protected), "a word inside an answer changed"
            assert new.lower() in FAKE_WORDS
            assert new == match_case(old, new.lower())
        for old_a, new_a in zip(source.answers, copy.answers):
            assert copy.context[new_a.start : new_a.start + len(new_a.text)] == new_a.text == old_a.text
            # The whole words overlapping the answer are unchanged too, at the same shift.
            touching = [(s, e) for s, e in orig_words if s < old_a.end and old_a.start < e]
            if touching:
                ws, we = touching[0][0], touching[-1][1]
                delta = new_a.start - old_a.start
                assert copy.context[ws + delta : we + delta] == context[ws:we]


def test_match_case():
    assert match_case("Paris", "london") == "London"
    assert match_case("NASA", "agency") == "AGENCY"
    assert match_case("river", "stream") == "stream"
    assert match_case("A", "big") == "Big"


def test_stop_words_numbers_punctuation_and_answers_are_not_eligible():
    context = "The 1066 conquest, by Normans; and Rollo's raiders 10th."
    spans = eligible_spans(context, protected=[(context.index("Rollo"), context.index("Rollo") + 5)])
    assert [context[s:e] for s, e in spans] == ["conquest", "Normans", "raiders"]


# -- statistics, duplicates, ids, determinism ---------------------------------------------------


def test_replace_probability_and_factor_are_respected():
    rng = random.Random(0)
    vocab = ["river", "mountain", "castle", "forest", "harbour", "valley", "bridge", "tower"]
    context = " ".join(rng.choice(vocab) for _ in range(2000))
    examples = [make_example(context, [(0, 5)])]
    for p in (0.1, 0.4, 0.8):
        copies = augment_example_group(context, examples, fake_candidates, random.Random(1), factor=5, p=p)
        assert len(copies) == 5  # 2000 words: copies are never identical
        assert [c.id for c in copies] == [f"q-aug{k}" for k in range(1, 6)]
        orig = context.split(" ")
        eligible = len(orig) - 1  # the first word is the answer
        for copy in copies:
            changed = sum(a != b for a, b in zip(orig, copy.context.split(" ")))
            assert abs(changed / eligible - p) < 0.04, (p, changed / eligible)


def test_identical_copies_are_dropped():
    context = "The 1066 of the and."  # no eligible word: every copy equals the original
    examples = [make_example(context, [])]
    assert augment_example_group(context, examples, fake_candidates, random.Random(0), factor=20, p=0.4) == []
    context = "river"  # one eligible word, few candidates: at most len(FAKE_WORDS) distinct copies
    copies = augment_example_group(context, [make_example(context, [])], fake_candidates, random.Random(0), 50, 1.0)
    assert len({c.context for c in copies}) == len(copies) <= len(FAKE_WORDS)
    assert context not in {c.context for c in copies}


def test_questions_augmented_only_when_asked():
    context = "Paris is a large city on the river Seine in northern France."
    ex = make_example(context, [(0, 5)], question="Which famous city lies on the river?")
    plain = augment_example_group(context, [ex], fake_candidates, random.Random(0), factor=10, p=0.5)
    assert {c.question for c in plain} == {ex.question}
    asked = augment_example_group(context, [ex], fake_candidates, random.Random(0), 10, 0.5, augment_questions=True)
    assert len({c.question for c in asked}) > 1
    assert all(c.question.endswith("?") for c in asked)


def _write_squad(path, contexts=None):
    path.write_text(json.dumps(squad_dict() if contexts is None else squad_dict(contexts)), encoding="utf-8")
    return path


def test_file_output_is_valid_unique_and_deterministic(tmp_path):
    data = _write_squad(tmp_path / "train.json")
    originals = load_squad(data)
    source = FunctionSource(fake_candidates)
    config = AugmentConfig(factor=6, replace_prob=0.4, seed=3, include_original=True, chunk_paragraphs=1)
    stats = augment_squad_file(data, tmp_path / "a.json", source, config, progress=False)
    augment_squad_file(data, tmp_path / "b.json", source, AugmentConfig(**{**config.__dict__, "chunk_paragraphs": 7}),
                       progress=False)
    augment_squad_file(data, tmp_path / "c.json", source, AugmentConfig(**{**config.__dict__, "seed": 4}), progress=False)

    out = load_squad(tmp_path / "a.json")  # validates every answer_start and id uniqueness
    assert stats["questions_out"] == len(out)
    assert len({ex.id for ex in out}) == len(out)
    by_id = {ex.id: ex for ex in originals}
    assert [ex for ex in out if ex.id in by_id] == originals  # --include-original keeps them as they were
    copies = [ex for ex in out if ex.id not in by_id]
    assert len(copies) > len(originals) * 4
    for copy in copies:
        source_ex = by_id[copy.id.rsplit("-aug", 1)[0]]
        assert copy.is_impossible == source_ex.is_impossible
        assert [a.text for a in copy.answers] == [a.text for a in source_ex.answers]
        assert copy.title == source_ex.title
    # Same seed: same bytes, whatever the chunking; another seed: other copies.
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()


def test_shards_merge_to_the_full_run(tmp_path):
    contexts = [(f"T{i}", f"Article {i} says the river castle stands near a quiet harbour {i}.", [
        ("Where is the castle?", "a quiet harbour", False), ("Who built it?", None, True)]) for i in range(7)]
    data = _write_squad(tmp_path / "train.json", contexts)
    source = FunctionSource(fake_candidates)
    full = AugmentConfig(factor=3, seed=9)
    augment_squad_file(data, tmp_path / "full.json", source, full, progress=False)
    shards = []
    for k in range(3):
        shards.append(tmp_path / f"s{k}.json.gz")
        augment_squad_file(data, shards[-1], source, AugmentConfig(factor=3, seed=9, shard_index=k, num_shards=3),
                           progress=False)
    merge_shards(shards[::-1], tmp_path / "merged.json")
    merged = load_squad(tmp_path / "merged.json")
    assert sorted(merged, key=lambda e: e.id) == sorted(load_squad(tmp_path / "full.json"), key=lambda e: e.id)
    with pytest.raises(Exception, match="missing shard"):
        merge_shards(shards[:2], tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_config_rejects_bad_values_all_at_once():
    with pytest.raises(ConfigError) as e:
        AugmentConfig(factor=0, replace_prob=1.5, num_shards=2, shard_index=2)
    assert "--factor" in str(e.value) and "--replace-prob" in str(e.value) and "--shard" in str(e.value)


# -- the masked LM ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tok = build_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    path = tmp_path_factory.mktemp("tiny_mlm")
    BertForMaskedLM(config).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_mlm_candidates_are_whole_words_never_the_word(tiny_mlm_dir):
    from pocketqa.augment.mlm import MaskedLMCandidates, load_masked_lm

    model, tok, head_missing = load_masked_lm(str(tiny_mlm_dir), device="cpu")
    assert not head_missing
    source = MaskedLMCandidates(model, tok, top_k=4, batch_size=3, max_length=12)
    text = "The king of France led Rollo to the river."
    spans = eligible_spans(text)
    words = [text[s:e] for s, e in spans]
    assert words == ["king", "France", "led", "Rollo", "river"]  # Rollo is r ##o ##l ##l ##o
    cands = source.candidates_many([(text, spans)])[0]
    vocab = set(tok.get_vocab())
    for word, cs in zip(words, cands):
        assert 0 < len(cs) <= 4
        for c in cs:
            assert c in vocab and c.isalpha() and len(c) > 1 and c.lower() != word.lower()
            assert c not in STOP_WORDS
            assert c not in tok.all_special_tokens
    assert source.stats["mlm_rows"] == 4 and source.stats["nn_words"] == 1
    # Batch shape does not change the lists.
    other = MaskedLMCandidates(model, tok, top_k=4, batch_size=64, max_length=12)
    assert other.candidates_many([(text, spans)])[0] == cands


def test_word_vectors_neighbours(tmp_path):
    from pocketqa.errors import PocketQAError
    from pocketqa.augment.mlm import WordVectors

    path = tmp_path / "glove.txt"
    path.write_text("king 1 0 0\nqueen 0.9 0.1 0\n, 1 0 0\nthe 1 0 0\ncastle 0 1 0\nriver 0 0 1\nprince 0.8 0.3 0\n")
    vectors = WordVectors.load(path)
    assert vectors.neighbours(["King", "unknownword"], k=2) == [["prince", "queen"], []]
    path.write_text("king 1 0 0\nqueen 0.9 oops 0\n")
    with pytest.raises(PocketQAError, match="line 2"):
        WordVectors.load(path)


@pytest.mark.slow
def test_cli_end_to_end_with_tiny_mlm(tmp_path, tiny_mlm_dir, tiny_squad_file):
    out = tmp_path / "aug.json"
    args = ["augment", "--data", str(tiny_squad_file), "--mlm", str(tiny_mlm_dir), "--factor", "5", "--seed", "1",
            "--device", "cpu", "--include-original", "--augment-questions"]
    assert main(args + ["--out", str(out)]) == 0
    augmented = load_squad(out)
    originals = load_squad(tiny_squad_file)
    assert len(augmented) > 2 * len(originals)
    assert len({ex.id for ex in augmented}) == len(augmented)
    changed = [ex for ex in augmented if "-aug" in ex.id and ex.context not in {o.context for o in originals}]
    assert changed
    by_id = {ex.id: ex for ex in originals}
    for ex in augmented:
        src = by_id[ex.id.split("-aug")[0]]
        assert ex.is_impossible == src.is_impossible
        for a, b in zip(ex.answers, src.answers):
            assert ex.context[a.start : a.end] == a.text == b.text
    assert main(args + ["--out", str(tmp_path / "again.json"), "--batch-size", "1"]) == 0
    assert (tmp_path / "again.json").read_bytes() == out.read_bytes()


def test_cli_errors_exit_2_with_one_line(tmp_path, tiny_mlm_dir, tiny_squad_file, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "abc", "qas": [
        {"id": "q1", "question": "Q?", "answers": [{"text": "zz", "answer_start": 0}]}]}]}]}))
    base = ["augment", "--out", str(tmp_path / "o.json"), "--device", "cpu"]
    cases = [
        (base + ["--data", str(bad), "--mlm", str(tiny_mlm_dir)], ["bad.json", "q1"]),
        (base + ["--data", str(tiny_squad_file), "--mlm", str(tmp_path / "no_such_mlm")], ["no_such_mlm"]),
        (base + ["--data", str(tiny_squad_file), "--mlm", str(tmp_path)], ["cannot load a masked LM", str(tmp_path)]),
        (base + ["--data", str(tiny_squad_file), "--mlm", str(tiny_mlm_dir), "--factor", "0", "--replace-prob", "2"],
         ["--factor", "--replace-prob"]),
        (base + ["--data", str(tiny_squad_file)], ["--mlm"]),
    ]
    for argv, needles in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, (needle, err)
    assert not (tmp_path / "o.json").exists()


def test_plain_encoder_warns_random_head(tmp_path, tiny_bert_dir):
    from pocketqa.augment.mlm import load_masked_lm

    with pytest.warns(UserWarning, match="mlm-head"):
        _, _, head_missing = load_masked_lm(str(tiny_bert_dir), device="cpu")
    assert head_missing


@pytest.mark.slow
def test_fit_mlm_head_trains_only_the_head(tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    from pocketqa.augment.mlm import load_masked_lm
    from pocketqa.recipes.configs import MLMHeadConfig
    from pocketqa.recipes.mlm_head import fit_mlm_head
    from pocketqa.modeldir import read_meta

    tok = build_tokenizer()
    torch.manual_seed(0)
    encoder_dir = tmp_path / "enc"
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(encoder_dir)
    tok.save_pretrained(encoder_dir)
    # Rotations of one sentence: the neighbours tell which word is masked, so a head can learn it.
    words = "the king of france built a castle on the river in paris".split()
    contexts = [(f"T{i}", " ".join(words[i % 11 :] + words[: i % 11]), [("What?", None, True)]) for i in range(30)]
    data = _write_squad(tmp_path / "train.json", contexts)
    out = tmp_path / "mlm"
    config = MLMHeadConfig(steps=20, batch_size=8, lr=3e-2, max_length=24, eval_contexts=5, mask_prob=0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fit_mlm_head(str(encoder_dir), data, out, config, device="cpu", progress=False)
    assert report["after"]["loss"] < report["before"]["loss"] - 0.1
    assert read_meta(out)["mlm_head"]["after"] == report["after"]
    enc = load_file(encoder_dir / "model.safetensors")
    fitted = load_file(out / "model.safetensors")
    for key, value in enc.items():  # every encoder weight is frozen
        if key.startswith(("embeddings.", "encoder.")):
            assert torch.equal(fitted["bert." + key], value), key
    model, _, head_missing = load_masked_lm(str(out), device="cpu")
    assert not head_missing
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.cls.predictions.transform.dense.weight.abs().sum() > 0


def test_augment_checks_the_device_before_moving_word_vectors_to_it(tmp_path, tiny_squad_file, monkeypatch):
    from pocketqa.augment.edits import AugmentConfig
    from pocketqa.augment.mlm import augment_with_mlm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("city 0.1 0.2\nparis 0.3 0.1\n", encoding="utf-8")
    with pytest.raises(PocketQAError, match="CUDA is not available"):
        augment_with_mlm(
            tiny_squad_file, tmp_path / "aug.json", str(tmp_path / "no-mlm"), AugmentConfig(factor=1),
            word_vectors=vectors, device="cuda", progress=False,
        )


def _two_shards(tmp_path):
    from pocketqa.augment.edits import AugmentConfig, FunctionSource
    from pocketqa.augment.runner import augment_squad_file

    data = tmp_path / "train.json"
    data.write_text(json.dumps(squad_dict()), encoding="utf-8")
    source = FunctionSource(lambda text, spans: [["zebra", "walrus"] for _ in spans])
    shards = []
    for k in range(2):
        shards.append(tmp_path / f"s{k}.json")
        augment_squad_file(data, shards[-1], source, AugmentConfig(factor=2, seed=1, shard_index=k, num_shards=2),
                           progress=False)
    return shards


def test_merge_refuses_a_damaged_shard_instead_of_writing_bad_labels(tmp_path, capsys):
    shards = _two_shards(tmp_path)
    out = tmp_path / "merged.json"
    damaged = json.loads(shards[1].read_text(encoding="utf-8"))
    qa = damaged["data"][0]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 3  # hand-edited: the label no longer points at its text
    shards[1].write_text(json.dumps(damaged), encoding="utf-8")
    one_line_exit_2(["augment", "--merge", *map(str, shards), "--out", str(out)], capsys, "s1.json", qa["id"])
    assert not out.exists()

    del damaged["data"][0]["paragraphs"]
    shards[1].write_text(json.dumps(damaged), encoding="utf-8")
    one_line_exit_2(["augment", "--merge", *map(str, shards), "--out", str(out)], capsys, "s1.json", "paragraphs")
    damaged = json.loads(shards[0].read_text(encoding="utf-8"))
    damaged["pocketqa_augment"]["shard"] = 0
    shards[0].write_text(json.dumps(damaged), encoding="utf-8")
    one_line_exit_2(["augment", "--merge", *map(str, shards), "--out", str(out)], capsys, "s0.json", "shard")
    assert not out.exists()
