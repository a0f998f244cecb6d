"""TinyBERT two-stage distillation of an extractive-QA teacher into a smaller student.

Stage 1 (intermediate layers, TinyBERT §3.1): the student imitates the teacher's
embedding output, hidden states and attention matrices of mapped layers (MSE); a learned
linear projection W_h bridges different widths. Stage 2 (prediction layer): the student
imitates the teacher's start/end distributions (KL with temperature, over context + CLS
positions only) mixed with the hard span loss. Each stage has its own visible loop.

Fixed here, compared with the anchors:
- the projection is created *before* the optimizer and is in it, so it trains (Haystack's
  DistillationLoss makes its dim_mappings after ``initialize_optimizer``: they never move),
  and it is saved next to the student (``distill_projection.safetensors``);
- the KL ignores question and padding positions (Haystack softmaxes the whole window);
- teacher logits are computed once and memory-mapped from a cache keyed by what they
  depend on, instead of running the teacher every step of every epoch;
- mismatched tokenizers, head counts or layer counts are reported up front, all at once;
- a teacher whose tokenizer numbers the same word pieces differently (all-mpnet-base-v2 for
  a BERT-uncased student) is run through a :class:`~pocketqa.training.bridge.VocabBridge`:
  it sees the student's windows with ids mapped and its own special tokens, and its logits,
  hidden states and attention maps are gathered back onto student positions, so every loss
  keeps the student's masks and shapes.

See docs/distillation.md for the choices and the numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pocketqa.data.batching import batch_order, collate, epoch_seed, to_device
from pocketqa.data.cache import TrainData, load_train_features
from pocketqa.data.features import WindowConfig
from pocketqa.data.squad import load_squad
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.evaluation.scoring import evaluate_model
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.backends import model_input_names
from pocketqa.modeldir import META_FILE, update_meta
from pocketqa.models import (
    build_student,
    error_line,
    load_qa_model,
    load_tokenizer,
    resolve_model,
    save_student,
)
from pocketqa.recipes.configs import DistillConfig
from pocketqa.training.attention import QueryKeyTap
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
from pocketqa.training.losses import attention_mse, hidden_mse, masked_kl_div, mix_losses, span_loss
from pocketqa.training.optim import build_optimizer, build_scheduler, total_steps, warmup_steps_for
from pocketqa.training.pairing import bridge_samples, check_pair, plan_vocabulary
from pocketqa.training.precision import autocast, resolve_precision
from pocketqa.training.runlog import LOG_FILE, LossMeter, RunLog, progress_bar
from pocketqa.training.teacher_cache import (
    TeacherLogits,
    answer_mask,
    cache_key_parts,
    default_cache_root,
    gather_rows,
    model_fingerprint,
    state_dict_fingerprint,
    teacher_logits,
)

if TYPE_CHECKING:
    from pocketqa.training.bridge import VocabBridge


# -- data -------------------------------------------------------------------------------


def load_data(
    paths: Sequence[str | os.PathLike],
    tokenizer,
    window: WindowConfig,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainData:
    """Training windows of one or more SQuAD files, concatenated in order.

    Each file goes through :func:`pocketqa.data.cache.load_train_features`, so its windows
    are tokenised once and read back from the feature cache on later runs.
    """
    parts = [load_train_features(p, tokenizer, window, cache_dir=cache_dir, progress=progress) for p in paths]
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(d.input_ids) for d in parts[:-1]])
    examples = np.cumsum([0] + [d.n_examples for d in parts[:-1]])
    types = [d.token_type_ids for d in parts]
    return TrainData(
        input_ids=np.concatenate([d.input_ids for d in parts]),
        token_type_ids=None if any(t is None for t in types) else np.concatenate(types),
        row_starts=np.concatenate([d.row_starts + o for d, o in zip(parts, offsets)]),
        lengths=np.concatenate([d.lengths for d in parts]),
        start_positions=np.concatenate([d.start_positions for d in parts]),
        end_positions=np.concatenate([d.end_positions for d in parts]),
        example_index=np.concatenate([d.example_index + e for d, e in zip(parts, examples)]),
        n_examples=int(sum(d.n_examples for d in parts)),
        data_sha256=hashlib.sha256("".join(d.data_sha256 for d in parts).encode()).hexdigest(),
    )


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
        _check_weights(stage, modules, f"at step {step}")
        state = {"stage": stage, "step": step, "epoch": epoch, "step_in_epoch": batch + 1, **self.settings}
        save_checkpoint(checkpoint_dir(self.out, step), {k: m for k, m in modules.items() if m is not None},
                        optimizer, scheduler, state, tokenizer=self.tokenizer)
        prune_checkpoints(self.out, self.keep)


def _check_weights(stage: int, modules: dict, where: str) -> None:
    """Refuses to save nan or inf weights (the logged loss only sees the weights before the last update)."""
    try:
        check_finite_weights(modules, where, NONFINITE_HINT)
    except PocketQAError as e:
        raise PocketQAError(f"stage {stage} failed: {e}") from None


def _logged_losses(stage: int, step_losses: list, first_step: int) -> list[float]:
    """The per-step device losses as floats (one transfer); refuses a non-finite one, naming its step."""
    import torch

    values = torch.stack(step_losses).float().cpu().tolist() if step_losses else []
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:
        raise PocketQAError(
            f"stage {stage} loss became {values[bad]} at step {first_step + bad}; {NONFINITE_HINT}"
        )
    return values


def _train_mode(device, *modules) -> None:
    """float32 master weights (autocast does the low-precision math): AdamW on fp16 weights
    turns them inf/nan within a step or two (its eps and small squared gradients underflow)."""
    import torch

    for module in modules:
        if module is not None:
            module.to(device=device, dtype=torch.float32).train()


def _optimizer_step(optimizer, scheduler, params, max_grad_norm: float) -> None:
    import torch

    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()


def _stage1_inputs(data, idx, names, s_names, t_names, pad_id, device, bridge):
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


def _teacher_targets(teacher, taps, t_batch, t_mask, index, layer_map, attention_target, bridge, device, precision):
    """The teacher's hidden states and attention targets of the mapped layers, on student positions."""
    import torch

    with torch.no_grad(), autocast(device, precision):
        t_hidden = teacher.base_model(**t_batch, output_hidden_states=True).hidden_states
        t_att = {t: taps[1].attention(t, t_mask, attention_target) for s, t in layer_map if s > 0} if taps else {}
        if index is not None:
            t_hidden = {t: bridge.gather(t_hidden[t], index, dim=1) for _, t in layer_map}
            t_att = {t: bridge.gather(bridge.gather(a, index, dim=2), index, dim=3) for t, a in t_att.items()}
    return t_hidden, t_att


