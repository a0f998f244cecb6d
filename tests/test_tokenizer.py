"""Windows cut on the tokenizers library alone equal those of transformers' tokenizer call."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import CONTEXTS, REPO, build_tokenizer, squad_dict
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.squad import Example, iter_examples, load_squad
from pocketqa.data.tokenizer import WindowTokenizer, as_window_tokenizer

WINDOW = WindowConfig(max_seq_length=48, doc_stride=12, max_query_length=10)
LONG = " ".join(f"Sentence {i} tells that the river of Paris flows north, not south." for i in range(25))


def build_bpe_tokenizer():
    """A RoBERTa-style byte-level BPE tokenizer (<s> A </s></s> B </s>, no token types), trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [ctx for _, ctx, _ in CONTEXTS] + [q for _, _, qs in CONTEXTS for q, _, _ in qs] + [LONG]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.post_processor = processors.RobertaProcessing(("</s>", tk.token_to_id("</s>")), ("<s>", tk.token_to_id("<s>")),
                                                     trim_offsets=True, add_prefix_space=False)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_input_names=["input_ids", "attention_mask"])


def examples() -> list[Example]:
    out = [Example(id=f"{title}-{i}", title=title, context=ctx, question=q)
           for title, ctx, qs in CONTEXTS for i, (q, _, _) in enumerate(qs)]
    out.append(Example(id="long", title="t", context=LONG, question="   Which way does the river of Paris flow?"))
    out.append(Example(id="longq", title="t", context=LONG, question=" ".join(["where is the city"] * 8) + "?"))
    out.append(Example(id="accents", title="t", context="Café Zoë — naïve façade, 10–12 €.", question="Whose café?"))
    return out


def reference_features(tokenizer, exs, window: WindowConfig):
    """What transformers' own tokenizer call gives (the run_qa.py way), with questions cut the same way."""
    questions = [ex.question.lstrip() for ex in exs]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    questions = [q[: offs[window.max_query_length - 1][1]] if len(offs) > window.max_query_length else q
                 for q, offs in zip(questions, enc["offset_mapping"])]
    wants_types = "token_type_ids" in tokenizer.model_input_names
    enc = tokenizer(questions, [ex.context for ex in exs], truncation="only_second", max_length=window.max_seq_length,
                    stride=window.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    return_token_type_ids=wants_types, padding=False)
    offsets = [[tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
               for i in range(len(enc["input_ids"]))]
    word_ids = [enc.word_ids(i) for i in range(len(enc["input_ids"]))]
    return (enc["input_ids"], enc["token_type_ids"] if wants_types else None, offsets,
            list(enc["overflow_to_sample_mapping"]), word_ids)


def assert_same_windows(features, reference):
    ids, types, offsets, samples, word_ids = reference
    assert features.input_ids == ids
    assert features.token_type_ids == types
    assert features.offsets == offsets
    assert features.example_index.tolist() == samples
    assert features.word_ids in (None, word_ids)  # word ids only when asked for


@pytest.mark.parametrize("build", [build_tokenizer, build_bpe_tokenizer], ids=["wordpiece", "byte-level-bpe"])
def test_windows_equal_the_transformers_tokenizer_call(build, tmp_path):
    tokenizer = build()
    exs = examples()
    reference = reference_features(tokenizer, exs, WINDOW)
    assert max(reference[3]) == len(exs) - 1 and len(reference[3]) > len(exs) + 3  # long contexts overflow
    assert_same_windows(make_features(exs, tokenizer, WINDOW), reference)
    assert_same_windows(make_features(exs, tokenizer, WINDOW, word_ids=True), reference)
    # the same tokenizer saved and loaded without transformers
    tokenizer.save_pretrained(tmp_path)
    lite = WindowTokenizer.from_dir(tmp_path, model_input_names=tokenizer.model_input_names)
    assert (lite.cls_token_id, lite.pad_token_id) == (tokenizer.cls_token_id, tokenizer.pad_token_id)
    features = make_features(exs, lite, WINDOW, word_ids=True)
    assert features.word_ids is not None
    assert_same_windows(features, reference)
    first_ids = [ids[c] for ids, c in zip(features.input_ids, features.cls_index)]
    assert set(first_ids) == {tokenizer.cls_token_id}


def test_windowing_leaves_the_tokenizer_as_it_was():
    tokenizer = build_tokenizer()
    backend = tokenizer.backend_tokenizer
    backend.enable_truncation(7)
    make_features(examples(), tokenizer, WINDOW)
    assert backend.truncation["max_length"] == 7 and backend.padding is None
    backend.no_truncation()
    assert len(tokenizer(LONG)["input_ids"]) > 100


def test_real_dev_questions_with_the_bundled_tokenizer(shared_dev):
    from transformers import AutoTokenizer

    model_dir = REPO / "src/pocketqa/default_model"
    exs = load_squad(shared_dev)[:400]
    window = WindowConfig()
    reference = reference_features(AutoTokenizer.from_pretrained(model_dir), exs, window)
    assert_same_windows(make_features(exs, WindowTokenizer.from_dir(model_dir), window, word_ids=True), reference)


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(PocketQAError, match="tokenizer.json: cannot load the tokenizer"):
        WindowTokenizer.from_dir(tmp_path)
    build_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(PocketQAError, match="tokenizer_config.json: invalid JSON"):
        WindowTokenizer.from_dir(tmp_path)

    class Slow:
        is_fast = False

    with pytest.raises(ConfigError, match="Slow is not a fast tokenizer"):
        as_window_tokenizer(Slow())


def test_an_exported_model_answers_without_importing_torch_or_transformers():
    code = (
        "import sys; from pocketqa import QuestionAnswerer; qa = QuestionAnswerer.from_pretrained(); "
        "r = qa('Who founded the company?', 'The company was founded in 1998 by Larry Page and Sergey Brin.'); "
        "assert 'Larry Page' in r['answer'], r; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_label_positions_are_unchanged_by_the_window_tokenizer(tiny_tokenizer):
    exs = list(iter_examples(squad_dict(), "tiny"))
    f = make_features(exs, tiny_tokenizer, WINDOW, labels=True)
    for w in range(len(f)):
        s, e = int(f.start_positions[w]), int(f.end_positions[w])
        ex = exs[int(f.example_index[w])]
        if s == f.cls_index[w]:
            continue
        assert ex.context[f.offsets[w][s][0] : f.offsets[w][e][1]] == ex.answers[0].text
    assert np.any(f.start_positions != f.cls_index)
