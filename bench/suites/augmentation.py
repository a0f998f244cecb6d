"""Augmentation: masked-LM candidates batched (pocketqa) vs one masked word per forward pass.

On the same first ``--compare-paragraphs`` paragraphs of a SQuAD 2.0 training file, the
two arms ask the masked LM for replacement candidates of every eligible word:

- ``one word per pass`` (the anchor): one masked word per forward pass, as TinyBERT's
  ``_word_augment`` queries its MLM;
- ``batched``: what ``pocketqa augment`` does, many masked words from many paragraphs
  per forward pass, sorted by length.

Then one timed ``pocketqa augment`` run (``--factor`` copies of the first ``--paragraphs``
paragraphs, written to a temporary file and validated by ``load_examples``, which checks
every answer_start and id) gives paragraphs per second and the projected time for the
whole file. The default MLM is a random-weight MiniLM-L6 (a random head: the timing is
real, the words are noise); ``--mlm DIR`` takes a masked LM as ``pocketqa augment --mlm``
does (e.g. one fitted by ``pocketqa mlm-head``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from bench.harness import Arm, Results, add_common_arguments, cuda_sync, model_dir, say, setup, squad_file, take_turns


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=2)
    p.add_argument("--train", type=Path, default=None, help="SQuAD 2.0 training file")
    p.add_argument("--mlm", default="minilm-l6", help="masked LM dir, or a random-weight shape (default minilm-l6)")
    p.add_argument("--layers", type=int, default=None, help="fewer layers in a random-weight MLM (quick runs)")
    p.add_argument("--compare-paragraphs", type=int, default=40,
                   help="paragraphs for the batched vs one-word comparison (default 40)")
    p.add_argument("--paragraphs", type=int, default=2000, help="paragraphs for the augment throughput run")
    p.add_argument("--factor", type=int, default=20)
    p.add_argument("--replace-prob", type=float, default=0.4)
    p.add_argument("--candidates", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=512, help="masked words per forward pass (batched)")
    p.add_argument("--max-length", type=int, default=128)


def run(args: argparse.Namespace) -> Results:
    import torch

    from pocketqa.augment.edits import AugmentConfig, candidate_requests
    from pocketqa.augment.runner import select_paragraphs, write_augmented
    from pocketqa.augment.mlm import MaskedLMCandidates, load_masked_lm
    from pocketqa.data.formats import load_examples

    setup(args)
    results = Results("augmentation", args)
    on_gpu = args.device.startswith("cuda")
    config = AugmentConfig(factor=args.factor, replace_prob=args.replace_prob, candidates=args.candidates)
    train = squad_file(args.train, "train", "--train")
    t0 = time.perf_counter()
    paragraphs = select_paragraphs(train, config)
    load_seconds = time.perf_counter() - t0
    compared = paragraphs[: args.compare_paragraphs]
    requests = [r for par in compared for r in candidate_requests(par.context, par.examples, False)]
    with tempfile.TemporaryDirectory(prefix="pocketqa-augment-bench-") as tmp:
        mlm = model_dir(args.mlm, Path(tmp), seed=args.seed, layers=args.layers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a random head is expected for a random-weight model
            model, tokenizer, head_missing = load_masked_lm(mlm, device=args.device,
                                                            dtype=torch.float16 if on_gpu else torch.float32)
        sources = {}

        def arm(name: str, batch_size: int) -> Arm:
            def fresh() -> None:  # a new source per run: no word cached from the last one
                sources[name] = MaskedLMCandidates(model, tokenizer, top_k=args.candidates, batch_size=batch_size,
                                                   max_length=args.max_length)

            def ask() -> None:
                sources[name].candidates_many(requests)

            return Arm(name, ask, work=len(compared), before=fresh, sync=cuda_sync(args.device))

        arms = [arm("one word per pass", 1), arm("batched", args.batch_size)]
        warm = MaskedLMCandidates(model, tokenizer, top_k=args.candidates, batch_size=args.batch_size,
                                  max_length=args.max_length)
        warm.candidates_many(requests[:8])
        say(f"{len(compared)} paragraphs, {sum(len(s) for _, s in requests)} eligible words")
        samples = take_turns(arms, args.rounds, "MLM candidates", "paragraphs/s")
        results.compare(f"MLM candidates, {len(compared)} paragraphs", samples, anchor="one word per pass",
                        unit="paragraphs/s")

        subset = paragraphs[: args.paragraphs]
        source = MaskedLMCandidates(model, tokenizer, top_k=args.candidates, batch_size=args.batch_size,
                                    max_length=args.max_length)
        out = Path(tmp) / "train-aug.json"
        t0 = time.perf_counter()
        stats = write_augmented(subset, out, source, config, progress=False, meta={"source": train.name})
        run_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        validated = len(load_examples(out))  # raises on any answer_start that misses its text or a repeated id
        validate_seconds = time.perf_counter() - t0
    rate = len(subset) / run_seconds
    results.settings = {
        "train": str(train), "mlm": args.mlm, "mlm_head": "random" if head_missing else "from checkpoint",
        "factor": args.factor, "replace_prob": args.replace_prob, "candidates": args.candidates,
        "batch_size": args.batch_size, "max_length": args.max_length, "load_seconds": round(load_seconds, 1),
        "augment": {"paragraphs": len(subset), "paragraphs_total": len(paragraphs), **stats,
                    "seconds": round(run_seconds, 1), "paragraphs_per_s": round(rate, 2),
                    "mlm_rows_per_s": round(source.stats["mlm_rows"] / max(source.stats["mlm_seconds"], 1e-9)),
                    "validated_examples": validated, "validate_seconds": round(validate_seconds, 1),
                    "projected_full_file_minutes": round(len(paragraphs) / rate / 60, 1)},
    }
    results.notes.append(
        f"augment x{args.factor}: {len(subset)} paragraphs -> {stats['questions_out']} questions in {run_seconds:.1f} s "
        f"({rate:.2f} paragraphs/s), all {validated} validated by load_examples; the whole file "
        f"({len(paragraphs)} paragraphs) would take about {len(paragraphs) / rate / 60:.1f} min here")
    return results
