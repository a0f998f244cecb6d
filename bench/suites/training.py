"""Training: pocketqa's training loop vs transformers' Trainer and run_squad.py's loop, same windows.

Each arm trains a fresh copy of the same model on the same windows (the first examples of
a SQuAD 2.0 training file, tokenised once by pocketqa), in the same precision, for
``--warmup-steps`` untimed steps and then ``--steps`` timed steps (device synchronised at
both ends); the rate is windows per second. The warm-up is one whole pass over the
windows by default, so the timed pass meets only batch shapes every arm has already run:
pocketqa pads each batch to its own width, the anchors pad every window to 384, and on a
GPU each new shape pays one-off costs that a real multi-epoch run amortises.

- ``pocketqa``: ``pocketqa.recipes.finetune.train``, as ``pocketqa train`` runs it:
  length-grouped batches padded per batch, numpy collation, fused AdamW, autocast.
- ``hf-trainer`` (the anchor): transformers' Trainer on run_qa-style windows padded to 384
  with ``default_data_collator``; it needs the ``accelerate`` package, and without it the
  anchor is the next arm.
- ``run_squad-loop``: the loop of transformers' legacy run_squad.py, written here: every
  window padded to 384, a RandomSampler DataLoader, AdamW (torch's default kernel), a
  linear schedule, the model's own loss, gradient clipping, ``loss.item()`` every step.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from bench.harness import (
    Arm,
    Results,
    add_common_arguments,
    cuda_sync,
    model_dir,
    say,
    setup,
    split_list,
    squad_file,
    take_turns,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=1)
    p.add_argument("--train", type=Path, default=None, help="SQuAD 2.0 training file")
    p.add_argument("--models", default="minilm-l6,bert-6l-768,mobilebert",
                   help="comma list: random-weight shapes or model dirs / pip:NAME (pip:all-MiniLM-L6-v2 for real MiniLM)")
    p.add_argument("--layers", type=int, default=None, help="fewer layers in the random-weight shapes (quick runs)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per arm (default 200)")
    p.add_argument("--warmup-steps", type=int, default=None, help="untimed steps first (default: --steps, one pass)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=384)
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="every arm (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--max-examples", type=int, default=None,
                   help="examples to tokenise (default: enough windows for the batches needed)")
    p.add_argument("--compile", action="store_true", help="pocketqa arm with torch.compile")


def has_accelerate() -> bool:
    try:
        import accelerate  # noqa: F401  (transformers' Trainer refuses to start without it)
    except ImportError:
        return False
    return True


def padded_tensors(data, width: int) -> dict:
    """Every window padded to ``width`` (run_qa's pad_to_max_length), as int64 tensors."""
    import numpy as np
    import torch

    cols = np.arange(width)
    lens = data.lengths.astype(np.int64)
    mask = cols[None, :] < lens[:, None]
    pos = data.row_starts[:, None] + np.minimum(cols[None, :], lens[:, None] - 1)
    out = {
        "input_ids": np.where(mask, data.input_ids[pos], 0),
        "attention_mask": mask.astype(np.int64),
        "start_positions": data.start_positions.astype(np.int64),
        "end_positions": data.end_positions.astype(np.int64),
    }
    if data.token_type_ids is not None:
        out["token_type_ids"] = np.where(mask, data.token_type_ids[pos], 0)
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in out.items()}


def precision_of(args) -> str:
    from pocketqa.training.precision import resolve_precision

    return resolve_precision(args.precision, args.device)


def pocketqa_run(path: str, train_file: Path, args, workdir: Path) -> float:
    """Seconds of the timed steps of one ``pocketqa train`` run, read from its log."""
    from pocketqa.recipes.configs import TrainConfig
    from pocketqa.recipes.finetune import train
    from pocketqa.training.runlog import read_log

    out = workdir / f"pocketqa-{Path(path).name}"
    total = args.warmup_steps + args.steps
    config = TrainConfig(
        model=path, train=str(train_file), out=str(out), overwrite=True, batch_size=args.batch_size,
        learning_rate=1e-4, max_steps=total, log_steps=args.warmup_steps, save_steps=0, precision=args.precision,
        device=args.device, cache_dir=str(workdir / "cache"), compile=args.compile, max_seq_length=args.max_seq_length,
    )
    train(config)
    elapsed = {r["step"]: r["elapsed_s"] for r in read_log(out) if "elapsed_s" in r}
    return elapsed[total] - elapsed[args.warmup_steps]


