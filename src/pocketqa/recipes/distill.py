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

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING


from pocketqa.data.cache import load_data
from pocketqa.data.formats import HF_PREFIX, load_examples
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.evaluation.scoring import evaluate_model
from pocketqa.inference.answerer import QuestionAnswerer
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
from pocketqa.training.checkpoint import (
    CHECKPOINTS_DIR,
    read_checkpoint_state,
)
from pocketqa.training.pairing import bridge_samples, check_pair, plan_vocabulary
from pocketqa.training.precision import resolve_precision
from pocketqa.recipes.distill_stages import distill_intermediate, distill_prediction
from pocketqa.training.runlog import LOG_FILE, RunLog
from pocketqa.training.stage_steps import (
    StageCheckpoints,
    check_stage_weights,
    forget_stage_after,
    resume_point,
)
from pocketqa.training.teacher_cache import (
    answer_mask,
    cache_key_parts,
    default_cache_root,
    model_fingerprint,
    state_dict_fingerprint,
    teacher_logits,
)

if TYPE_CHECKING:
    pass


# -- the command -----------------------------------------------------------------------


def _preflight(cfg: DistillConfig) -> None:
    problems = []
    for p in [*cfg.train, *cfg.stage1_train, *([cfg.dev] if cfg.dev else [])]:
        if not str(p).startswith(HF_PREFIX) and not Path(p).is_file():
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
        load_examples(cfg.dev, format=cfg.format, offsets=cfg.offsets)  # a malformed dev file fails now, not after both stages have trained
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
    resume_stage, resume_from = resume_point(cfg.resume, cfg.stage, out, stage1_dir)
    run_stage1 = run_stage1 and resume_stage != 2  # a run killed in stage 2 does not redo stage 1
    attention = cfg.attention_loss and run_stage1
    teacher = load_teacher(teacher_path, device) if run_stage1 else None
    needs_bridge = cfg.bridge == "auto" and teacher_tok.get_vocab() != tokenizer.get_vocab()
    samples = bridge_samples(cfg.train, data_format=cfg.format) if needs_bridge else []
    bridge, vocab_problem = plan_vocabulary(teacher_tok, tokenizer, cfg.bridge, samples)
    layer_map = check_pair(
        teacher_config, student.config, teacher_tok, tokenizer, cfg.layer_map, attention, run_stage1,
        teacher_model=teacher, student_model=student, bridge=bridge, vocab_problem=vocab_problem,
    )
    stage1_files = cfg.stage1_train or cfg.train
    stage1_data = (load_data(stage1_files, tokenizer, window, cfg.cache_dir, progress, cfg.format, cfg.offsets)
                   if run_stage1 else None)
    stage2_data = None
    if run_stage2:
        same = stage1_data is not None and stage1_files == cfg.train
        stage2_data = stage1_data if same else load_data(cfg.train, tokenizer, window, cfg.cache_dir, progress,
                                                                   cfg.format, cfg.offsets)
    # Only now, with models and data loaded, is ``out`` touched: bad input leaves an earlier run intact.
    if cfg.overwrite and out.is_dir():
        for name in (LOG_FILE, META_FILE):
            (out / name).unlink(missing_ok=True)
        for stage_out in {out, stage1_dir}:
            shutil.rmtree(stage_out / CHECKPOINTS_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        forget_stage_after(out / LOG_FILE, resume_stage, read_checkpoint_state(resume_from)["step"])
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
        check_stage_weights(1, {"model": student, "projection": projection}, "at the end")
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
        check_stage_weights(2, {"model": student}, "at the end")
        save_student(student, tokenizer, out, meta)
        if cfg.dev:
            qa = QuestionAnswerer.from_pretrained(str(out), device=device, threshold=0.0)
            summary["dev"] = evaluate_model(qa, cfg.dev, save_threshold=True, model_arg=str(out),
                                            data_format=cfg.format, offsets=cfg.offsets)["scores"]
            update_meta(out, metrics=summary["dev"], distill={"stage": 2, **summary})
    summary["out"] = str(out)
    return summary
