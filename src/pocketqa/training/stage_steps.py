"""Pieces of the two TinyBERT distillation stages: batches, teacher targets, steps, checkpoints.

The stage loops themselves (forward, loss, backward, step, log, save) are in
``pocketqa.recipes.distill``; these are the parts each loop calls, kept out of the way so
each loop reads top to bottom.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pocketqa.data.batching import collate, to_device
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.training.checkpoint import (
    CHECKPOINTS_DIR,
    checkpoint_dir,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_checkpoint_state,
    resolve_checkpoint,
    save_checkpoint,
)
from pocketqa.training.guards import check_finite_weights
from pocketqa.training.precision import autocast
from pocketqa.training.teacher_cache import TeacherLogits, gather_rows


NONFINITE_HINT = "lower the learning rate or use --precision fp32"


@dataclass
class StageCheckpoints:
    """Where and how often a stage saves resumable checkpoints, and the one it resumes from.

    Attributes:
        out: The stage's output dir; checkpoints go to ``out/checkpoints/step-N``.
        save_steps: Save every this many steps (0: never).
        keep: Keep the newest this many checkpoints (None or 0: all).
        resume_from: A checkpoint of this stage to continue from (None: a fresh stage).
        tokenizer: Saved in each checkpoint, so it is a usable model dir.
        settings: What a resume must match (data checksum, batch size, window, seed...).
    """

    out: Path
    save_steps: int = 0
    keep: int | None = 2
    resume_from: Path | None = None
    tokenizer: object = None
    settings: dict = field(default_factory=dict)

    def restore(self, stage: int, modules: dict, optimizer, scheduler) -> tuple[int, int, int]:
        """(step, epoch, batch in the epoch) to start at: from ``resume_from``, or zeros."""
        if self.resume_from is None:
            return 0, 0, 0
        state = load_checkpoint(self.resume_from, modules, optimizer, scheduler)
        problems = [f"it is a stage {state.get('stage')} checkpoint"] if state.get("stage") != stage else []
        problems += [f"{k} was {state.get(k)!r}, now {v!r}" for k, v in self.settings.items() if state.get(k) != v]
        if problems:
            raise PocketQAError(
                f"cannot resume stage {stage} from {self.resume_from}: " + "; ".join(problems)
                + " (resume with the original data and settings, or start again with --overwrite)"
            )
        return state["step"], state["epoch"], state["step_in_epoch"]

    def save(self, stage: int, step: int, epoch: int, batch: int, modules: dict, optimizer, scheduler) -> None:
        """Saves a checkpoint when ``step`` is a save step (after checking the weights); prunes old ones."""
        if not self.save_steps or step % self.save_steps:
            return
        check_stage_weights(stage, modules, f"at step {step}")
        state = {"stage": stage, "step": step, "epoch": epoch, "step_in_epoch": batch + 1, **self.settings}
        save_checkpoint(checkpoint_dir(self.out, step), {k: m for k, m in modules.items() if m is not None},
                        optimizer, scheduler, state, tokenizer=self.tokenizer)
        prune_checkpoints(self.out, self.keep)


def check_stage_weights(stage: int, modules: dict, where: str) -> None:
    """Refuses to save nan or inf weights (the logged loss only sees the weights before the last update)."""
    try:
        check_finite_weights(modules, where, NONFINITE_HINT)
    except PocketQAError as e:
        raise PocketQAError(f"stage {stage} failed: {e}") from None


def logged_losses(stage: int, step_losses: list, first_step: int) -> list[float]:
    """The per-step device losses as floats (one transfer); refuses a non-finite one, naming its step."""
    import torch

    values = torch.stack(step_losses).float().cpu().tolist() if step_losses else []
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:
        raise PocketQAError(
            f"stage {stage} loss became {values[bad]} at step {first_step + bad}; {NONFINITE_HINT}"
        )
    return values


def train_mode(device, *modules) -> None:
    """float32 master weights (autocast does the low-precision math): AdamW on fp16 weights
    turns them inf/nan within a step or two (its eps and small squared gradients underflow)."""
    import torch

    for module in modules:
        if module is not None:
            module.to(device=device, dtype=torch.float32).train()


def optimizer_step(optimizer, scheduler, params, max_grad_norm: float) -> None:
    import torch

    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()


def stage1_inputs(data, idx, names, s_names, t_names, pad_id, device, bridge):
    """(student batch, its mask, teacher batch, teacher mask, gather index or None) of one batch."""
    import torch

    cpu = {k: torch.from_numpy(v) for k, v in collate(data, idx, pad_id, names).items()}
    moved = {k: to_device(cpu[k], device) for k in {*names, "attention_mask"}}
    batch, mask = {k: moved[k] for k in s_names}, moved["attention_mask"].bool()
    if bridge is None:
        return batch, mask, {k: moved[k] for k in t_names}, mask, None
    # built from the CPU copy: the bridge's row checks would sync on a GPU
    t_cpu, index = bridge.teacher_batch(cpu)
    t_batch = {k: to_device(t_cpu[k], device) for k in t_names if k in t_cpu}
    return batch, mask, t_batch, t_batch["attention_mask"].bool(), to_device(index, device)


def teacher_targets(teacher, taps, t_batch, t_mask, index, layer_map, attention_target, bridge, device, precision):
    """The teacher's hidden states and attention targets of the mapped layers, on student positions."""
    import torch

    with torch.no_grad(), autocast(device, precision):
        t_hidden = teacher.base_model(**t_batch, output_hidden_states=True).hidden_states
        t_att = {t: taps[1].attention(t, t_mask, attention_target) for s, t in layer_map if s > 0} if taps else {}
        if index is not None:
            t_hidden = {t: bridge.gather(t_hidden[t], index, dim=1) for _, t in layer_map}
            t_att = {t: bridge.gather(bridge.gather(a, index, dim=2), index, dim=3) for t, a in t_att.items()}
    return t_hidden, t_att


