"""Windows cut on the tokenizers library alone equal those of transformers' tokenizer call."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from helpers import LONG, REPO, WINDOW, build_bpe_tokenizer, build_tokenizer, examples, reference_features, squad_dict
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.squad import iter_examples, load_squad
from pocketqa.data.tokenizer import WindowTokenizer, as_window_tokenizer


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


@pytest.mark.data
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
