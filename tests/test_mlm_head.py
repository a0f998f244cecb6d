"""Tests for pocketqa.recipes.mlm_head: its settings and its learning-rate schedule."""

from __future__ import annotations

import pytest

from pocketqa.errors import ConfigError
from pocketqa.recipes.mlm_head import MLMHeadConfig, build_optimizer, build_scheduler


def test_defaults_are_valid():
    config = MLMHeadConfig()
    assert (config.steps, config.batch_size, config.lr, config.top_k) == (300, 32, 2e-3, 15)


def test_every_bad_value_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        MLMHeadConfig(steps=0, batch_size=0, lr=0.0, max_length=4, mask_prob=1.0, eval_contexts=0, top_k=0)
    problems = e.value.problems
    assert len(problems) == 7, problems
    for expected in ("--steps must be >= 1, found 0", "--batch-size must be >= 1, found 0", "--lr must be > 0, found 0.0",
                     "--max-length must be >= 8, found 4", "mask_prob must be in (0, 1), found 1.0",
                     "--eval-contexts must be >= 1, found 0", "top_k must be >= 1, found 0"):
        assert expected in problems
    assert "--steps must be >= 1" in str(e.value)


def test_text_is_coerced_and_a_mistyped_value_is_named_once():
    assert MLMHeadConfig(steps="20", lr="3e-2").steps == 20
    with pytest.raises(ConfigError) as e:
        MLMHeadConfig(steps="many", lr=float("nan"), batch_size=0)
    problems = e.value.problems
    assert len(problems) == 3, problems  # no second, range message for the fields already reported
    assert any(p.startswith("steps must be an integer") for p in problems)
    assert any(p.startswith("lr must be a finite number") for p in problems)
    assert "--batch-size must be >= 1, found 0" in problems


def test_schedule_warms_up_linearly_then_decays_to_a_tenth():
    import torch

    layer = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(layer.parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, warmup_steps=4, total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1)  # step 20: the end of the cosine
    assert optimizer.defaults["weight_decay"] == 0.01
