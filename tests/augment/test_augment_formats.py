"""augment reads every data layout, and repairs offsets when asked."""

from __future__ import annotations

import json

import pytest
from helpers import squad_dict

from pocketqa.augment.edits import AugmentConfig, FunctionSource
from pocketqa.augment.runner import augment_squad_file
from pocketqa.data.formats import write_examples
from pocketqa.data.squad import load_squad, squad_examples
from pocketqa.errors import SquadFormatError


def same_words(text: str, spans) -> list[list[str]]:
    return [["word"] for _ in spans]


def test_augment_from_rows_matches_squad_json(tmp_path):
    squad = tmp_path / "train.json"
    squad.write_text(json.dumps(squad_dict()), encoding="utf-8")
    rows = tmp_path / "train.jsonl"
    write_examples(load_squad(squad), rows)
    config = AugmentConfig(factor=3, replace_prob=0.5, seed=1)
    source = FunctionSource(same_words)
    augment_squad_file(squad, tmp_path / "a.json", source, config, progress=False)
    augment_squad_file(rows, tmp_path / "b.json", source, config, progress=False)
    assert load_squad(tmp_path / "a.json") == load_squad(tmp_path / "b.json")


def test_augment_strict_by_default_repair_when_asked(tmp_path):
    examples = squad_examples(squad_dict(), "<tiny>")[0]
    rows = tmp_path / "dirty.jsonl"
    write_examples(examples, rows)
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    lines[0]["answers"]["answer_start"] = [1]
    rows.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    source = FunctionSource(same_words)
    with pytest.raises(SquadFormatError, match="line 1"):
        augment_squad_file(rows, tmp_path / "a.json", source, AugmentConfig(factor=2), progress=False)
    with pytest.warns(UserWarning, match="moved 1"):
        augment_squad_file(rows, tmp_path / "a.json", source, AugmentConfig(factor=2, offsets="repair"), progress=False)
    assert load_squad(tmp_path / "a.json")  # every answer_start of the output points at its text
