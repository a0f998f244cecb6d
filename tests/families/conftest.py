"""Session fixtures of the family matrix: saved tiny model directories and tokenizers per family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from families.builders import FAMILIES, save_family, train_tokenizer
from helpers import squad_dict


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory):
    """name -> a saved tiny model directory, built on first use and kept for the session."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = save_family(FAMILIES[name], tmp_path_factory.mktemp(name))
        return made[name]

    return get


@pytest.fixture(scope="session")
def family_tokenizers():
    """name -> the family's trained tokenizer (as saved and reloaded by AutoTokenizer)."""
    made: dict = {}

    def get(name: str):
        if name not in made:
            made[name] = train_tokenizer(FAMILIES[name])
        return made[name]

    return get


@pytest.fixture(scope="session")
def squad_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("squad") / "train.json"
    path.write_text(json.dumps(squad_dict()), encoding="utf-8")
    return path
