"""Golden loss traces: the per-step training loss of fine-tuning and of both distillation stages.

These pin what training does today, step by step, so that a refactor that moves the code can
show it still trains the same way. Each test builds tiny random BERT models with fixed seeds,
trains on the fixed tiny SQuAD data of helpers.squad_dict() on the CPU in float32 with one
torch thread (dropout on, as the models come; deterministic given the seeds), logs every step
(log_steps=1), reads the loss of each step back from out/log.jsonl and compares it with
tests/assets/golden/<name>.json (numpy assert_allclose, rtol=1e-5, atol=1e-7; same number of steps).

Each JSON file holds the losses and the settings that made them; the test also checks that its
settings are still the stored ones, so a changed setting fails loudly instead of comparing
traces of two different runs.

Regenerating (only when a change of the numbers is intended, and say why in the commit):

    POCKETQA_WRITE_GOLDEN=1 PYTHONPATH=src python -m pytest tests/recipes/test_golden_traces.py

With POCKETQA_WRITE_GOLDEN=1 the tests write the JSON files instead of comparing.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_bert, build_tokenizer, squad_dict

# -- pocketqa internals: the only lines to update when the modules move -------------------------
from pocketqa.recipes.distill import distill
from pocketqa.recipes.configs import DistillConfig
from pocketqa.recipes.finetune import train
from pocketqa.training.runlog import read_log
from pocketqa.recipes.configs import TrainConfig
# ---------------------------------------------------------------------------------------------

GOLDEN_DIR = Path(__file__).parent.parent / "assets" / "golden"
WRITE = os.environ.get("POCKETQA_WRITE_GOLDEN") == "1"
RTOL, ATOL = 1e-5, 1e-7

pytestmark = pytest.mark.usefixtures("one_thread")

DROPOUT = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}

FINETUNE = {
    "model": {"builder": "helpers.build_bert", "seed": 0, "layers": 2, "hidden": 32, "heads": 2, **DROPOUT},
    "data": "helpers.squad_dict()",
    "torch_threads": 1,
    "config": {
        "max_seq_length": 64, "doc_stride": 16, "max_query_length": 16, "batch_size": 4, "max_steps": 10,
        "learning_rate": 1e-3, "warmup": 0.2, "weight_decay": 0.01, "max_grad_norm": 1.0, "seed": 42,
        "log_steps": 1, "save_steps": 0, "precision": "fp32", "device": "cpu",
    },
}

TEACHER = {"builder": "helpers.build_bert", "seed": 1, "layers": 4, "hidden": 32, "heads": 2, **DROPOUT}

DISTILL_COMMON = {
    "max_seq_length": 48, "doc_stride": 16, "max_query_length": 16,
    # the student: 2 layers of the teacher's config, freshly initialised at 16 dims (a projection in stage 1)
    "student_layers": 2, "hidden": 16, "heads": 2, "intermediate": 32,
    "batch_size": 4, "max_steps": 10, "stage1_epochs": 4, "stage2_epochs": 4,
    "stage1_learning_rate": 1e-3, "stage2_learning_rate": 1e-3, "warmup": 0.2, "weight_decay": 0.01,
    "max_grad_norm": 1.0, "seed": 42, "log_steps": 1, "precision": "fp32", "device": "cpu",
}

STAGE1 = {
    "teacher": TEACHER, "data": "helpers.squad_dict()", "torch_threads": 1,
    "config": {**DISTILL_COMMON, "stage": "1", "attention_target": "scores"},
}

STAGE2 = {
    "teacher": TEACHER, "data": "helpers.squad_dict()", "torch_threads": 1,
    "config": {**DISTILL_COMMON, "stage": "2", "temperature": 1.0, "kd_weight": 0.5, "embeds_dropout": 0.1},
}


def _save_bert(path: Path, spec: dict) -> Path:
    tokenizer = build_tokenizer()
    kwargs = {k: v for k, v in spec.items() if k not in ("builder", "seed", "layers", "hidden", "heads")}
    model = build_bert(len(tokenizer), seed=spec["seed"], layers=spec["layers"], hidden=spec["hidden"],
                       heads=spec["heads"], **kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _write_data(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(squad_dict()), encoding="utf-8")
    return path


def _steps_and_losses(out: Path, stage: int | None = None) -> tuple[list[int], list[float]]:
    records = [r for r in read_log(out) if "loss" in r and (stage is None or r.get("stage") == stage)]
    return [r["step"] for r in records], [r["loss"] for r in records]


def _check_or_write(name: str, settings: dict, steps: list[int], losses: list[float]) -> None:
    path = GOLDEN_DIR / f"{name}.json"
    assert steps == list(range(1, len(steps) + 1)), f"{name}: logged steps {steps} are not 1..N"
    assert len(losses) == settings["config"]["max_steps"], f"{name}: {len(losses)} steps logged"
    assert all(np.isfinite(losses)), f"{name}: non-finite losses {losses}"
    if WRITE:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        record = {
            "name": name,
            "made_by": "tests/recipes/test_golden_traces.py with POCKETQA_WRITE_GOLDEN=1",
            "settings": settings,
            "steps": len(losses),
            "losses": losses,
            "environment": {"torch": torch.__version__, "numpy": np.__version__,
                            "python": platform.python_version(), "machine": platform.machine()},
        }
        import transformers

        record["environment"]["transformers"] = transformers.__version__
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return
    assert path.is_file(), f"{path} is missing: run with POCKETQA_WRITE_GOLDEN=1 to create it"
    golden = json.loads(path.read_text(encoding="utf-8"))
    assert golden["settings"] == json.loads(json.dumps(settings)), f"{name}: settings differ from {path}"
    assert len(losses) == len(golden["losses"]) == golden["steps"], (
        f"{name}: {len(losses)} steps, golden {golden['steps']}"
    )
    np.testing.assert_allclose(losses, golden["losses"], rtol=RTOL, atol=ATOL, err_msg=f"{name} loss trace")


def test_finetune_trace(tmp_path):
    model_dir = _save_bert(tmp_path / "model", FINETUNE["model"])
    out = tmp_path / "out"
    train(TrainConfig(model=str(model_dir), train=str(_write_data(tmp_path)), out=str(out),
                      cache_dir=str(tmp_path / "cache"), **FINETUNE["config"]))
    _check_or_write("finetune", FINETUNE, *_steps_and_losses(out))


def test_distill_stage1_trace(tmp_path):
    teacher_dir = _save_bert(tmp_path / "teacher", STAGE1["teacher"])
    out = tmp_path / "out"
    cfg = DistillConfig(teacher=str(teacher_dir), train=[str(_write_data(tmp_path))], out=str(out),
                        cache_dir=str(tmp_path / "cache"), **STAGE1["config"])
    distill(cfg, progress=False)
    assert not _steps_and_losses(out, stage=2)[0]
    _check_or_write("distill_stage1", STAGE1, *_steps_and_losses(out, stage=1))


def test_distill_stage2_trace(tmp_path):
    teacher_dir = _save_bert(tmp_path / "teacher", STAGE2["teacher"])
    out = tmp_path / "out"
    cfg = DistillConfig(teacher=str(teacher_dir), train=[str(_write_data(tmp_path))], out=str(out),
                        cache_dir=str(tmp_path / "cache"), **STAGE2["config"])
    distill(cfg, progress=False)
    assert not _steps_and_losses(out, stage=1)[0]
    _check_or_write("distill_stage2", STAGE2, *_steps_and_losses(out, stage=2))
