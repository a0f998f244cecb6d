"""pocketqa.recipes.mlm_head: the settings of ``pocketqa mlm-head`` (fitting itself: test_augment.py)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from pocketqa.cli.main import main
from pocketqa.errors import ConfigError
from pocketqa.recipes.configs import MLMHeadConfig


def test_settings_are_typed_and_every_problem_is_reported_at_once():
    config = MLMHeadConfig(steps="20", lr="3e-2", mask_prob=0.4)  # text from YAML or flags
    assert config.steps == 20 and config.lr == 0.03 and isinstance(config.steps, int)
    with pytest.raises(ConfigError) as info:
        MLMHeadConfig(steps=0, batch_size="many", lr=-1.0, max_length=4, mask_prob=1.0, eval_contexts=0, top_k=0)
    message = str(info.value)
    assert message.startswith("MLMHeadConfig: 7 problem(s): ")
    for expected in ("steps must be >= 1, found 0", "batch_size must be an integer, found 'many'",
                     "lr must be > 0, found -1.0", "max_length must be >= 8, found 4",
                     "mask_prob must be in (0, 1), found 1.0", "eval_contexts must be >= 1, found 0",
                     "top_k must be >= 1, found 0"):
        assert expected in message
    assert "batch_size must be >= 1" not in message  # a badly typed value is reported once


def test_every_setting_has_help_and_a_group():
    for f in fields(MLMHeadConfig):
        assert f.metadata["help"] and f.metadata["group"] in ("training", "data", "evaluation"), f.name


def test_cli_reports_a_bad_setting_in_one_line(tiny_bert_dir, tiny_squad_file, tmp_path, capsys):
    args = ["mlm-head", "--encoder", str(tiny_bert_dir), "--data", str(tiny_squad_file), "--out", str(tmp_path / "m")]
    assert main([*args, "--steps", "0", "--max-length", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "steps must be >= 1, found 0" in err and "max_length must be >= 8" in err
    assert not (tmp_path / "m" / "model.safetensors").exists()
