"""Fine-tuning an encoder for extractive QA on SQuAD 2.0 (``pocketqa train``).

``train`` is the loop: forward, loss, backward, step, log, save, evaluate, readable top to
bottom. Set-up (paths, data, model, resume) and finishing (final model, ``pocketqa.json``)
are the small helpers below it; the parts every loop shares come from ``pocketqa.data``
(feature cache, batch order, collation) and ``pocketqa.training`` (optimizer and schedule,
precision, checkpoints, run log, DDP).

Batch size: ``batch_size`` is the *global* batch, windows per optimizer step. Processes
(``torchrun --nproc-per-node N``) and ``grad_accum`` only split it into micro-batches to
fit memory, so a recipe means the same experiment on 1 or 8 GPUs (as nanoGPT's total
batch size). Data order depends only on the seed and the epoch, never on the world size.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from pocketqa.data.batching import batch_order, epoch_seed, iterate_batches, to_device
from pocketqa.data.cache import TrainData, data_sha256, load_train_features
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.evaluation.scoring import score_answerer
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.backends import TorchBackend, model_input_names
from pocketqa.modeldir import META_FILE, write_meta
from pocketqa.models import load_qa_model, load_tokenizer, resolve_model, save_qa_model
from pocketqa.recipes.configs import TrainConfig
from pocketqa.training.checkpoint import (
    CHECKPOINTS_DIR,
    checkpoint_dir,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from pocketqa.training.distributed import barrier, close_distributed, init_distributed
from pocketqa.training.guards import check_finite_weights
from pocketqa.training.losses import span_loss
from pocketqa.training.optim import build_optimizer, build_scheduler, total_steps, warmup_steps_for
from pocketqa.training.precision import autocast, grad_scaler, precision_warning, resolve_precision
from pocketqa.training.runlog import LOG_FILE, LossMeter, RunLog, progress_bar
from pocketqa.data.formats import HF_PREFIX, load_examples


def train(config: TrainConfig) -> dict:
    """Fine-tunes ``config.model`` on ``config.train`` and writes the model to ``config.out``.

    Works as one process or under ``torchrun`` (DistributedDataParallel; rank 0 logs,
    saves and evaluates). Returns {"out", "steps", "metrics", "threshold", "rank"}
    (metrics and threshold only on rank 0, and only with a dev file).
    """
    rank, world, device, owns_group = init_distributed(config.device)
    is_main = rank == 0
    try:
        out = Path(config.out)
        resume_from = _check_inputs(config, out, world)
        precision = _resolve_precision(config.precision, device)
        model_path = resolve_model(config.model)
        tokenizer = load_tokenizer(model_path)
        data, dev_examples = _load_data(config, tokenizer, is_main)
        model = _load_model(model_path, config.seed, device)
        _prepare_out_dir(out, config.overwrite, is_main)  # only now: bad input leaves an earlier run intact
        input_names = model_input_names(model, tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        steps_per_epoch = math.ceil(len(data) / config.batch_size)
        total = total_steps(len(data), config.batch_size, config.epochs, config.max_steps)
        optimizer = build_optimizer(model, config.learning_rate, config.weight_decay, eps=config.adam_epsilon)
        scheduler = build_scheduler(optimizer, warmup_steps_for(config.warmup, total), total)
        scaler = grad_scaler(precision, device)
        step, epoch, start_batch = _resume(resume_from, model, optimizer, scheduler, scaler, data, config, total, rank)
        meta = _model_meta(config, out, data)
        net, forward = _wrap_model(model, world, device, config.compile)
        log = RunLog(out / LOG_FILE if is_main else None)
        _announce(log, config, data, resume_from, step, total, world, precision, device)

        meter, bar, speed = LossMeter(device), progress_bar(total, step, enabled=is_main), _Throughput()
        scale = world / config.batch_size  # per-window loss weight: DDP's gradient mean undoes `world`
        while step < total:
            seed_e = epoch_seed(config.seed, epoch)
            batches = batch_order(data.lengths, config.batch_size, seed_e)
            for b, micro_batches in iterate_batches(
                data, batches, pad_id, input_names, rank, world, config.grad_accum, start=start_batch
            ):
                if step >= total:
                    break
                for i, micro in enumerate(micro_batches):
                    inputs = {k: to_device(v, device) for k, v in micro.items()}
                    starts, ends = inputs.pop("start_positions"), inputs.pop("end_positions")
                    # Gradients are all-reduced once per step, after the last micro-batch.
                    sync = world == 1 or i == len(micro_batches) - 1
                    with nullcontext() if sync else net.no_sync():
                        with autocast(device, precision):
                            outputs = forward(**inputs)
                        loss = span_loss(outputs.start_logits, outputs.end_logits, starts, ends,
                                         mask=inputs["attention_mask"], reduction="sum") * scale
                        (scaler.scale(loss) if scaler else loss).backward()
                    meter.add(loss)
                _optimizer_step(model, optimizer, scheduler, scaler, config.max_grad_norm)
                step += 1
                meter.end_step()
                speed.add(config.batch_size)
                bar.update(1)

                saving = config.save_steps and step % config.save_steps == 0
                evaluating = config.eval_steps and step % config.eval_steps == 0 and step < total
                if step % config.log_steps == 0 or step == total or saving or evaluating:
                    loss_value, lr = meter.mean(), scheduler.get_last_lr()[0]
                    if not math.isfinite(loss_value):
                        raise PocketQAError(_nonfinite(f"training loss became {loss_value} at step {step}", precision, out))
                    log.write({"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": loss_value, "lr": lr,
                               "ex_per_s": speed.rate(), "elapsed_s": speed.elapsed()})
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
                if saving:
                    _check_weights(model, step, precision, out)
                    position = {"step": step, "epoch": epoch, "step_in_epoch": b + 1, "epoch_seed": seed_e,
                                "total_steps": total, "batch_size": config.batch_size, "world_size": world,
                                "data_sha256": data.data_sha256, "window": config.window.to_dict(),
                                "config": config.to_dict()}
                    save_checkpoint(checkpoint_dir(out, step), {"model": model}, optimizer, scheduler, position,
                                    scaler=scaler, tokenizer=tokenizer, meta=meta)
                    if is_main:
                        prune_checkpoints(out, config.keep_checkpoints)
                if evaluating:
                    if is_main:
                        _evaluate(model, tokenizer, config, dev_examples, device, precision, step, log)
                    model.train()
                    barrier()
                if saving or evaluating:
                    speed.restart()  # keeps save and eval time out of ex/s
            epoch += 1
            start_batch = 0
        bar.close()
        _check_weights(model, step, precision, out)

        result = {"out": str(out), "steps": step, "metrics": None, "threshold": None, "rank": rank}
        if is_main:
            meta["training"] = {"steps": step, "epochs": round(step / steps_per_epoch, 4), "world_size": world,
                                "global_batch_size": config.batch_size, "precision": precision,
                                "time_s": round(speed.elapsed(), 2), "torch": torch.__version__}
            if dev_examples is not None:
                metrics = _evaluate(model, tokenizer, config, dev_examples, device, precision, step, log)
                meta.update(metrics={"dev": metrics}, threshold=metrics["best_f1_thresh"])
                result.update(metrics=metrics, threshold=metrics["best_f1_thresh"])
            _save_model(out, model, tokenizer, meta)
        barrier()
        return result
    finally:
        close_distributed(owns_group)


# -- set-up --------------------------------------------------------------------------------


def _check_inputs(config: TrainConfig, out: Path, world: int) -> Path | None:
    """Fails early on missing inputs, an occupied out dir or a batch that does not split.

    Returns the checkpoint to resume from (None for a fresh run).
    """
    missing = [f"{name} file {p} does not exist" for name, p in (("train", config.train), ("dev", config.dev))
               if p and not str(p).startswith(HF_PREFIX) and not Path(p).is_file()]
    if missing:
        raise PocketQAError("; ".join(missing))
    resume_from = None
    if config.resume:
        resume_from = resolve_checkpoint(out, config.resume)
    elif out.exists() and not out.is_dir():
        raise PocketQAError(f"--out {out} is a file, not a directory")
    elif out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise PocketQAError(
            f"output dir {out} exists and is not empty; pass --overwrite to replace it or --resume to continue it"
        )
    if config.batch_size % (world * config.grad_accum):
        raise ConfigError(
            f"batch_size ({config.batch_size}) must be divisible by processes x grad_accum "
            f"({world} x {config.grad_accum}): it is the global batch they split"
        )
    return resume_from


def _resolve_precision(precision: str, device: torch.device) -> str:
    resolved = resolve_precision(precision, device)
    if (warning := precision_warning(resolved)) is not None:
        print(f"pocketqa train: warning: {warning}", file=sys.stderr)
    return resolved


def _load_data(config: TrainConfig, tokenizer, is_main: bool) -> tuple[TrainData, list | None]:
    """The training windows (rank 0 tokenises and fills the cache, the others then read it)
    and, on rank 0 with a dev file, the dev examples."""

    dev_examples = (load_examples(config.dev, format=config.format, offsets=config.offsets)
                    if config.dev and is_main else None)
    data = None
    if is_main:
        data = load_train_features(config.train, tokenizer, config.window, config.cache_dir,
                                   data_format=config.format, offsets=config.offsets)
    barrier()
    if data is None:
        data = load_train_features(config.train, tokenizer, config.window, config.cache_dir, progress=False,
                                   data_format=config.format, offsets=config.offsets)
    return data, dev_examples


def _load_model(model_path: str, seed: int, device: torch.device):
    # The seed makes a fresh QA head identical across runs and ranks.
    torch.manual_seed(seed)
    # float32 master weights whatever the checkpoint holds (transformers 5 loads a saved
    # dtype, e.g. fp16, by default); autocast does the low-precision math.
    model = load_qa_model(model_path, device=str(device), dtype=torch.float32)
    model.train()
    return model


def _prepare_out_dir(out: Path, overwrite: bool, is_main: bool) -> None:
    """Creates ``out``; with ``overwrite``, first removes what an earlier run wrote there
    (checkpoints, log, meta; other files stay)."""
    if is_main:
        if overwrite:
            shutil.rmtree(out / CHECKPOINTS_DIR, ignore_errors=True)
            for name in (LOG_FILE, META_FILE):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
    barrier()


def _resume(path, model, optimizer, scheduler, scaler, data, config, total, rank) -> tuple[int, int, int]:
    """(step, epoch, batch in the epoch) to start at: restored from ``path``, or zeros.

    A fresh run seeds each rank's own dropout stream; a resumed one restores it.
    """
    if path is None:
        torch.manual_seed(config.seed + rank)
        return 0, 0, 0
    state = load_checkpoint(path, {"model": model}, optimizer, scheduler, scaler)
    problems = []
    if state.get("data_sha256") != data.data_sha256:
        problems.append("the training file changed")
    if state.get("batch_size") != config.batch_size:
        problems.append(f"batch_size was {state.get('batch_size')}, now {config.batch_size}")
    if state.get("window") != config.window.to_dict():
        problems.append(f"window settings were {state.get('window')}")
    if problems:
        raise PocketQAError(f"cannot resume from {path}: " + "; ".join(problems) + " (resume with the original settings)")
    if state.get("total_steps") != total:
        print(
            f"pocketqa train: warning: the run now has {total} steps, the checkpoint's had "
            f"{state.get('total_steps')}; the learning-rate schedule changes accordingly",
            file=sys.stderr,
        )
    return state["step"], state["epoch"], state["step_in_epoch"]


def _model_meta(config: TrainConfig, out: Path, data: TrainData) -> dict:
    """What ``pocketqa.json`` records about the model (checkpoints and the final model)."""
    meta = {
        "name": config.name or out.name,
        "base_model": str(config.model),
        "recipe": config.to_dict(),
        "window": config.window.to_dict(),
        "data": {"train": {"path": str(config.train), "sha256": data.data_sha256}},
    }
    if config.dev:
        meta["data"]["dev"] = {"path": str(config.dev),
                               "sha256": data_sha256(config.dev, config.format, config.offsets)}
    return meta


def _wrap_model(model, world: int, device: torch.device, compile_model: bool):
    """(net, forward): the DDP wrapper (or the model itself) and what the loop calls."""
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return net, torch.compile(net) if compile_model else net


def _announce(log: RunLog, config, data, resume_from, step, total, world, precision, device) -> None:
    """Prints what the run will do and writes the ``start`` record (rank 0 only)."""
    dropped = log.forget_after(step) if resume_from is not None else 0
    if log.path is None:
        return
    print(
        f"pocketqa train: {data.n_examples} examples -> {len(data)} windows "
        f"({int((data.start_positions != 0).sum())} with the answer inside); "
        f"{total} steps of {config.batch_size} windows ({world} process(es) x {config.grad_accum} "
        f"micro-batch(es) of {config.batch_size // (world * config.grad_accum)}); precision {precision}; "
        f"device {device}" + (f"; resuming at step {step} from {resume_from}" if resume_from else ""),
        file=sys.stderr,
    )
    log.write({"event": "start", "step": step, "total_steps": total, "world_size": world,
               "precision": precision, "resumed_from": str(resume_from) if resume_from else None,
               **({"dropped_records": dropped} if dropped else {})})


# -- the loop's steps ----------------------------------------------------------------------


def _optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm: float) -> None:
    """Clips, steps (through the fp16 grad scaler when there is one), advances the schedule."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