# -- stage 1: intermediate layers ------------------------------------------------------


def distill_intermediate(
    student,
    teacher,
    data: TrainData,
    layer_map: Sequence[tuple[int, int]],
    projection=None,
    attention_target: str | None = "scores",
    epochs: int = 5,
    learning_rate: float = 5e-5,
    batch_size: int = 26,
    warmup: float = 0.2,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    max_steps: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    pad_id: int = 0,
    seed: int = 42,
    log: Callable[..., None] = lambda **_: None,
    log_steps: int = 10,
    progress: bool = True,
    bridge: VocabBridge | None = None,
    checkpoints: StageCheckpoints | None = None,
) -> list[float]:
    """TinyBERT stage 1: the student's embeddings, hidden states and attentions imitate the teacher's.

    loss = Σ_(s,t) hidden_mse(H_s W_h, H_t, real tokens)   over the layer map (0 = embeddings)
         + Σ_(s,t), s>0 attention_mse(A_s, A_t, real tokens)  (unless attention_target is None)

    Args:
        student / teacher: QA models (only their encoders run); the teacher stays frozen.
        data: Training windows (labels unused).
        layer_map: (student, teacher) hidden-state indices, e.g. [(0, 0), (1, 2), (2, 4)].
        projection: ``nn.Linear(student_width, teacher_width)`` when the widths differ; it
            is in the optimizer with the student, so it trains.
        attention_target: "scores" (pre-softmax), "probs" (post-softmax), or None.
        max_steps: Steps of the stage; when given it overrides ``epochs``.
        bridge: When the teacher numbers tokens differently: it runs on
            ``bridge.teacher_batch`` of each student batch, and its hidden states
            (sequence dim 1) and attention maps (query dim 2, key dim 3) are gathered back
            onto student positions. A teacher "probs" row keeps its mass on the extra
            separator the gather drops, so it sums to slightly under 1; "scores" are exact.
        checkpoints: Where to save resumable checkpoints (student and projection), and the
            one to resume from; None saves none.

    The logged loss is the mean over the steps since the last log step, read from the
    device once per log step; a nan or inf loss is caught then (or at the end), naming the
    step where it first appeared.

    Returns:
        The loss of every step this call ran (after the resumed step, when resuming).
    """
    import torch


    torch.manual_seed(seed)
    _train_mode(device, student, projection)
    teacher.to(device).eval().requires_grad_(False)
    extra = list(projection.parameters()) if projection is not None else []
    total = total_steps(len(data), batch_size, epochs, max_steps)
    optimizer = build_optimizer(student, learning_rate, weight_decay, extra_params=extra)
    scheduler = build_scheduler(optimizer, warmup_steps_for(warmup, total), total)
    modules = {"model": student, "projection": projection}
    ckpt = checkpoints or StageCheckpoints(Path("."))
    step, epoch, start_batch = ckpt.restore(1, {k: m for k, m in modules.items() if m is not None}, optimizer, scheduler)
    s_names, t_names = model_input_names(student.base_model), model_input_names(teacher.base_model)
    # Same vocabulary: one batch serves both. Bridged: the teacher's comes from the student's.
    names = sorted(set(s_names) | ({"attention_mask"} if bridge else set(t_names)))
    taps = None
    if attention_target is not None:
        taps = (QueryKeyTap(student, student.config.num_attention_heads), QueryKeyTap(teacher, teacher.config.num_attention_heads))
    params = list(student.parameters()) + extra
    losses: list[float] = []
    step_losses: list = []  # this stage's per-step losses since the last log step, on the device
    meter, bar = LossMeter(device), progress_bar(total, step, "stage 1: intermediate layers", progress)
    try:
        while step < total:
            batches = batch_order(data.lengths, batch_size, epoch_seed(seed, epoch))
            for b, idx in enumerate(batches):
                if b < start_batch:
                    continue
                if step >= total:
                    break
                batch, mask, t_batch, t_mask, index = _stage1_inputs(data, idx, names, s_names, t_names, pad_id, device, bridge)
                t_hidden, t_att = _teacher_targets(
                    teacher, taps, t_batch, t_mask, index, layer_map, attention_target, bridge, device, precision
                )
                with autocast(device, precision):
                    s_out = student.base_model(**batch, output_hidden_states=True)
                hid = sum(hidden_mse(s_out.hidden_states[s], t_hidden[t], projection, mask) for s, t in layer_map)
                att = torch.zeros((), device=mask.device)
                if taps:
                    for s, t in layer_map:
                        if s > 0:
                            att = att + attention_mse(taps[0].attention(s, mask, attention_target), t_att[t], mask)
                loss = hid + att
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                _optimizer_step(optimizer, scheduler, params, max_grad_norm)
                step += 1
                meter.add(loss)
                meter.end_step()
                step_losses.append(loss.detach())
                if step % log_steps == 0 or step == total:
                    losses += _logged_losses(1, step_losses, step - len(step_losses) + 1)
                    step_losses.clear()
                    mean, lr = meter.mean(), scheduler.get_last_lr()[0]
                    log(stage=1, epoch=epoch, step=step, loss=mean, hidden=hid.item(), attention=att.item(), lr=lr)
                    bar.set_postfix(loss=f"{mean:.4f}")
                bar.update(1)
                ckpt.save(1, step, epoch, b, modules, optimizer, scheduler)
            epoch, start_batch = epoch + 1, 0
        losses += _logged_losses(1, step_losses, step - len(step_losses) + 1)
    finally:
        if taps:
            for tap in taps:
                tap.close()
        bar.close()
    student.eval()
    return losses