def embeds_dropout_hook(student, p: float):
    """Dropout on the QA head's input while training (Haystack's ``embeds_dropout_prob``); None for 0."""
    import torch

    if p <= 0:
        return None
    # The linear layer that gives the start/end logits: qa_outputs in BERT-style models,
    # classifier in ModernBERT's (after its own dense + norm head).
    head = getattr(student, "qa_outputs", None) or getattr(student, "classifier", None)
    if head is None:
        raise ConfigError(f"embeds_dropout needs a 'qa_outputs' or 'classifier' head; {type(student).__name__} has "
                          "none (set embeds_dropout: 0)")
    return head.register_forward_pre_hook(
        lambda module, args: (torch.nn.functional.dropout(args[0], p, module.training), *args[1:])
    )


def stage2_inputs(data, idx, logits: TeacherLogits, mask, names, pad_id, device):
    """(student batch, answer-position mask, teacher start/end logits, attention mask, starts, ends)."""
    arrays = collate(data, idx, pad_id, names)
    width = arrays["input_ids"].shape[1]
    batch = {k: to_device(arrays[k], device) for k in names}
    valid = to_device(gather_rows(mask, data, idx, width, False), device)
    t_start = to_device(gather_rows(logits.start, data, idx, width).astype(np.float32), device)
    t_end = to_device(gather_rows(logits.end, data, idx, width).astype(np.float32), device)
    positions = [to_device(arrays[k], device) for k in ("attention_mask", "start_positions", "end_positions")]
    return batch, valid, t_start, t_end, *positions


def resume_point(resume: str | None, stage_setting: str, out: Path, stage1_dir: Path) -> tuple[int | None, Path | None]:
    """(stage, checkpoint) that ``resume`` continues, or (None, None) for a fresh run.

    "latest" is the newest checkpoint of the stage that was running: stage 2's (under
    ``out``) when there is one and stage 2 is run, else stage 1's (under ``stage1_dir``).
    """
    if not resume:
        return None, None
    runs = {1: stage_setting in ("1", "both"), 2: stage_setting in ("2", "both")}
    if resume != "latest":
        path = resolve_checkpoint(out, resume)
        stage = read_checkpoint_state(path).get("stage")
        if not runs.get(stage):
            raise PocketQAError(f"--resume {path}: a stage {stage} checkpoint, but --stage is {stage_setting}")
        return stage, path
    if runs[2] and list_checkpoints(out):
        return 2, list_checkpoints(out)[-1]
    if runs[1] and list_checkpoints(stage1_dir):
        return 1, list_checkpoints(stage1_dir)[-1]
    where = " or ".join(str(d / CHECKPOINTS_DIR) for d, run in ((out, runs[2]), (stage1_dir, runs[1])) if run)
    raise PocketQAError(f"--resume: no checkpoint under {where}; start again with --overwrite")


def forget_stage_after(log_path: Path, stage: int, step: int) -> None:
    """Drops the log records of ``stage`` after ``step``: the resumed run logs those steps again."""
    if not log_path.is_file():
        return
    lines = log_path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut off by the kill
            continue
        if record.get("stage") != stage or record.get("step", 0) <= step:
            kept.append(line)
    tmp = log_path.with_name(log_path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, log_path)
