"""pocketqa.training.checkpoint: atomic, resumable checkpoints of any set of modules plus state."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from helpers import build_bert

from pocketqa.errors import PocketQAError
from pocketqa.training.checkpoint import (
    checkpoint_dir,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_checkpoint_state,
    resolve_checkpoint,
    save_checkpoint,
)
from pocketqa.training.optim import build_optimizer, build_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")


def student_and_projection(tokenizer, seed: int):
    """A QA model and an extra projection module (the pair distillation stage 1 trains)."""
    model = build_bert(len(tokenizer), seed=seed)
    torch.manual_seed(seed)
    return {"model": model, "projection": torch.nn.Linear(32, 48)}


def train_a_step(modules, optimizer, scheduler) -> None:
    ids = torch.randint(5, 50, (2, 12))
    out = modules["model"](input_ids=ids, attention_mask=torch.ones_like(ids))
    loss = out.start_logits.square().mean() + modules["projection"](torch.randn(2, 32)).square().mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def draws() -> tuple:
    return torch.rand(4), random.random(), np.random.rand(3)


def optimizer_for(modules):
    optimizer = build_optimizer(modules["model"], 1e-2, 0.01, extra_params=list(modules["projection"].parameters()))
    return optimizer, build_scheduler(optimizer, 2, 10)


def test_round_trip_of_two_modules_continues_the_run_bit_for_bit(tmp_path, tiny_tokenizer):
    modules = student_and_projection(tiny_tokenizer, seed=0)
    optimizer, scheduler = optimizer_for(modules)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(3):
        train_a_step(modules, optimizer, scheduler)
    state = {"stage": 1, "step": 3, "epoch": 0, "step_in_epoch": 3, "note": "any JSON"}
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    path = save_checkpoint(checkpoint_dir(tmp_path, 3), modules, optimizer, scheduler, state, scaler=scaler,
                           tokenizer=tiny_tokenizer, meta={"name": "ckpt"})
    # What the original run does next: random draws, then a step with dropout and Adam state.
    expected_draws = draws()
    train_a_step(modules, optimizer, scheduler)

    fresh = student_and_projection(tiny_tokenizer, seed=1)  # other weights, other RNG
    assert not torch.equal(fresh["projection"].weight, modules["projection"].weight)
    fresh_opt, fresh_sched = optimizer_for(fresh)
    fresh_scaler = torch.amp.GradScaler("cpu")
    assert load_checkpoint(path, fresh, fresh_opt, fresh_sched, fresh_scaler) == state
    assert fresh_sched.last_epoch == 3 and fresh_scaler.get_scale() == 1024.0
    got_draws = draws()
    assert torch.equal(got_draws[0], expected_draws[0]) and got_draws[1] == expected_draws[1]
    assert np.array_equal(got_draws[2], expected_draws[2])
    train_a_step(fresh, fresh_opt, fresh_sched)
    for name in modules:
        for key, value in modules[name].state_dict().items():
            assert torch.equal(fresh[name].state_dict()[key], value), f"{name}.{key}"


def test_loaded_tensors_are_identical_to_the_saved_ones(tmp_path, tiny_tokenizer):
    modules = student_and_projection(tiny_tokenizer, seed=0)
    path = save_checkpoint(tmp_path / "ckpt", modules, state={"step": 1})
    fresh = student_and_projection(tiny_tokenizer, seed=1)
    assert load_checkpoint(path, fresh, restore_rng=False) == {"step": 1}
    for name in modules:
        saved, restored = modules[name].state_dict(), fresh[name].state_dict()
        assert saved.keys() == restored.keys()
        for key in saved:
            assert torch.equal(saved[key], restored[key]), f"{name}.{key}"


def test_checkpoint_is_an_hf_model_dir_with_one_file_per_extra_module(tmp_path, tiny_tokenizer):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    modules = student_and_projection(tiny_tokenizer, seed=0)
    path = save_checkpoint(tmp_path / "ckpt", modules, state={"step": 1}, tokenizer=tiny_tokenizer,
                           meta={"name": "x"})
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "projection.safetensors", "trainer_state.pt", "rng-0.pt",
            "state.json", "pocketqa.json"} <= names
    assert json.loads((path / "pocketqa.json").read_text()) == {"name": "x"}
    hf = AutoModelForQuestionAnswering.from_pretrained(path)
    for key, value in modules["model"].state_dict().items():
        assert torch.equal(hf.state_dict()[key], value), key
    assert AutoTokenizer.from_pretrained(path).get_vocab() == tiny_tokenizer.get_vocab()
    for f in ("trainer_state.pt", "rng-0.pt"):  # plain tensors and containers: no pickled code
        torch.load(path / f, weights_only=True)


def test_a_plain_module_as_main_model_and_no_optimizer(tmp_path):
    torch.manual_seed(0)
    modules = {"model": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 1)}
    path = save_checkpoint(tmp_path / "c", modules, state={"step": 2})
    fresh = {"model": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 1)}
    load_checkpoint(path, fresh)
    assert torch.equal(fresh["model"].weight, modules["model"].weight)
    assert torch.equal(fresh["head"].bias, modules["head"].bias)


def test_a_module_that_does_not_fit_is_named(tmp_path, tiny_tokenizer):
    modules = student_and_projection(tiny_tokenizer, seed=0)
    path = save_checkpoint(tmp_path / "ckpt", modules, state={"step": 1})
    wrong = {"model": build_bert(len(tiny_tokenizer)), "projection": torch.nn.Linear(32, 64)}
    with pytest.raises(PocketQAError, match=r"projection\.safetensors.*'projection' module"):
        load_checkpoint(path, wrong)
    with pytest.raises(PocketQAError, match=r"no 'teacher' module \(teacher\.safetensors is missing\)"):
        load_checkpoint(path, {"teacher": torch.nn.Linear(32, 48)})
    with pytest.raises(PocketQAError, match="no optimizer state"):
        load_checkpoint(path, {}, optimizer=torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1))
    with pytest.raises(ValueError, match="identifiers"):
        save_checkpoint(tmp_path / "bad", {"my-module": torch.nn.Linear(2, 2)}, state={})


def test_a_failed_save_leaves_no_complete_checkpoint(tmp_path, tiny_tokenizer):
    modules = student_and_projection(tiny_tokenizer, seed=0)
    save_checkpoint(checkpoint_dir(tmp_path, 1), modules, state={"step": 1})
    with pytest.raises(TypeError):  # state must be JSON: refused before anything is written
        save_checkpoint(checkpoint_dir(tmp_path, 2), modules, state={"step": object()})

    class Broken(torch.nn.Linear):
        def state_dict(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(checkpoint_dir(tmp_path, 3), {**modules, "broken": Broken(2, 2)}, state={"step": 3})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-1"]
    assert not checkpoint_dir(tmp_path, 3).exists()  # only its .tmp- dir, which nothing reads
    assert resolve_checkpoint(tmp_path, "latest") == checkpoint_dir(tmp_path, 1)


def test_list_prune_and_resolve(tmp_path):
    for step in (2, 10, 7):
        save_checkpoint(checkpoint_dir(tmp_path, step), {"model": torch.nn.Linear(2, 2)}, state={"step": step})
    checkpoint_dir(tmp_path, 12).mkdir()  # killed while writing: no state.json
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-2", "step-7", "step-10"]
    assert resolve_checkpoint(tmp_path, "latest").name == "step-10"
    assert resolve_checkpoint(tmp_path, str(checkpoint_dir(tmp_path, 7))) == checkpoint_dir(tmp_path, 7)
    assert read_checkpoint_state(checkpoint_dir(tmp_path, 7)) == {"step": 7}
    with pytest.raises(PocketQAError, match=r"--resume .*step-12: not a checkpoint dir \(no state\.json\)"):
        resolve_checkpoint(tmp_path, checkpoint_dir(tmp_path, 12))
    with pytest.raises(PocketQAError, match="no checkpoint under .*start again with --overwrite"):
        resolve_checkpoint(tmp_path / "elsewhere", "latest")
    prune_checkpoints(tmp_path, 0)
    assert len(list_checkpoints(tmp_path)) == 3
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-7", "step-10"]