# -- stage 2: prediction layer ---------------------------------------------------------


def _embeds_dropout_hook(student, p: float):
    """Dropout on the QA head's input while training (Haystack's ``embeds_dropout_prob``); None for 0."""
    import torch

    if p <= 0:
        return None
    head = getattr(student, "qa_outputs", None)
    if head is None:
        raise ConfigError(f"embeds_dropout needs a 'qa_outputs' head; {type(student).__name__} has none (set embeds_dropout: 0)")
    return head.register_forward_pre_hook(
        lambda module, args: (torch.nn.functional.dropout(args[0], p, module.training), *args[1:])
    )


def _stage2_inputs(data, idx, logits: TeacherLogits, mask, names, pad_id, device):
    """(student batch, answer-position mask, teacher start/end logits, attention mask, starts, ends)."""
    arrays = collate(data, idx, pad_id, names)
    width = arrays["input_ids"].shape[1]
    batch = {k: to_device(arrays[k], device) for k in names}
    valid = to_device(gather_rows(mask, data, idx, width, False), device)
    t_start = to_device(gather_rows(logits.start, data, idx, width).astype(np.float32), device)
    t_end = to_device(gather_rows(logits.end, data, idx, width).astype(np.float32), device)
    positions = [to_device(arrays[k], device) for k in ("attention_mask", "start_positions", "end_positions")]
    return batch, valid, t_start, t_end, *positions