class _Throughput:
    """Windows per second between log steps, and the time since the run started."""

    def __init__(self):
        self.started = time.perf_counter()
        self.restart()

    def restart(self) -> None:
        self.windows, self.since = 0, time.perf_counter()

    def add(self, windows: int) -> None:
        self.windows += windows

    def rate(self) -> float:
        """Windows per second since the last call (or ``restart``); restarts."""
        value = self.windows / (time.perf_counter() - self.since)
        self.restart()
        return value

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _nonfinite(what: str, precision: str, out: Path) -> str:
    """The message of a nan/inf loss: what happened, the likely fix, the last good checkpoint."""
    return f"{what}; stopped before saving bad weights. {_fix_hint(precision, out)}"


def _fix_hint(precision: str, out: Path) -> str:
    found = list_checkpoints(out)
    last = f"; the last good checkpoint is {found[-1]} (--resume continues from it)" if found else ""
    if precision == "fp16":
        return f"fp16 overflows in MobileBERT-like models (transformers #11327): use --precision bf16 or fp32{last}"
    return f"lower --learning-rate or raise --warmup{last}"


def _check_weights(model, step: int, precision: str, out: Path) -> None:
    check_finite_weights({"model": model}, f"at step {step}", _fix_hint(precision, out))


def _evaluate(model, tokenizer, config: TrainConfig, examples, device, precision: str, step: int, log: RunLog) -> dict:
    """Dev scores at threshold 0 (plus best_* thresholds) through ``QuestionAnswerer``, logged.

    The same path as ``pocketqa evaluate``, so the scores are the ones it will report.
    Leaves the model in eval mode.
    """
    qa = QuestionAnswerer(TorchBackend(model, device=str(device)), tokenizer, config.window,
                          batch_size=config.eval_batch_size)
    with autocast(device, precision):
        scores = score_answerer(qa, examples, progress=True)
    log.write({"step": step, "eval": scores})
    print(
        f"pocketqa train: step {step}: dev EM {scores['exact']:.2f} F1 {scores['f1']:.2f}; "
        f"best F1 {scores['best_f1']:.2f} at threshold {scores['best_f1_thresh']:.3f}",
        file=sys.stderr,
    )
    return scores


# -- finishing -----------------------------------------------------------------------------


def _save_model(out: Path, model, tokenizer, meta: dict) -> None:
    """The final model dir: weights and tokenizer, then ``pocketqa.json``.

    ``pocketqa.json`` is written last, whole (not merged into an older one): its presence
    marks a finished model directory, and nothing of an earlier run's meta may survive.
    """
    save_qa_model(model, tokenizer, out)
    write_meta(out, meta)
