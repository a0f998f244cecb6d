"""Distillation: stage-2 steps with cached teacher logits (pocketqa) vs the teacher run every step.

Both arms run the same student step (forward, masked KL on start/end logits, span loss,
backward, AdamW) on the same batches of real training windows; they differ only in where
the teacher's logits come from:

- ``cached``: gathered from pocketqa's memory-mapped fp16 teacher-logit cache, built once
  before the rounds (its build time is reported apart, with after how many epochs it has
  paid for itself);
- ``teacher every step`` (the anchor): a teacher forward pass on every batch, as
  Haystack's DistillationTrainer does.

The teacher defaults to a random-weight MiniLM-L6 (speed does not depend on the weights;
``--teacher DIR`` for a real one); the student is its ``--student-layers`` evenly spaced
layers, as ``pocketqa distill --student-layers`` builds it. The cache can at most remove
the teacher's forward from a step, so the ratio grows with the teacher's depth and width
relative to the student's.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from bench.harness import Arm, Results, add_common_arguments, cuda_sync, model_dir, say, setup, squad_file, take_turns


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=2)
    p.add_argument("--train", type=Path, default=None, help="SQuAD 2.0 training file")
    p.add_argument("--teacher", default="minilm-l6",
                   help="teacher: a random-weight shape (minilm-l6, bert-6l-768, mobilebert) or a model dir")
    p.add_argument("--layers", type=int, default=None, help="fewer layers in a random-weight teacher (quick runs)")
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--examples", type=int, default=300, help="the first N training questions (default 300)")
    p.add_argument("--steps", type=int, default=12, help="steps per arm and round (default 12)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seq-length", type=int, default=384)


def student_steps(student, teacher, cache, data, mask, batches, device, names, pad_id) -> None:
    """Trains ``student`` on ``batches``; teacher None reads the teacher's logits from ``cache``."""
    import numpy as np
    import torch

    from pocketqa.training.teacher_cache import gather_rows
    from pocketqa.data.batching import collate
    from pocketqa.training.optim import build_optimizer
    from pocketqa.training.losses import masked_kl_div, span_loss

    optimizer = build_optimizer(student, 3e-5, 0.01)
    student.train()
    for idx in batches:
        arrays = collate(data, idx, pad_id, names)
        width = arrays["input_ids"].shape[1]
        batch = {k: torch.from_numpy(arrays[k]).to(device) for k in names}
        valid = torch.from_numpy(gather_rows(mask, data, idx, width, False)).to(device)
        if teacher is None:
            t_start = torch.from_numpy(gather_rows(cache.start, data, idx, width).astype(np.float32)).to(device)
            t_end = torch.from_numpy(gather_rows(cache.end, data, idx, width).astype(np.float32)).to(device)
        else:
            with torch.inference_mode():
                out = teacher(**batch)
            t_start, t_end = out.start_logits.float().clone(), out.end_logits.float().clone()
        out = student(**batch)
        kd = (masked_kl_div(out.start_logits, t_start, valid) + masked_kl_div(out.end_logits, t_end, valid)) / 2
        hard = span_loss(out.start_logits, out.end_logits, torch.from_numpy(arrays["start_positions"]).to(device),
                         torch.from_numpy(arrays["end_positions"]).to(device))
        loss = 0.5 * kd + 0.5 * hard
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def run(args: argparse.Namespace) -> Results:
    import torch

    from pocketqa.data.features import WindowConfig
    from pocketqa.data.formats import load_examples
    from pocketqa.data.squad import write_squad
    from pocketqa.models import load_qa_model, load_tokenizer
    from pocketqa.models import build_student
    from pocketqa.data.cache import load_data
    from pocketqa.training.teacher_cache import answer_mask, cache_key_parts, model_fingerprint, teacher_logits
    from pocketqa.data.batching import batch_order

    setup(args)
    results = Results("distillation", args)
    device = torch.device(args.device)
    window = WindowConfig(max_seq_length=args.max_seq_length, doc_stride=min(128, args.max_seq_length // 4))
    with tempfile.TemporaryDirectory(prefix="pocketqa-distill-bench-") as tmp:
        tmp = Path(tmp)
        subset = tmp / "train-subset.json"
        write_squad(load_examples(squad_file(args.train, "train", "--train"))[: args.examples], subset)
        teacher_dir = model_dir(args.teacher, tmp, seed=args.seed, layers=args.layers)
        tokenizer = load_tokenizer(teacher_dir)
        # float32, as pocketqa distill loads it (fp16 matmuls are slow on CPUs without fp16 units)
        teacher = load_qa_model(teacher_dir, device=str(device), dtype=torch.float32)
        student, _ = build_student(teacher_dir, layers=args.student_layers, seed=0)
        student.to(device)
        data = load_data([subset], tokenizer, window, cache_dir=tmp / "cache", progress=False)
        mask = answer_mask(data, tokenizer)
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
        pad_id = tokenizer.pad_token_id or 0

        say(f"{len(data)} windows; building the teacher-logit cache")
        t0 = time.perf_counter()
        parts = cache_key_parts(teacher_dir, model_fingerprint(teacher_dir) or "random", tokenizer, [subset],
                                window, data, "fp32")
        cache = teacher_logits(data, parts, tmp / "logits", lambda: teacher, 64, str(device), "fp32", pad_id,
                               progress=False)
        build_seconds = time.perf_counter() - t0

        batches = batch_order(data.lengths, args.batch_size, seed=0)
        batches = (batches * (args.steps // max(1, len(batches)) + 1))[: args.steps]
        sync = cuda_sync(args.device)

        def arm(name: str, live_teacher) -> Arm:
            # each run starts from the same student, so both arms train the same weights
            return Arm(name, lambda: student_steps(copy.deepcopy(student), live_teacher, cache, data, mask, batches,
                                                   device, names, pad_id), work=args.steps, sync=sync)

        arms = [arm("teacher every step", teacher), arm("cached", None)]
        student_steps(copy.deepcopy(student), teacher, cache, data, mask, batches[:1], device, names, pad_id)  # warm-up
        samples = take_turns(arms, args.rounds, "stage 2", "steps/s")
        row = results.compare(f"{Path(teacher_dir).name} -> {args.student_layers} layers", samples,
                              anchor="teacher every step", unit="steps/s")
    live = 1 / row["arms"]["teacher every step"]["median"]
    cached = 1 / row["arms"]["cached"]["median"]
    steps_per_epoch = -(-len(data) // args.batch_size)
    saved_per_epoch = (live - cached) * steps_per_epoch
    results.settings = {
        "teacher": args.teacher, "teacher_layers": teacher.config.num_hidden_layers,
        "student_layers": student.config.num_hidden_layers, "hidden": student.config.hidden_size,
        "windows": len(data), "batch_size": args.batch_size, "steps": args.steps,
        "max_seq_length": args.max_seq_length, "cache_build_seconds": round(build_seconds, 2),
        "ms_per_step": {"teacher every step": round(1000 * live, 1), "cached": round(1000 * cached, 1)},
        "cache_pays_off_after_epochs": round(build_seconds / saved_per_epoch, 2) if saved_per_epoch > 0 else None,
    }
    results.notes.append(
        f"cache built once in {build_seconds:.1f} s for {len(data)} windows; median "
        f"{1000 * live:.0f} ms/step with the teacher every step vs {1000 * cached:.0f} ms/step cached; it pays for "
        f"itself after {results.settings['cache_pays_off_after_epochs']} epoch(s)")
    return results