def distill_prediction(
    student,
    logits: TeacherLogits,
    data: TrainData,
    mask: np.ndarray,
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    epochs: int = 5,
    learning_rate: float = 3e-5,
    batch_size: int = 26,
    warmup: float = 0.2,
    weight_decay: float = 0.01,
    max_grad_norm: float = 1.0,
    embeds_dropout: float = 0.0,
    max_steps: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    pad_id: int = 0,
    seed: int = 42,
    log: Callable[..., None] = lambda **_: None,
    log_steps: int = 10,
    progress: bool = True,
    checkpoints: StageCheckpoints | None = None,
) -> list[float]:
    """Stage 2: the student's start/end distributions imitate the (cached) teacher's.

    loss = w · ½(KL_T(start) + KL_T(end)) + (1 − w) · span_loss, with KL_T the
    :func:`~pocketqa.training.losses.masked_kl_div` over context tokens and CLS.

    Args:
        student: A QA model, trained in place.
        logits: The teacher's logits of ``data``'s windows.
        data: Training windows with labels.
        mask: :func:`answer_mask` of ``data`` (flat bool).
        embeds_dropout: Dropout on the encoder output right before the QA head while
            training (Haystack's ``embeds_dropout_prob``); 0 turns it off.
        max_steps: Steps of the stage; when given it overrides ``epochs``.
        checkpoints: Where to save resumable checkpoints, and the one to resume from.

    The logged loss is the mean over the steps since the last log step, read from the
    device once per log step; a nan or inf loss is caught then (or at the end), naming the
    step where it first appeared.

    Returns:
        The loss of every step this call ran (after the resumed step, when resuming).
    """
    import torch


    torch.manual_seed(seed)
    _train_mode(device, student)
    names = model_input_names(student)
    total = total_steps(len(data), batch_size, epochs, max_steps)
    optimizer = build_optimizer(student, learning_rate, weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps_for(warmup, total), total)
    modules = {"model": student}
    ckpt = checkpoints or StageCheckpoints(Path("."))
    step, epoch, start_batch = ckpt.restore(2, modules, optimizer, scheduler)
    hook = _embeds_dropout_hook(student, embeds_dropout)
    losses: list[float] = []
    step_losses: list = []  # per-step losses since the last log step, on the device
    meter, bar = LossMeter(device), progress_bar(total, step, "stage 2: prediction layer", progress)
    try:
        while step < total:
            batches = batch_order(data.lengths, batch_size, epoch_seed(seed, epoch))
            for b, idx in enumerate(batches):
                if b < start_batch:
                    continue
                if step >= total:
                    break
                batch, valid, t_start, t_end, batch_mask, starts, ends = _stage2_inputs(
                    data, idx, logits, mask, names, pad_id, device
                )
                with autocast(device, precision):
                    out = student(**batch)
                kd = (
                    masked_kl_div(out.start_logits, t_start, valid, temperature)
                    + masked_kl_div(out.end_logits, t_end, valid, temperature)
                ) / 2
                # Masked like train's loss: padding must not join the softmax, or the loss
                # would depend on how far each length-grouped batch happens to be padded.
                hard = span_loss(out.start_logits, out.end_logits, starts, ends, mask=batch_mask)
                loss = mix_losses(kd, hard, kd_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                _optimizer_step(optimizer, scheduler, student.parameters(), max_grad_norm)
                step += 1
                meter.add(loss)
                meter.end_step()
                step_losses.append(loss.detach())
                if step % log_steps == 0 or step == total:
                    losses += _logged_losses(2, step_losses, step - len(step_losses) + 1)
                    step_losses.clear()
                    mean, lr = meter.mean(), scheduler.get_last_lr()[0]
                    log(stage=2, epoch=epoch, step=step, loss=mean, kd=kd.item(), span=hard.item(), lr=lr)
                    bar.set_postfix(loss=f"{mean:.4f}")
                bar.update(1)
                ckpt.save(2, step, epoch, b, modules, optimizer, scheduler)
            epoch, start_batch = epoch + 1, 0
        losses += _logged_losses(2, step_losses, step - len(step_losses) + 1)
    finally:
        if hook is not None:
            hook.remove()
        bar.close()
    student.eval()
    return losses


# -- the command -----------------------------------------------------------------------


def _preflight(cfg: DistillConfig) -> None:
    problems = []
    for p in [*cfg.train, *cfg.stage1_train, *([cfg.dev] if cfg.dev else [])]:
        if not Path(p).is_file():
            problems.append(f"{p}: no such data file")
    out = Path(cfg.out)
    if cfg.resume and cfg.overwrite:
        problems.append("--resume continues the run in --out and --overwrite deletes it; pass one of them")
    if out.is_file():
        problems.append(f"{out} is a file; --out must be a directory")
    elif out.exists() and any(out.iterdir()) and not cfg.overwrite and not cfg.resume:
        problems.append(f"{out} exists and is not empty; pass --overwrite or choose another --out (or --resume to continue it)")
    if problems:
        raise ConfigError("; ".join(problems))


def _resume_point(cfg: DistillConfig, out: Path, stage1_dir: Path) -> tuple[int | None, Path | None]:
    """(stage, checkpoint) that ``cfg.resume`` continues, or (None, None) for a fresh run.

    "latest" is the newest checkpoint of the stage that was running: stage 2's (under
    ``out``) when there is one and stage 2 is run, else stage 1's (under ``stage1_dir``).
    """
    if not cfg.resume:
        return None, None
    runs = {1: cfg.stage in ("1", "both"), 2: cfg.stage in ("2", "both")}
    if cfg.resume != "latest":
        path = resolve_checkpoint(out, cfg.resume)
        stage = read_checkpoint_state(path).get("stage")
        if not runs.get(stage):
            raise PocketQAError(f"--resume {path}: a stage {stage} checkpoint, but --stage is {cfg.stage}")
        return stage, path
    if runs[2] and list_checkpoints(out):
        return 2, list_checkpoints(out)[-1]
    if runs[1] and list_checkpoints(stage1_dir):
        return 1, list_checkpoints(stage1_dir)[-1]
    where = " or ".join(str(d / CHECKPOINTS_DIR) for d, run in ((out, runs[2]), (stage1_dir, runs[1])) if run)
    raise PocketQAError(f"--resume: no checkpoint under {where}; start again with --overwrite")


def _forget_after(log_path: Path, stage: int, step: int) -> None:
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


def _stage_checkpoints(cfg: DistillConfig, stage_out: Path, resume_from, tokenizer, data, epochs: int) -> StageCheckpoints:
    settings = {"data_sha256": data.data_sha256, "batch_size": cfg.batch_size, "window": cfg.window().to_dict(),
                "seed": cfg.seed, "epochs": epochs, "max_steps": cfg.max_steps}
    return StageCheckpoints(stage_out, cfg.save_steps, cfg.keep_checkpoints, resume_from, tokenizer, settings)


def distill(cfg: DistillConfig, progress: bool = True, load_teacher: Callable[[str, str], object] | None = None) -> dict:
    """Runs stage 1, stage 2 or both as configured; returns a summary (also in pocketqa.json).

    Stage 1 alone writes its student to ``out``; both stages write stage 1 to
    ``out/stage1`` and the final student to ``out``; stage 2 starts from stage 1's
    student. Everything that can be checked before training is, and reported at once.
    When the tokenizers number tokens differently, ``cfg.bridge`` decides (see
    :func:`plan_vocabulary`); the summary's ``bridge`` says which bridge was used, if any.

    Args:
        cfg: The configuration.
        progress: Show tqdm bars.
        load_teacher: ``(path, device) -> model``; default :func:`load_qa_model` (tests
            pass a counting wrapper).
    """
    import torch
    from transformers import AutoConfig

    _preflight(cfg)
    if cfg.dev:

        load_squad(cfg.dev)  # a malformed dev file fails now, not after both stages have trained
    load_teacher = load_teacher or (lambda path, device: load_qa_model(path, device=device, dtype=torch.float32))
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.precision, device)
    window = cfg.window()
    out = Path(cfg.out)
    teacher_path = resolve_model(cfg.teacher)
    try:
        teacher_config = AutoConfig.from_pretrained(teacher_path)
    except Exception as e:  # noqa: BLE001 - OSError (no such dir or hub id), ValueError (bad config.json)...
        raise PocketQAError(f"cannot load a teacher from {cfg.teacher!r}: {error_line(e)}") from None
    teacher_tok = load_tokenizer(teacher_path)
    if cfg.student:
        student_path = resolve_model(cfg.student)
        student, student_info = load_qa_model(student_path, dtype=torch.float32), {"checkpoint": str(cfg.student)}
    else:
        student_path = resolve_model(cfg.student_base or cfg.teacher)
        student, student_info = build_student(
            student_path, cfg.student_layers, cfg.hidden, cfg.heads, cfg.intermediate, seed=cfg.seed
        )
    tokenizer = load_tokenizer(student_path)
    run_stage1, run_stage2 = cfg.stage in ("1", "both"), cfg.stage in ("2", "both")
    stage1_dir = out / "stage1" if run_stage1 and run_stage2 else out
    resume_stage, resume_from = _resume_point(cfg, out, stage1_dir)
    run_stage1 = run_stage1 and resume_stage != 2  # a run killed in stage 2 does not redo stage 1
    attention = cfg.attention_loss and run_stage1
    teacher = load_teacher(teacher_path, device) if run_stage1 else None
    needs_bridge = cfg.bridge == "auto" and teacher_tok.get_vocab() != tokenizer.get_vocab()
    samples = bridge_samples(cfg.train) if needs_bridge else []
    bridge, vocab_problem = plan_vocabulary(teacher_tok, tokenizer, cfg.bridge, samples)
    layer_map = check_pair(
        teacher_config, student.config, teacher_tok, tokenizer, cfg.layer_map, attention, run_stage1,
        teacher_model=teacher, student_model=student, bridge=bridge, vocab_problem=vocab_problem,
    )
    stage1_files = cfg.stage1_train or cfg.train
    stage1_data = load_data(stage1_files, tokenizer, window, cfg.cache_dir, progress) if run_stage1 else None
    stage2_data = None
    if run_stage2:
        same = stage1_data is not None and stage1_files == cfg.train
        stage2_data = stage1_data if same else load_data(cfg.train, tokenizer, window, cfg.cache_dir, progress)
    # Only now, with models and data loaded, is ``out`` touched: bad input leaves an earlier run intact.
    if cfg.overwrite and out.is_dir():
        for name in (LOG_FILE, META_FILE):
            (out / name).unlink(missing_ok=True)
        for stage_out in {out, stage1_dir}:
            shutil.rmtree(stage_out / CHECKPOINTS_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        _forget_after(out / LOG_FILE, resume_stage, read_checkpoint_state(resume_from)["step"])
    log = RunLog(out / LOG_FILE)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    recipe = asdict(cfg)
    summary: dict = {
        "student": student_info, "teacher": str(cfg.teacher), "device": device, "precision": precision,
        "bridge": bridge.describe() if bridge is not None else None,
    }

    if run_stage1:
        data, stage1_data = stage1_data, None  # one reference: freed when stage 2 rebinds ``data``
        projection = None
        if student.config.hidden_size != teacher_config.hidden_size:
            torch.manual_seed(cfg.seed)
            projection = torch.nn.Linear(student.config.hidden_size, teacher_config.hidden_size)
        t0 = time.perf_counter()
        losses = distill_intermediate(
            student, teacher, data, layer_map, projection,
            attention_target=cfg.attention_target if attention else None,
            epochs=cfg.stage1_epochs, learning_rate=cfg.stage1_learning_rate, batch_size=cfg.batch_size,
            warmup=cfg.warmup, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            max_steps=cfg.max_steps, device=device, precision=precision, pad_id=pad_id, seed=cfg.seed,
            log=log, log_steps=cfg.log_steps, progress=progress, bridge=bridge,
            checkpoints=_stage_checkpoints(cfg, stage1_dir, resume_from if resume_stage == 1 else None,
                                           tokenizer, data, cfg.stage1_epochs),
        )
        teacher = None  # free its memory before stage 2
        summary["stage1"] = {
            "windows": len(data), "steps": len(losses), "seconds": round(time.perf_counter() - t0, 1),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "layer_map": [list(p) for p in layer_map], "projection": projection is not None,
            "attention": cfg.attention_target if attention else None,
        }
        meta = {"recipe": recipe, "window": window.to_dict(), "distill": {"stage": 1, **summary}}
        _check_weights(1, {"model": student, "projection": projection}, "at the end")
        save_student(student, tokenizer, stage1_dir, meta, projection=projection)

    if run_stage2:
        data = stage2_data
        teacher_sha = model_fingerprint(teacher_path)
        held = {}
        if teacher_sha is None:  # a hub id: hash the loaded tensors instead of files
            held["teacher"] = load_teacher(teacher_path, "cpu")
            teacher_sha = state_dict_fingerprint(held["teacher"])

        def get_teacher():
            model = held.pop("teacher", None) or load_teacher(teacher_path, device)
            return model.to(device).eval()

        parts = cache_key_parts(cfg.teacher, teacher_sha, tokenizer, cfg.train, window, data, precision, bridge, teacher_tok)
        cache_root = Path(cfg.cache_dir) / "teacher-logits" if cfg.cache_dir else default_cache_root()
        t0 = time.perf_counter()
        logits = teacher_logits(
            data, parts, cache_root, get_teacher, cfg.teacher_batch_size, device, precision, pad_id, progress, bridge
        )
        held.clear()
        if logits.reason:
            print(f"pocketqa distill: teacher-logit {logits.reason}; recomputed")
        cache_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        losses = distill_prediction(
            student, logits, data, answer_mask(data, tokenizer), temperature=cfg.temperature,
            kd_weight=cfg.kd_weight, epochs=cfg.stage2_epochs, learning_rate=cfg.stage2_learning_rate,
            batch_size=cfg.batch_size, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm, embeds_dropout=cfg.embeds_dropout, max_steps=cfg.max_steps,
            device=device, precision=precision, pad_id=pad_id, seed=cfg.seed, log=log,
            log_steps=cfg.log_steps, progress=progress,
            checkpoints=_stage_checkpoints(cfg, out, resume_from if resume_stage == 2 else None,
                                           tokenizer, data, cfg.stage2_epochs),
        )
        summary["stage2"] = {
            "windows": len(data), "steps": len(losses), "seconds": round(time.perf_counter() - t0, 1),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "teacher_cache": {
                "status": logits.status, "key": logits.key, "path": str(logits.path),
                "seconds": round(cache_seconds, 1), "reason": logits.reason,
            },
        }
        meta = {"recipe": recipe, "window": window.to_dict(), "distill": {"stage": 2, **summary}}
        _check_weights(2, {"model": student}, "at the end")
        save_student(student, tokenizer, out, meta)
        if cfg.dev:

            qa = QuestionAnswerer.from_pretrained(str(out), device=device, threshold=0.0)
            summary["dev"] = evaluate_model(qa, cfg.dev, save_threshold=True, model_arg=str(out))["scores"]
            update_meta(out, metrics=summary["dev"], distill={"stage": 2, **summary})
    summary["out"] = str(out)
    return summary
