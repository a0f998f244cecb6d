"""The two TinyBERT distillation stages, each one visible loop (``pocketqa distill`` runs them).

Stage 1 (intermediate layers, TinyBERT §3.1): the student imitates the teacher's embedding
output, hidden states and attention matrices of mapped layers (MSE), through a learned
projection when widths differ. Stage 2 (prediction layer): the student imitates the
teacher's cached start/end distributions (KL over context + CLS) mixed with the span loss.
The command around them (models, data, resume, saving) is ``pocketqa.recipes.distill``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pocketqa.data.batching import batch_order, epoch_seed
from pocketqa.data.cache import TrainData
from pocketqa.inference.backends import model_input_names
from pocketqa.training.attention import QueryKeyTap
from pocketqa.training.losses import attention_mse, hidden_mse, masked_kl_div, mix_losses, span_loss
from pocketqa.training.optim import build_optimizer, build_scheduler, total_steps, warmup_steps_for
from pocketqa.training.precision import autocast
from pocketqa.training.runlog import LossMeter, progress_bar
from pocketqa.training.stage_steps import (
    StageCheckpoints,
    embeds_dropout_hook,
    logged_losses,
    optimizer_step,
    stage1_inputs,
    stage2_inputs,
    teacher_targets,
    train_mode,
)
from pocketqa.training.teacher_cache import (
    TeacherLogits,
)


if TYPE_CHECKING:
    from pocketqa.training.bridge import VocabBridge


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
    train_mode(device, student, projection)
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
                batch, mask, t_batch, t_mask, index = stage1_inputs(data, idx, names, s_names, t_names, pad_id, device, bridge)
                t_hidden, t_att = teacher_targets(
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
                optimizer_step(optimizer, scheduler, params, max_grad_norm)
                step += 1
                meter.add(loss)
                meter.end_step()
                step_losses.append(loss.detach())
                if step % log_steps == 0 or step == total:
                    losses += logged_losses(1, step_losses, step - len(step_losses) + 1)
                    step_losses.clear()
                    mean, lr = meter.mean(), scheduler.get_last_lr()[0]
                    log(stage=1, epoch=epoch, step=step, loss=mean, hidden=hid.item(), attention=att.item(), lr=lr)
                    bar.set_postfix(loss=f"{mean:.4f}")
                bar.update(1)
                ckpt.save(1, step, epoch, b, modules, optimizer, scheduler)
            epoch, start_batch = epoch + 1, 0
        losses += logged_losses(1, step_losses, step - len(step_losses) + 1)
    finally:
        if taps:
            for tap in taps:
                tap.close()
        bar.close()
    student.eval()
    return losses


# -- stage 2: prediction layer ---------------------------------------------------------


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
    train_mode(device, student)
    names = model_input_names(student)
    total = total_steps(len(data), batch_size, epochs, max_steps)
    optimizer = build_optimizer(student, learning_rate, weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps_for(warmup, total), total)
    modules = {"model": student}
    ckpt = checkpoints or StageCheckpoints(Path("."))
    step, epoch, start_batch = ckpt.restore(2, modules, optimizer, scheduler)
    hook = embeds_dropout_hook(student, embeds_dropout)
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
                batch, valid, t_start, t_end, batch_mask, starts, ends = stage2_inputs(
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
                optimizer_step(optimizer, scheduler, student.parameters(), max_grad_norm)
                step += 1
                meter.add(loss)
                meter.end_step()
                step_losses.append(loss.detach())
                if step % log_steps == 0 or step == total:
                    losses += logged_losses(2, step_losses, step - len(step_losses) + 1)
                    step_losses.clear()
                    mean, lr = meter.mean(), scheduler.get_last_lr()[0]
                    log(stage=2, epoch=epoch, step=step, loss=mean, kd=kd.item(), span=hard.item(), lr=lr)
                    bar.set_postfix(loss=f"{mean:.4f}")
                bar.update(1)
                ckpt.save(2, step, epoch, b, modules, optimizer, scheduler)
            epoch, start_batch = epoch + 1, 0
        losses += logged_losses(2, step_losses, step - len(step_losses) + 1)
    finally:
        if hook is not None:
            hook.remove()
        bar.close()
    student.eval()
    return losses
