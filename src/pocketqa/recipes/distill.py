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
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from pocketqa.inference.backends import model_input_names
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.recipes.configs import DistillConfig
from pocketqa.data.features import WindowConfig
from pocketqa.models import build_student, error_line, load_qa_model, load_tokenizer, resolve_model, save_student
from pocketqa.modeldir import META_FILE, update_meta
from pocketqa.data.batching import batch_order, collate, epoch_seed, to_device
from pocketqa.data.cache import TrainData, load_train_features
from pocketqa.training.guards import nonfinite_parameter
from pocketqa.training.optim import build_optimizer, build_scheduler, warmup_steps_for
from pocketqa.training.runlog import LOG_FILE, RunLog
from pocketqa.training.attention import QueryKeyTap
from pocketqa.training.pairing import bridge_samples, check_pair, plan_vocabulary
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
    import torch

    from pocketqa.training.bridge import VocabBridge


# -- data (stage 1 and 2) --------------------------------------------------------------


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


# -- shared loop pieces ----------------------------------------------------------------


def _autocast(device, precision: str):
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _resolve_precision(precision: str, device: str) -> str:
    import torch

    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _train_in_float32(device: str, *modules) -> None:
    """Puts each module (None skipped) on ``device`` in float32 and train mode.

    float32 master weights, whatever the precision (autocast does the low-precision math):
    AdamW on fp16 weights turns them inf/nan within a step or two (its eps and small
    squared gradients underflow).
    """
    import torch

    for module in modules:
        if module is not None:
            module.to(device=device, dtype=torch.float32).train()


