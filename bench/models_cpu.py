"""CPU speed and size of several pocketqa models side by side: students vs teacher, int8 vs fp32.

Every model answers the same real questions, one question per call (what `pocketqa ask` and
a lone server client see) and, with ``--batch-sizes``, all questions in one call with that
many windows per forward pass (what a batching server can at best get from sharing forward
passes). Models and modes take turns within each round, so load changes hit all of them
alike; the table gives questions/s (the best round), the ratio to the first model's
one-question-per-call speed, size of the weight files and parameter count.

Usage:
    PYTHONPATH=src python bench/models_cpu.py --models runs/minilm-l6-squad2 runs/cpu-12k/c \\
        --data ../shared/data/squad2/dev-v2.0.json.gz --n 200 --batch-sizes 4,32 --out runs/models_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.models import dir_size_mb
from pocketqa.data.squad import load_squad


def param_count(qa: QuestionAnswerer) -> int | None:
    model = getattr(qa.backend, "model", None)
    return sum(p.numel() for p in model.parameters()) if model is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="model dirs; the first is the reference")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD file the questions come from")
    parser.add_argument("--n", type=int, default=200, help="questions (the first N of --data)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", default="", help="comma-separated windows per forward for the batched mode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    examples = load_squad(args.data)[: args.n]
    questions, contexts = [e.question for e in examples], [e.context for e in examples]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    models = {m: QuestionAnswerer.from_pretrained(m, device="cpu", threads=args.threads) for m in args.models}
    modes = ["1 question per call"] + [f"all in one call, {b} windows per forward" for b in batch_sizes]

    default_batch = {m: qa.batch_size for m, qa in models.items()}

    def run(m: str, mode: int) -> float:
        qa = models[m]
        qa.batch_size = default_batch[m] if mode == 0 else batch_sizes[mode - 1]
        started = time.perf_counter()
        if mode == 0:
            for q, c in zip(questions, contexts):
                qa(q, c)
        else:
            qa(questions, contexts)
        return len(questions) / (time.perf_counter() - started)

    for qa in models.values():  # warm-up: first-call allocations and thread pools
        qa(questions[:8], contexts[:8])
    best: dict[tuple[str, int], float] = {}
    for r in range(args.rounds):
        for m in models:
            for mode in range(len(modes)):
                qps = run(m, mode)
                best[m, mode] = max(best.get((m, mode), 0.0), qps)
                print(f"round {r + 1}: {m} | {modes[mode]}: {qps:.2f} q/s", flush=True)

    reference = best[args.models[0], 0]
    rows = []
    for m, qa in models.items():
        for mode in range(len(modes)):
            rows.append({"model": m, "mode": modes[mode], "q_per_s": round(best[m, mode], 2),
                         "vs_reference": round(best[m, mode] / reference, 3),
                         "vs_own_one_per_call": round(best[m, mode] / best[m, 0], 3),
                         "size_mb": round(dir_size_mb(m), 1), "params": param_count(qa)})
    print(f"\n{len(questions)} questions of {args.data}, {args.threads} threads, best of {args.rounds} rounds")
    print(f"{'model':<34}{'mode':<40}{'q/s':>8}{'vs ref':>8}{'vs own 1':>9}{'MB':>7}")
    for row in rows:
        print(f"{row['model'][-33:]:<34}{row['mode']:<40}{row['q_per_s']:>8.2f}{row['vs_reference']:>7.2f}x"
              f"{row['vs_own_one_per_call']:>8.2f}x{row['size_mb']:>7.1f}")
    if args.out:
        args.out.write_text(json.dumps({"data": str(args.data), "questions": len(questions), "threads": args.threads,
                                        "rounds": args.rounds, "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
