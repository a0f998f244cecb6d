"""Stage-2 distillation speed: cached teacher logits (pocketqa) vs the teacher run every step (Haystack).

Both arms run the same student step (forward, masked KL, span loss, backward, AdamW) on
the same batches; they differ only in where the teacher's start/end logits come from:

- cached: gathered from pocketqa's memory-mapped fp16 cache (built once, timed apart);
- live:   a teacher forward pass on every batch, as Haystack's DistillationTrainer does.

Arms alternate over ``--repeats`` rounds so that machine noise hits both alike. Prints
ms/step of each, the ratio (target >= 1.5x), the one-off cache build time and after how
many epochs the cache has paid for itself.

    PYTHONPATH=src python bench/distill_cache_speed.py                  # CPU, small scale
    PYTHONPATH=src python bench/distill_cache_speed.py --device cuda --examples 4000 --steps 200
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from pocketqa.models import build_student  # noqa: E402
from pocketqa.recipes.distill import load_data  # noqa: E402
from pocketqa.training.teacher_cache import (  # noqa: E402
    answer_mask,
    cache_key_parts,
    gather_rows,
    model_fingerprint,
    teacher_logits,
)
from pocketqa.data.features import WindowConfig  # noqa: E402
from pocketqa.training.losses import masked_kl_div, span_loss  # noqa: E402
from pocketqa.models import load_qa_model, load_tokenizer  # noqa: E402
from pocketqa.data.squad import load_squad, write_squad  # noqa: E402
from pocketqa.recipes.finetune import batch_order, build_optimizer, collate  # noqa: E402


def find_data() -> Path:
    for p in (REPO / ".carry/data/train-v2.0.json.gz", REPO.parent / "shared/data/squad2/train-v2.0.json.gz"):
        if p.is_file():
            return p
    raise SystemExit("no SQuAD train file found (.carry/data or ../shared/data); pass --data")


T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {message}", flush=True)


def run_steps(student, teacher, cache, data, mask, batches, device, names, pad_id) -> tuple[float, float]:
    """Trains ``len(batches)`` steps; returns (wall seconds, CPU seconds of this process).

    teacher=None reads ``cache`` instead. CPU seconds are the fairer measure on a CPU
    shared with other jobs: they count only the work this process did.
    """
    optimizer = build_optimizer(student, 3e-5, 0.01)
    student.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
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
        hard = span_loss(
            out.start_logits, out.end_logits,
            torch.from_numpy(arrays["start_positions"]).to(device), torch.from_numpy(arrays["end_positions"]).to(device),
        )
        loss = 0.5 * kd + 0.5 * hard
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default=str(REPO / ".carry/minilm"), help="teacher dir (default: MiniLM-L6-H384)")
    ap.add_argument("--student-layers", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--examples", type=int, default=300, help="first N training questions")
    ap.add_argument("--steps", type=int, default=12, help="steps per arm and round")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-length", type=int, default=384)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the results JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    window = WindowConfig(max_seq_length=args.max_seq_length, doc_stride=min(128, args.max_seq_length // 4))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subset = tmp / "train-subset.json"
        write_squad(load_squad(args.data or find_data())[: args.examples], subset)
        tokenizer = load_tokenizer(args.teacher)
        torch.manual_seed(0)
        # float32 as pocketqa distill loads it: .carry/minilm holds fp16 weights, and fp16
        # matmuls on a CPU without fp16 units would make the live arm look slower than it is.
        teacher = load_qa_model(args.teacher, device=str(device), dtype=torch.float32)
        student, info = build_student(args.teacher, layers=args.student_layers, seed=0)
        data = load_data([subset], tokenizer, window, cache_dir=tmp / "cache", progress=False)
        mask = answer_mask(data, tokenizer)
        say(f"{len(data)} windows ready; building the teacher-logit cache")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]
        pad_id = tokenizer.pad_token_id or 0

        t0 = time.perf_counter()
        parts = cache_key_parts(args.teacher, model_fingerprint(args.teacher) or "random", tokenizer, [subset], window, data, "fp32")
        cache = teacher_logits(data, parts, tmp / "logits", lambda: teacher, 64, str(device), "fp32", pad_id, progress=False)
        build_seconds = time.perf_counter() - t0
        say(f"cache built in {build_seconds:.1f} s; timing {args.steps} steps x {args.repeats} rounds per arm")

        batches = batch_order(data.lengths, args.batch_size, seed=0)
        batches = (batches * (args.steps // max(1, len(batches)) + 1))[: args.steps]
        student.to(device)
        run_steps(copy.deepcopy(student), teacher, cache, data, mask, batches[:1], device, names, pad_id)  # warm-up
        times = {"cached": [], "live": []}
        for _ in range(args.repeats):
            times["cached"].append(run_steps(copy.deepcopy(student), None, cache, data, mask, batches, device, names, pad_id))
            times["live"].append(run_steps(copy.deepcopy(student), teacher, cache, data, mask, batches, device, names, pad_id))
            (cw, cc), (lw, lc) = times["cached"][-1], times["live"][-1]
            say(f"round: cached {cw:.1f} s wall / {cc:.1f} s CPU, live {lw:.1f} s wall / {lc:.1f} s CPU")

    # Best round of each arm; on CUDA (or an idle CPU) wall time is what counts, on a shared
    # CPU the process's CPU time is the steadier measure: both are reported.
    cached_ms = 1000 * min(w for w, _ in times["cached"]) / args.steps
    live_ms = 1000 * min(w for w, _ in times["live"]) / args.steps
    cached_cpu_ms = 1000 * min(c for _, c in times["cached"]) / args.steps
    live_cpu_ms = 1000 * min(c for _, c in times["live"]) / args.steps
    steps_per_epoch = -(-len(data) // args.batch_size)
    saved_per_epoch = (live_ms - cached_ms) / 1000 * steps_per_epoch
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "teacher": args.teacher,
        "teacher_layers": teacher.config.num_hidden_layers,
        "student_layers": student.config.num_hidden_layers,
        "hidden": student.config.hidden_size,
        "windows": len(data),
        "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length,
        "steps": args.steps,
        "repeats": args.repeats,
        "cached_ms_per_step": round(cached_ms, 1),
        "live_ms_per_step": round(live_ms, 1),
        "speedup": round(live_ms / cached_ms, 2),
        "cached_cpu_ms_per_step": round(cached_cpu_ms, 1),
        "live_cpu_ms_per_step": round(live_cpu_ms, 1),
        "speedup_cpu_time": round(live_cpu_ms / cached_cpu_ms, 2),
        "rounds": {k: [[round(w, 2), round(c, 2)] for w, c in v] for k, v in times.items()},
        "cache_build_seconds": round(build_seconds, 2),
        "cache_pays_off_after_epochs": round(build_seconds / saved_per_epoch, 2) if saved_per_epoch > 0 else None,
    }
    print(
        f"stage 2, {result['windows']} windows, batch {args.batch_size}, {args.steps} steps x {args.repeats} rounds "
        f"on {device} ({result['threads']} threads); teacher {result['teacher_layers']}L, student {result['student_layers']}L, "
        f"hidden {result['hidden']}"
    )
    print(f"{'':28}{'wall ms/step':>14}{'CPU ms/step':>14}")
    print(f"{'teacher every step (anchor)':28}{live_ms:>14.1f}{live_cpu_ms:>14.1f}")
    print(f"{'cached teacher logits':28}{cached_ms:>14.1f}{cached_cpu_ms:>14.1f}")
    print(f"speedup {result['speedup']:.2f}x wall, {result['speedup_cpu_time']:.2f}x CPU time (target >= 1.5x); "
          f"cache built once in {build_seconds:.1f} s, paid back after {result['cache_pays_off_after_epochs']} epoch(s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
