"""pocketqa.training.optim: AdamW groups, the warmup/decay schedule and the run length rule."""

from __future__ import annotations

import math

import pytest
import torch

from pocketqa.training.optim import build_optimizer, build_scheduler, total_steps, warmup_steps_for


def test_max_steps_overrides_epochs_both_ways():
    assert total_steps(29, 4, epochs=2, max_steps=None) == 16  # ceil(29 / 4) = 8 steps an epoch
    assert total_steps(29, 4, epochs=2, max_steps=0) == 16
    assert total_steps(29, 4, epochs=2, max_steps=5) == 5  # stops inside the first epoch
    assert total_steps(29, 4, epochs=2, max_steps=40) == 40  # more than 2 epochs: run_qa's meaning
    assert total_steps(32, 4, epochs=3, max_steps=None) == 24


def test_warmup_is_a_fraction_below_one_else_steps():
    assert warmup_steps_for(0.1, 200) == 20
    assert warmup_steps_for(0.0, 200) == 0
    assert warmup_steps_for(30, 200) == 30
    assert warmup_steps_for(1, 200) == 1


def factors(warmup: int, total: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, warmup, total, **kwargs)
    out = []
    for _ in range(total):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def test_linear_schedule_is_run_squads():
    got = factors(2, 6)
    # warmup (s + 1) / (w + 1), then (total - s) / (total - w)
    assert got == pytest.approx([1 / 3, 2 / 3, 4 / 4, 3 / 4, 2 / 4, 1 / 4])
    assert factors(0, 4) == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_cosine_schedule_decays_to_its_floor():
    got = factors(1, 11, shape="cosine", floor=0.1)
    assert got[0] == pytest.approx(0.5)
    assert got[1] == pytest.approx(1.0)
    for step in range(1, 11):
        progress = (step - 1) / 10
        assert got[step] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert all(a >= b for a, b in zip(got[1:], got[2:]))
    linear = factors(0, 4, floor=0.2)
    assert linear == pytest.approx([1.0, 0.8, 0.6, 0.4])
    with pytest.raises(ValueError, match="linear, cosine"):
        factors(0, 4, shape="step")


def test_optimizer_groups_skip_decay_on_vectors_and_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    extra = torch.nn.Linear(4, 3)
    optimizer = build_optimizer(model, 1e-3, 0.1, extra_params=[*extra.parameters(), model[0].weight])
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(extra.weight)}  # each once
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                   id(model[2].bias), id(extra.bias)}
