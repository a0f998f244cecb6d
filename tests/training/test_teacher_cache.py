"""Tests for pocketqa.training.teacher_cache: what the cache key and fingerprints depend on."""

from __future__ import annotations

import json

import numpy as np

from pocketqa.data.features import WindowConfig
from pocketqa.models import PROJECTION_FILE
from pocketqa.recipes.finetune import TrainData
from pocketqa.training.teacher_cache import (
    cache_key,
    cache_key_parts,
    default_cache_root,
    model_fingerprint,
    state_dict_fingerprint,
    tokenizer_fingerprint,
    windows_fingerprint,
)


def _data(ids: list[int]) -> TrainData:
    n = len(ids)
    return TrainData(
        input_ids=np.array(ids, dtype=np.int32), token_type_ids=None, row_starts=np.array([0]), lengths=np.array([n]),
        start_positions=np.array([0]), end_positions=np.array([0]), example_index=np.array([0]), n_examples=1,
        data_sha256="x",
    )


def test_model_fingerprint_covers_weights_but_not_the_projection(tmp_path):
    assert model_fingerprint(str(tmp_path / "hub-id")) is None  # not a local dir
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert model_fingerprint(str(tmp_path)) is None  # no weights
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    first = model_fingerprint(str(tmp_path))
    (tmp_path / PROJECTION_FILE).write_bytes(b"projection")
    assert model_fingerprint(str(tmp_path)) == first  # stage 1's projection never changes the teacher's logits
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert model_fingerprint(str(tmp_path)) != first


def test_cache_key_ignores_names_and_follows_every_other_part(tiny_tokenizer, tiny_squad_file, tmp_path):
    data = _data([2, 5, 6, 3])
    parts = cache_key_parts("teacher", "sha", tiny_tokenizer, [tiny_squad_file], WindowConfig(), data, "fp32")
    assert json.loads(json.dumps(parts)) == parts  # goes into the manifest as is
    renamed = {**parts, "names": {"teacher": "elsewhere", "data": ["moved.json"]}}
    assert cache_key(renamed) == cache_key(parts)
    for change in ({"precision": "bf16"}, {"teacher": "sha2"}, {"windows": windows_fingerprint(_data([2, 5, 7, 3]))}):
        assert cache_key({**parts, **change}) != cache_key(parts), change


def test_tokenizer_fingerprint_follows_the_vocabulary_not_the_truncation_state():
    from helpers import WORDS, build_tokenizer

    tok = build_tokenizer()
    before = tokenizer_fingerprint(tok)
    tok("what is a question", "a context", truncation="only_second", max_length=64)  # sets the backend truncation
    assert tokenizer_fingerprint(tok) == before
    assert tokenizer_fingerprint(build_tokenizer(["zebra", *WORDS])) != before


def test_state_dict_fingerprint_follows_every_weight():
    import torch
    from helpers import build_bert

    model = build_bert(50)
    first = state_dict_fingerprint(model)
    assert state_dict_fingerprint(build_bert(50)) == first  # same seed, same weights
    with torch.no_grad():
        model.qa_outputs.bias[0] += 1e-3
    assert state_dict_fingerprint(model) != first


def test_default_cache_root_is_under_pocketqa_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("POCKETQA_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path / "teacher-logits"