def _progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` steps; with ``enabled`` False one that shows nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled)


def _drain(pending: list, losses: list[float], stage: int, first_step: int) -> None:
    """Moves per-step device losses into ``losses`` in one transfer; refuses a non-finite one.

    Args:
        pending: 0-d device tensors of the steps since the last drain (emptied here).
        losses: Python floats of all earlier steps (extended here).
        stage: 1 or 2, for the message.
        first_step: The 1-based step number of ``pending[0]``.

    Raises:
        PocketQAError: naming the first step whose loss was nan or inf.
    """
    import torch

    if not pending:
        return
    values = torch.stack(pending).float().cpu().tolist()
    pending.clear()
    losses.extend(values)
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:
        raise PocketQAError(
            f"stage {stage} loss became {values[bad]} at step {first_step + bad}; lower the learning rate or "
            "use --precision fp32"
        )


def _check_finite_weights(stage: int, student, projection=None) -> None:
    """Refuses to save weights with nan or inf (the loss checks only see the loss before the last update)."""
    for prefix, module in (("", student), ("projection ", projection)):
        if module is not None and (name := nonfinite_parameter(module)) is not None:
            raise PocketQAError(
                f"stage {stage} left {prefix}weight {name} nan or inf; stopped before saving bad weights. "
                "lower the learning rate or use --precision fp32"
            )


def _total_steps(n_windows: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    total = math.ceil(n_windows / batch_size) * epochs
    return min(total, max_steps) if max_steps else total


# -- stage 1: intermediate layers ------------------------------------------------------


class _Stage1Batch(NamedTuple):
    inputs: dict[str, torch.Tensor]  # the student's model inputs
    mask: torch.Tensor  # [batch, seq_len] bool, True at the student's real tokens
    t_inputs: dict[str, torch.Tensor]  # the teacher's model inputs
    t_mask: torch.Tensor  # [batch, teacher_seq_len] bool, True at the teacher's real tokens
    index: torch.Tensor | None  # bridged: [batch, seq_len] teacher position of each student position


def _stage1_batcher(student, teacher, data: TrainData, pad_id: int, device: str, bridge: VocabBridge | None):
    """Returns ``batch(indices) -> _Stage1Batch``: the windows ``indices`` for both models, on ``device``.

    With the same vocabulary one collated batch serves both models; with a bridge the
    teacher's batch is made from the student's by :meth:`VocabBridge.teacher_batch`.
    """
    import torch

    s_names, t_names = model_input_names(student.base_model), model_input_names(teacher.base_model)
    names = sorted(set(s_names) | ({"attention_mask"} if bridge else set(t_names)))

    def batch(indices: np.ndarray) -> _Stage1Batch:
        cpu = {k: torch.from_numpy(v) for k, v in collate(data, indices, pad_id, names).items()}
        moved = {k: to_device(cpu[k], device) for k in {*names, "attention_mask"}}
        inputs, mask = {k: moved[k] for k in s_names}, moved["attention_mask"].bool()
        if bridge is None:
            return _Stage1Batch(inputs, mask, {k: moved[k] for k in t_names}, mask, None)
        t_cpu, index = bridge.teacher_batch(cpu)  # from the CPU copy: the bridge's row checks would sync on a GPU
        t_inputs = {k: to_device(t_cpu[k], device) for k in t_names if k in t_cpu}
        return _Stage1Batch(inputs, mask, t_inputs, t_inputs["attention_mask"].bool(), to_device(index, device))

    return batch


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
        bridge: When the teacher numbers tokens differently: it runs on
            ``bridge.teacher_batch`` of each student batch, and its hidden states
            (sequence dim 1) and attention maps (query dim 2, key dim 3) are gathered back
            onto student positions. A teacher "probs" row keeps its mass on the extra
            separator the gather drops, so it sums to slightly under 1; "scores" are exact.

    Losses stay on the device between log steps (one GPU sync per ``log_steps``, not per
    step), so a nan or inf loss is caught at the next log step or at the end, naming the
    step where it first appeared.

    Returns:
        The loss of every step.
    """
    import torch

    from pocketqa.training.losses import attention_mse, hidden_mse

    torch.manual_seed(seed)
    _train_in_float32(device, student, projection)
    teacher.to(device).eval().requires_grad_(False)
    extra = list(projection.parameters()) if projection is not None else []
    params = list(student.parameters()) + extra
    total = _total_steps(len(data), batch_size, epochs, max_steps)
    optimizer = build_optimizer(student, learning_rate, weight_decay, extra_params=extra)
    scheduler = build_scheduler(optimizer, warmup_steps_for(warmup, total), total)
    make_batch = _stage1_batcher(student, teacher, data, pad_id, device, bridge)
    taps = [QueryKeyTap(m, m.config.num_attention_heads) for m in (student, teacher)] if attention_target is not None else []
    attended = [(s, t) for s, t in layer_map if s > 0] if taps else []  # embeddings (0) have no attention
    losses: list[float] = []
    pending: list = []  # this stage's per-step losses since the last log step, on the device
    bar = _progress_bar(total, "stage 1: intermediate layers", progress)
    try:
        step = 0
        for epoch in range(epochs):
            for idx in batch_order(data.lengths, batch_size, epoch_seed(seed, epoch)):
                if step >= total:
                    break
                b = make_batch(idx)
                with torch.no_grad(), _autocast(device, precision):
                    t_hidden = teacher.base_model(**b.t_inputs, output_hidden_states=True).hidden_states
                    t_att = {t: taps[1].attention(t, b.t_mask, attention_target) for _, t in attended}
                    if b.index is not None:  # bridged: back onto student positions
                        t_hidden = {t: bridge.gather(t_hidden[t], b.index, dim=1) for _, t in layer_map}
                        t_att = {t: bridge.gather(bridge.gather(a, b.index, dim=2), b.index, dim=3) for t, a in t_att.items()}
                with _autocast(device, precision):
                    s_hidden = student.base_model(**b.inputs, output_hidden_states=True).hidden_states
                hid = sum(hidden_mse(s_hidden[s], t_hidden[t], projection, b.mask) for s, t in layer_map)
                att = torch.zeros((), device=b.mask.device)
                for s, t in attended:
                    att = att + attention_mse(taps[0].attention(s, b.mask, attention_target), t_att[t], b.mask)
                loss = hid + att
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                pending.append(loss.detach())
                if step % log_steps == 0 or step == total:
                    _drain(pending, losses, stage=1, first_step=len(losses) + 1)
                    lr = scheduler.get_last_lr()[0]
                    log(stage=1, epoch=epoch, step=step, loss=losses[-1], hidden=hid.item(), attention=att.item(), lr=lr)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                bar.update(1)
        _drain(pending, losses, stage=1, first_step=len(losses) + 1)
    finally:
        for tap in taps:
            tap.close()
        bar.close()
    student.eval()
    return losses


# -- stage 2: prediction layer ---------------------------------------------------------


class _Stage2Batch(NamedTuple):
    inputs: dict[str, torch.Tensor]  # the student's model inputs
    t_start: torch.Tensor  # [batch, seq_len] float32 teacher start logits (0 past each window's end)
    t_end: torch.Tensor  # the same for end logits
    valid: torch.Tensor  # [batch, seq_len] bool: where an answer may be (context tokens and CLS)
    starts: torch.Tensor  # [batch] gold start positions
    ends: torch.Tensor  # [batch] gold end positions
    mask: torch.Tensor  # [batch, seq_len] attention mask (1 at real tokens)


def _stage2_batcher(student, logits: TeacherLogits, data: TrainData, answer_positions: np.ndarray, pad_id: int, device: str):
    """Returns ``batch(indices) -> _Stage2Batch``: the windows ``indices`` with the teacher's logits, on ``device``."""
    names = model_input_names(student)

    def batch(indices: np.ndarray) -> _Stage2Batch:
        arrays = collate(data, indices, pad_id, names)
        width = arrays["input_ids"].shape[1]
        return _Stage2Batch(
            inputs={k: to_device(arrays[k], device) for k in names},
            valid=to_device(gather_rows(answer_positions, data, indices, width, False), device),
            t_start=to_device(gather_rows(logits.start, data, indices, width).astype(np.float32), device),
            t_end=to_device(gather_rows(logits.end, data, indices, width).astype(np.float32), device),
            mask=to_device(arrays["attention_mask"], device),
            starts=to_device(arrays["start_positions"], device),
            ends=to_device(arrays["end_positions"], device),
        )

    return batch


def _embeds_dropout(student, p: float):
    """Dropout on the encoder output right before the QA head while training; the hook handle, or None for p = 0."""
    import torch

    if p <= 0:
        return None
    head = getattr(student, "qa_outputs", None)
    if head is None:
        raise ConfigError(f"embeds_dropout needs a 'qa_outputs' head; {type(student).__name__} has none (set embeds_dropout: 0)")
    return head.register_forward_pre_hook(
        lambda module, args: (torch.nn.functional.dropout(args[0], p, module.training), *args[1:])
    )


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
) -> list[float]:
    """Stage 2: the student's start/end distributions imitate the (cached) teacher's.

    loss = w · ½(KL_T(start) + KL_T(end)) + (1 − w) · span_loss, with KL_T the
    :func:`~pocketqa.training.losses.masked_kl_div` over context tokens and CLS.

    Args:
        student: A QA model, trained in place.
        logits: The teacher's logits of ``data``'s windows.
        data: Training windows with labels.
        mask: :func:`~pocketqa.training.teacher_cache.answer_mask` of ``data`` (flat bool).
        embeds_dropout: Dropout on the encoder output right before the QA head while
            training (Haystack's ``embeds_dropout_prob``); 0 turns it off.

    Losses stay on the device between log steps (one GPU sync per ``log_steps``, not per
    step, issue 4), so a nan or inf loss is caught at the next log step or at the end,
    naming the step where it first appeared.

    Returns:
        The loss of every step.
    """
    import torch

    from pocketqa.training.losses import masked_kl_div, mix_losses, span_loss

    torch.manual_seed(seed)
    _train_in_float32(device, student)
    total = _total_steps(len(data), batch_size, epochs, max_steps)
    optimizer = build_optimizer(student, learning_rate, weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps_for(warmup, total), total)
    make_batch = _stage2_batcher(student, logits, data, mask, pad_id, device)
    hook = _embeds_dropout(student, embeds_dropout)
    losses: list[float] = []
    pending: list = []  # per-step losses since the last log step, on the device
    bar = _progress_bar(total, "stage 2: prediction layer", progress)
    try:
        step = 0
        for epoch in range(epochs):
            for idx in batch_order(data.lengths, batch_size, epoch_seed(seed, epoch)):
                if step >= total:
                    break
                b = make_batch(idx)
                with _autocast(device, precision):
                    out = student(**b.inputs)
                kd = (
                    masked_kl_div(out.start_logits, b.t_start, b.valid, temperature)
                    + masked_kl_div(out.end_logits, b.t_end, b.valid, temperature)
                ) / 2
                # Masked like train's loss: padding must not join the softmax, or the loss
                # would depend on how far each length-grouped batch happens to be padded.
                hard = span_loss(out.start_logits, out.end_logits, b.starts, b.ends, mask=b.mask)
                loss = mix_losses(kd, hard, kd_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                pending.append(loss.detach())
                if step % log_steps == 0 or step == total:
                    _drain(pending, losses, stage=2, first_step=len(losses) + 1)
                    lr = scheduler.get_last_lr()[0]
                    log(stage=2, epoch=epoch, step=step, loss=losses[-1], kd=kd.item(), span=hard.item(), lr=lr)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                bar.update(1)
        _drain(pending, losses, stage=2, first_step=len(losses) + 1)
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
    if out.is_file():
        problems.append(f"{out} is a file; --out must be a directory")
    elif out.exists() and any(out.iterdir()) and not cfg.overwrite:
        problems.append(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    if problems:
        raise ConfigError("; ".join(problems))


def distill(cfg: DistillConfig, progress: bool = True, load_teacher: Callable[[str, str], object] | None = None) -> dict:
    """Runs stage 1, stage 2 or both as configured; returns a summary (also in pocketqa.json).

    Stage 1 alone writes its student to ``out``; both stages write stage 1 to
    ``out/stage1`` and the final student to ``out``; stage 2 starts from stage 1's
    student. Everything that can be checked before training is, and reported at once.
    When the tokenizers number tokens differently, ``cfg.bridge`` decides (see
    :func:`~pocketqa.training.pairing.plan_vocabulary`); the summary's ``bridge`` says
    which bridge was used, if any.

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
        from pocketqa.data.squad import load_squad

        load_squad(cfg.dev)  # a malformed dev file fails now, not after both stages have trained
    load_teacher = load_teacher or (lambda path, device: load_qa_model(path, device=device, dtype=torch.float32))
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = _resolve_precision(cfg.precision, device)
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
    out.mkdir(parents=True, exist_ok=True)
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
        )
        teacher = None  # free its memory before stage 2
        summary["stage1"] = {
            "windows": len(data), "steps": len(losses), "seconds": round(time.perf_counter() - t0, 1),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "layer_map": [list(p) for p in layer_map], "projection": projection is not None,
            "attention": cfg.attention_target if attention else None,
        }
        stage1_dir = out / "stage1" if run_stage2 else out
        meta = {"recipe": recipe, "window": window.to_dict(), "distill": {"stage": 1, **summary}}
        _check_finite_weights(1, student, projection)
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
        _check_finite_weights(2, student)
        save_student(student, tokenizer, out, meta)
        if cfg.dev:
            from pocketqa.inference.answerer import QuestionAnswerer
            from pocketqa.evaluation.scoring import evaluate_model

            qa = QuestionAnswerer.from_pretrained(str(out), device=device, threshold=0.0)
            summary["dev"] = evaluate_model(qa, cfg.dev, save_threshold=True, model_arg=str(out))["scores"]
            update_meta(out, metrics=summary["dev"], distill={"stage": 2, **summary})
    summary["out"] = str(out)
    return summary