def run_squad_loop(path: str, tensors: dict, args) -> float:
    """Seconds of the timed steps of run_squad.py's training loop."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    from pocketqa.models import load_qa_model
    from pocketqa.training.optim import build_scheduler

    torch.manual_seed(42)
    model = load_qa_model(path, device=args.device, dtype=torch.float32)
    model.train()
    names = list(tensors)
    dataset = TensorDataset(*(tensors[n] for n in names))
    loader = DataLoader(dataset, sampler=RandomSampler(dataset), batch_size=args.batch_size, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8, weight_decay=0.0)
    total = args.warmup_steps + args.steps
    scheduler = build_scheduler(optimizer, 0, total)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision_of(args))
    device_type = torch.device(args.device).type
    sync = cuda_sync(args.device) or (lambda: None)
    batches, started, tr_loss = iter(()), None, 0.0
    for step in range(total):
        if step == args.warmup_steps:
            sync()
            started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        inputs = {n: t.to(args.device) for n, t in zip(names, batch)}
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        model.zero_grad()
        tr_loss += loss.item()
    sync()
    return time.perf_counter() - started


def hf_trainer(path: str, tensors: dict, args, workdir: Path) -> float:
    """Seconds of the timed steps of transformers' Trainer on windows padded to 384."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from pocketqa.models import load_qa_model

    n = len(next(iter(tensors.values())))

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {k: v[i] for k, v in tensors.items()}

    marks = {}
    sync = cuda_sync(args.device) or (lambda: None)
    total = args.warmup_steps + args.steps

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kwargs):
            if state.global_step in (args.warmup_steps, total):
                sync()
                marks[state.global_step] = time.perf_counter()

    torch.manual_seed(42)
    model = load_qa_model(path, device=args.device, dtype=torch.float32)
    precision = precision_of(args)
    targs = TrainingArguments(
        output_dir=str(workdir / "hf-trainer"), per_device_train_batch_size=args.batch_size, max_steps=total,
        learning_rate=1e-4, bf16=precision == "bf16", fp16=precision == "fp16", save_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=args.device == "cpu", seed=42,
    )
    Trainer(model=model, args=targs, train_dataset=Windows(), data_collator=default_data_collator,
            callbacks=[Clock()]).train()
    return marks[total] - marks[args.warmup_steps]


def run(args: argparse.Namespace) -> Results:
    import torch

    from pocketqa.data.features import WindowConfig
    from pocketqa.data.formats import load_examples
    from pocketqa.data.squad import write_squad
    from pocketqa.models import load_tokenizer
    from pocketqa.data.cache import load_train_features

    setup(args)
    whole_pass = args.warmup_steps is None
    args.warmup_steps = args.steps if whole_pass else args.warmup_steps
    if args.steps < 1 or args.warmup_steps < 1:
        raise SystemExit("--steps and --warmup-steps must be >= 1")
    results = Results("training", args)
    train_path = squad_file(args.train, "train", "--train")
    # ~1.03 windows per SQuAD 2.0 example at 384/128: with a whole-pass warm-up the timed
    # pass repeats the warm-up's batches, otherwise every step gets fresh windows.
    batches = args.steps if whole_pass else args.warmup_steps + args.steps
    n_examples = args.max_examples or math.ceil(batches * args.batch_size * 0.98)
    trainer = has_accelerate()
    anchor = "hf-trainer" if trainer else "run_squad-loop"
    work = args.steps * args.batch_size
    with tempfile.TemporaryDirectory(prefix="pocketqa-train-bench-") as tmp:
        workdir = Path(tmp)
        train_file = workdir / f"train-first{n_examples}.json"
        write_squad(load_examples(train_path)[:n_examples], train_file)
        for name in split_list(args.models):
            path = model_dir(name, workdir, seed=args.seed, layers=args.layers)
            data = load_train_features(train_file, load_tokenizer(path), WindowConfig(args.max_seq_length),
                                       workdir / "cache")
            tensors = padded_tensors(data, args.max_seq_length)
            results.settings = {
                "train": str(train_path), "examples": n_examples, "windows": len(data),
                "mean_window_tokens": round(float(data.lengths.mean()), 1), "batch_size": args.batch_size,
                "steps": args.steps, "warmup_steps": args.warmup_steps, "precision": precision_of(args),
                "anchors_pad_to": args.max_seq_length,
            }
            arms = [Arm("hf-trainer", lambda: hf_trainer(path, tensors, args, workdir), work=work)] if trainer else []
            arms += [Arm("run_squad-loop", lambda: run_squad_loop(path, tensors, args), work=work),
                     Arm("pocketqa", lambda: pocketqa_run(path, train_file, args, workdir), work=work)]
            say(f"{Path(path).name}: {len(data)} windows, {args.steps} timed steps of {args.batch_size}")
            samples = take_turns(arms, args.rounds, Path(path).name, "windows/s")
            results.compare(Path(path).name, samples, anchor=anchor, unit="windows/s")
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    if not trainer:
        results.notes.append("hf-trainer left out: transformers' Trainer needs the accelerate package")
    return results

