"""Benchmark `pocketqa augment` x20 on SQuAD 2.0 train with a 6-layer MiniLM masked LM on one GPU.

Builds BertForMaskedLM from the base encoder in ``--encoder`` (a BertModel checkpoint:
its weights load into the encoder, the MLM head is random unless ``--head`` names a
masked-LM dir fitted by ``pocketqa mlm-head``, or ``--fit-head-steps N`` fits one first, on
the same GPU), augments the first ``--limit-paragraphs``
paragraphs of the train file, checks the output (``load_squad`` validates every
answer_start and id), and projects the time for the whole file.

Side by side, on the same first ``--anchor-paragraphs`` paragraphs, it times the anchors'
way of querying the MLM (TinyBERT's ``_word_augment``: one masked word per forward
pass) against the batched one (many masked words per forward pass) and prints the ratio.

One command (writes $OUT/augment_bench.json):

    PYTHONPATH=src python bench/augment_gpu.py --limit-paragraphs 2000 --fit-head-steps 1000 --out-dir $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pocketqa.augment.edits import AugmentConfig, candidate_requests, select_paragraphs, write_augmented  # noqa: E402
from pocketqa.augment.mlm import MaskedLMCandidates, load_masked_lm  # noqa: E402
from pocketqa.recipes.mlm_head import MLMHeadConfig, fit_mlm_head  # noqa: E402
from pocketqa.data.squad import load_squad  # noqa: E402


def load_head(model, head_dir: Path) -> int:
    """Copies the LM-head weights (everything outside the encoder) of a fitted masked-LM dir into ``model``."""
    from safetensors.torch import load_file

    state = load_file(head_dir / "model.safetensors")
    prefix = model.base_model_prefix + "."
    head = {k: v for k, v in state.items() if not k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(head, strict=False)
    if unexpected:
        raise SystemExit(f"{head_dir}: unexpected head weights {unexpected[:5]}")
    return len(head)


def time_candidates(source: MaskedLMCandidates, paragraphs, sync) -> float:
    requests = [r for par in paragraphs for r in candidate_requests(par.context, par.examples, False)]
    start = time.perf_counter()
    source.candidates_many(requests)
    sync()
    return time.perf_counter() - start


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(".carry/data/train-v2.0.json.gz"))
    parser.add_argument("--encoder", default=".carry/minilm", help="BertModel dir (weights + tokenizer)")
    parser.add_argument("--head", type=Path, default=None, help="masked-LM dir from `pocketqa mlm-head`")
    parser.add_argument("--fit-head-steps", type=int, default=0,
                        help="first fit a head on the encoder with `mlm-head` for this many steps (0: random head)")
    parser.add_argument("--fit-eval-contexts", type=int, default=200)
    parser.add_argument("--factor", type=int, default=20)
    parser.add_argument("--replace-prob", type=float, default=0.4)
    parser.add_argument("--candidates", type=int, default=15)
    parser.add_argument("--limit-paragraphs", type=int, default=2000)
    parser.add_argument("--anchor-paragraphs", type=int, default=40, help="paragraphs for the one-word-per-pass timing")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out-dir", type=Path, default=Path(os.environ.get("OUT", tempfile.gettempdir())))
    parser.add_argument("--keep-output", action="store_true", help="also leave the augmented JSON in --out-dir")
    args = parser.parse_args()

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = torch.device(device).type == "cuda"
    sync = (lambda: torch.cuda.synchronize()) if on_gpu else (lambda: None)
    config = AugmentConfig(factor=args.factor, replace_prob=args.replace_prob, candidates=args.candidates)

    t0 = time.perf_counter()
    paragraphs = select_paragraphs(args.data, config)
    load_s = time.perf_counter() - t0
    subset = paragraphs[: args.limit_paragraphs]

    head_report = None
    if args.fit_head_steps > 0:
        head_dir = Path(tempfile.mkdtemp()) / "mlm"
        head_config = MLMHeadConfig(steps=args.fit_head_steps, batch_size=64, eval_contexts=args.fit_eval_contexts)
        head_report = fit_mlm_head(args.encoder, args.data, head_dir, head_config, device=device)
        args.head = head_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random head is expected without --head
        model, tokenizer, head_missing = load_masked_lm(
            args.encoder, device=device, dtype=torch.float16 if on_gpu else torch.float32
        )
    head_tensors = load_head(model, args.head) if args.head else 0
    source = MaskedLMCandidates(
        model, tokenizer, top_k=args.candidates, batch_size=args.batch_size, max_length=args.max_length
    )

    # Warm-up (CUDA context, kernels), then the anchor-style and batched timings on the same paragraphs.
    anchor_pars = subset[: args.anchor_paragraphs]
    time_candidates(source, subset[-8:], sync)
    one_per_pass = MaskedLMCandidates(model, tokenizer, top_k=args.candidates, batch_size=1, max_length=args.max_length)
    anchor_s = time_candidates(one_per_pass, anchor_pars, sync)
    batched_s = time_candidates(source, anchor_pars, sync)
    source.stats = {k: 0 if isinstance(v, int) else 0.0 for k, v in source.stats.items()}

    out_dir = args.out_dir if args.keep_output else Path(tempfile.mkdtemp())
    out_path = out_dir / "train-aug.json"
    start = time.perf_counter()
    stats = write_augmented(subset, out_path, source, config, progress=True, meta={"source": args.data.name})
    sync()
    run_s = time.perf_counter() - start

    check_start = time.perf_counter()
    augmented = load_squad(out_path)  # raises on any answer_start that misses its text or a repeated id
    check_s = time.perf_counter() - check_start
    out_mb = out_path.stat().st_size / 1e6
    if not args.keep_output:
        out_path.unlink()

    rate = len(subset) / run_s
    result = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "torch": torch.__version__,
        "encoder": args.encoder,
        "head": str(args.head) if args.head else ("random" if head_missing else "from checkpoint"),
        "head_tensors_loaded": head_tensors,
        "head_fit": head_report and {
            "steps": args.fit_head_steps, "seconds": head_report["train_seconds"],
            "before": head_report["before"], "after": head_report["after"],
        },
        "factor": args.factor,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "paragraphs": len(subset),
        "paragraphs_total": len(paragraphs),
        "questions_in": stats["questions_in"],
        "questions_out": stats["questions_out"],
        "output_mb": round(out_mb, 1),
        "load_s": round(load_s, 1),
        "run_s": round(run_s, 1),
        "paragraphs_per_s": round(rate, 1),
        "mlm_rows": source.stats["mlm_rows"],
        "mlm_s": round(source.stats["mlm_seconds"], 1),
        "mlm_rows_per_s": round(source.stats["mlm_rows"] / max(source.stats["mlm_seconds"], 1e-9)),
        "nn_words": source.stats["nn_words"],
        "validated_examples": len(augmented),
        "validate_s": round(check_s, 1),
        "projected_full_s": round(len(paragraphs) / rate, 1),
        "projected_full_questions": round(stats["questions_out"] / max(len(subset), 1) * len(paragraphs)),
        "anchor_paragraphs": len(anchor_pars),
        "anchor_one_word_per_pass_s": round(anchor_s, 2),
        "batched_s": round(batched_s, 3),
        "batched_speedup": round(anchor_s / max(batched_s, 1e-9), 1),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{len(subset)} paragraphs x{args.factor} in {run_s:.1f} s = {rate:.1f} paragraphs/s on {result['device']}; "
        f"MLM {result['mlm_rows_per_s']} masked words/s ({result['mlm_s']} s of the run); "
        f"projected full train set ({len(paragraphs)} paragraphs): {result['projected_full_s'] / 60:.1f} min, "
        f"~{result['projected_full_questions']} questions"
    )
    if head_report:
        before, after = head_report["before"], head_report["after"]
        print(
            f"fitted MLM head ({args.fit_head_steps} steps, {head_report['train_seconds']} s): held-out masked-token "
            f"top-1 {before['top1_accuracy']:.3f} -> {after['top1_accuracy']:.3f}, "
            f"top-15 {before['top15_accuracy']:.3f} -> {after['top15_accuracy']:.3f}"
        )
    print(
        f"MLM candidates on {len(anchor_pars)} paragraphs: one word per forward pass (as TinyBERT's _word_augment) "
        f"{anchor_s:.2f} s vs batched {batched_s:.3f} s -> ratio {result['batched_speedup']}x"
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "augment_bench.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
