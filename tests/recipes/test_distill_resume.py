"""Resumable distillation: stage checkpoints, --resume continuing bit-exactly, --max-steps as a stage's length."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import CountingTeacher
from safetensors.torch import load_file

import pocketqa.recipes.distill as distill_mod
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.models import PROJECTION_FILE
from pocketqa.recipes.configs import DistillConfig
from pocketqa.recipes.distill import distill
from pocketqa.training.runlog import read_log

WINDOW = dict(max_seq_length=48, doc_stride=16, max_query_length=16)

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path, teacher_dir, train_file, out: str, **overrides) -> DistillConfig:
    values = dict(
        teacher=str(teacher_dir), out=str(tmp_path / out), train=[str(train_file)], hidden=16, heads=2,
        intermediate=32, student_layers=2, batch_size=4, stage1_epochs=1, stage2_epochs=1,
        stage1_learning_rate=1e-3, stage2_learning_rate=1e-3, warmup=0.1, cache_dir=str(tmp_path / "cache"),
        log_steps=1, save_steps=2, keep_checkpoints=2, **WINDOW,
    )
    values.update(overrides)
    return DistillConfig(**values)


def _kill_at(monkeypatch, stage: int, step: int) -> None:
    """Makes the run die right after logging ``step`` of ``stage`` (between checkpoints)."""

    class Killed(distill_mod.RunLog):
        def write(self, record: dict) -> None:
            super().write(record)
            if record.get("stage") == stage and record.get("step") == step:
                raise KeyboardInterrupt(f"killed at stage {stage} step {step}")

    monkeypatch.setattr(distill_mod, "RunLog", Killed)


def _assert_same_weights(a: Path, b: Path, name: str = "model.safetensors") -> None:
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{name}: {key} differs"


def _logged_steps(out: Path, stage: int) -> list[int]:
    return [r["step"] for r in read_log(out) if r.get("stage") == stage and "loss" in r]


def test_stage2_killed_between_checkpoints_resumes_to_the_same_weights(teacher_dir, train_file, tmp_path, monkeypatch):
    full = _config(tmp_path, teacher_dir, train_file, "full", stage="2", max_steps=7)
    distill(full, progress=False)
    cut = _config(tmp_path, teacher_dir, train_file, "cut", stage="2", max_steps=7)
    with monkeypatch.context() as m:
        _kill_at(m, stage=2, step=5)
        with pytest.raises(KeyboardInterrupt):
            distill(cut, progress=False)
    assert sorted(p.name for p in (Path(cut.out) / "checkpoints").iterdir()) == ["step-2", "step-4"]
    distill(_config(tmp_path, teacher_dir, train_file, "cut", stage="2", max_steps=7, resume="latest"), progress=False)
    _assert_same_weights(Path(full.out), Path(cut.out))
    assert _logged_steps(Path(cut.out), 2) == list(range(1, 8))  # step 5 logged once, not twice
    assert sorted(p.name for p in (Path(cut.out) / "checkpoints").iterdir()) == ["step-4", "step-6"]


def test_stage1_killed_resumes_to_the_same_student_and_projection(teacher_dir, train_file, tmp_path, monkeypatch):
    full = _config(tmp_path, teacher_dir, train_file, "full", stage="1", max_steps=6)
    distill(full, progress=False)
    cut = _config(tmp_path, teacher_dir, train_file, "cut", stage="1", max_steps=6)
    with monkeypatch.context() as m:
        _kill_at(m, stage=1, step=3)
        with pytest.raises(KeyboardInterrupt):
            distill(cut, progress=False)
    assert (Path(cut.out) / "checkpoints" / "step-2" / "projection.safetensors").is_file()
    distill(_config(tmp_path, teacher_dir, train_file, "cut", stage="1", max_steps=6, resume="latest"), progress=False)
    _assert_same_weights(Path(full.out), Path(cut.out))
    _assert_same_weights(Path(full.out), Path(cut.out), PROJECTION_FILE)


def test_both_stages_killed_in_stage2_resume_without_redoing_stage1(teacher_dir, train_file, tmp_path, monkeypatch):
    full = _config(tmp_path, teacher_dir, train_file, "full", stage="both", max_steps=5)
    distill(full, progress=False)
    cut = _config(tmp_path, teacher_dir, train_file, "cut", stage="both", max_steps=5)
    with monkeypatch.context() as m:
        _kill_at(m, stage=2, step=3)
        with pytest.raises(KeyboardInterrupt):
            distill(cut, progress=False)
    out = Path(cut.out)
    # stage 1's checkpoints live apart from stage 2's
    assert (out / "stage1" / "checkpoints" / "step-4").is_dir() and (out / "checkpoints" / "step-2").is_dir()
    stage1_written = (out / "stage1" / "model.safetensors").stat().st_mtime_ns
    counter = CountingTeacher()
    resumed = _config(tmp_path, teacher_dir, train_file, "cut", stage="both", max_steps=5, resume="latest")
    summary = distill(resumed, progress=False, load_teacher=counter)
    assert counter.calls == 0 and "stage1" not in summary  # no stage-1 step and no teacher pass (logits cached)
    assert (out / "stage1" / "model.safetensors").stat().st_mtime_ns == stage1_written
    _assert_same_weights(Path(full.out), out)
    assert _logged_steps(out, 1) == list(range(1, 6)) and _logged_steps(out, 2) == list(range(1, 6))


def test_max_steps_beyond_one_epoch_runs_exactly_max_steps(teacher_dir, train_file, tmp_path):
    first = distill(_config(tmp_path, teacher_dir, train_file, "one", stage="2", save_steps=0), progress=False)
    per_epoch = math.ceil(first["stage2"]["windows"] / 4)
    assert first["stage2"]["steps"] == per_epoch
    cfg = _config(tmp_path, teacher_dir, train_file, "more", stage="2", save_steps=0, max_steps=per_epoch + 3)
    summary = distill(cfg, progress=False)
    assert summary["stage2"]["steps"] == per_epoch + 3
    assert _logged_steps(Path(cfg.out), 2) == list(range(1, per_epoch + 4))


def test_resume_is_refused_with_overwrite_without_a_checkpoint_or_with_other_settings(teacher_dir, train_file, tmp_path):
    with pytest.raises(ConfigError, match="resume and overwrite exclude each other"):
        distill(_config(tmp_path, teacher_dir, train_file, "x", stage="2", resume="latest", overwrite=True), progress=False)
    with pytest.raises(PocketQAError, match=r"no checkpoint under .*checkpoints"):
        distill(_config(tmp_path, teacher_dir, train_file, "x", stage="2", resume="latest"), progress=False)
    with pytest.raises(PocketQAError, match="not a checkpoint dir"):
        distill(_config(tmp_path, teacher_dir, train_file, "x", stage="2", resume=str(tmp_path)), progress=False)
    done = _config(tmp_path, teacher_dir, train_file, "done", stage="2", max_steps=3)
    distill(done, progress=False)
    other = _config(tmp_path, teacher_dir, train_file, "done", stage="2", max_steps=3, batch_size=2, resume="latest")
    with pytest.raises(PocketQAError, match="cannot resume stage 2 .*batch_size was 4, now 2"):
        distill(other, progress=False)


@pytest.mark.parametrize("field, value", [("save_steps", -1), ("keep_checkpoints", -1)])
def test_checkpoint_settings_are_range_checked(teacher_dir, train_file, tmp_path, field, value):
    with pytest.raises(ConfigError, match=field):
        _config(tmp_path, teacher_dir, train_file, "x", **{field: value})
