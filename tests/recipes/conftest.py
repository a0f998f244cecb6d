"""Fixtures of the distillation tests: a tiny random teacher and a tiny training file."""

import json
from pathlib import Path

import pytest
from helpers import build_bert, squad_dict


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_tokenizer):
    """A 4-layer, 32-dim, 2-head random BERT QA teacher (a 16-dim student needs a projection)."""
    path = tmp_path_factory.mktemp("teacher")
    build_bert(len(tiny_tokenizer), seed=1, layers=4, hidden=32, heads=2).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def train_file(tmp_path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(squad_dict()), encoding="utf-8")
    return path
