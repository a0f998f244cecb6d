"""``pocketqa train``, ``distill``, ``augment`` and ``mlm-head``: the commands that train.

The flags of train, distill and augment are generated from their config classes
(:func:`pocketqa.config.add_flags`), so a recipe key, a flag and a field are one name.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pocketqa.augment.edits import AugmentConfig
from pocketqa.augment.runner import merge_shards, parse_shard
from pocketqa.cli.common import add_recipe_flag, build_config, device, fresh_out_dir, output_file, writable
from pocketqa.config import add_flags, flag_values
from pocketqa.errors import ConfigError
from pocketqa.recipes.configs import DistillConfig, MLMHeadConfig, TrainConfig



def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune an encoder for extractive QA (SQuAD 2.0); flags override --recipe values",
        description="Fine-tune an encoder for extractive QA. Every flag overrides the same key of --recipe. "
        "Under torchrun (torchrun --nproc-per-node N -m pocketqa train ...) the processes split each "
        "global batch (--batch-size) between them.",
    )
    add_recipe_flag(p)
    add_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from pocketqa.recipes.finetune import train

    config = build_config(TrainConfig, args.recipe, flag_values(args, TrainConfig), "pocketqa train",
                          inputs=("train",), optional_inputs=("dev",))
    writable(Path(config.out), "--out")
    result = train(config)
    if result["metrics"] is not None:
        print(_dev_line(result["metrics"]))
    if result["rank"] == 0:
        print(f"trained {result['steps']} steps; model saved to {result['out']}")
    return 0


def _dev_line(m: dict) -> str:
    """The dev scores a training command ends with; both commands store the best-F1 threshold."""
    return (f"dev EM {m['exact']:.2f} F1 {m['f1']:.2f}; best F1 {m['best_f1']:.2f} at threshold "
            f"{m['best_f1_thresh']:.3f} (stored in pocketqa.json)")


def add_distill(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="TinyBERT two-stage distillation of a QA teacher into a smaller student; flags override --recipe",
        description="Stage 1 distils embeddings, hidden states and attentions (MSE), stage 2 the start/end "
        "distributions (KL over context + CLS, teacher logits cached on disk). Every flag overrides the same "
        "key of --recipe.",
    )
    add_recipe_flag(p)
    groups = add_flags(p, DistillConfig)
    groups["runtime"].add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_distill)


# A student checkpoint given on the command line (e.g. stage 1's output) replaces the
# recipe's way of building one.
_STUDENT_BUILD = ("student_base", "student_layers", "hidden", "heads", "intermediate")


def cmd_distill(args) -> int:
    from pocketqa.recipes.distill import distill

    config = build_config(DistillConfig, args.recipe, flag_values(args, DistillConfig), "command line",
                          inputs=("train",), optional_inputs=("dev",), replaced_by={"student": _STUDENT_BUILD})
    writable(Path(config.out), "--out")
    summary = distill(config, progress=not args.no_progress)
    if summary.get("bridge"):
        print(f"vocabulary bridge: {summary['bridge']}")
    for stage in ("stage1", "stage2"):
        if stage in summary:
            s = summary[stage]
            print(f"{stage}: {s['steps']} steps in {s['seconds']} s, loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}")
    if "stage2" in summary:
        cache = summary["stage2"]["teacher_cache"]
        print(f"teacher logits: cache {cache['status']} ({cache['path']})")
    if "dev" in summary:
        print(_dev_line(summary["dev"]))
    print(f"student saved to {summary['out']}")
    return 0


def add_augment(sub) -> None:
    p = sub.add_parser(
        "augment",
        help="TinyBERT-style xN augmentation of a SQuAD file that keeps every answer valid",
        description="Writes N noisy copies of each paragraph (words replaced by masked-LM / word-vector "
        "candidates); answers are never touched and every answer_start is recomputed. "
        "With --merge SHARD...: concatenate the outputs of a --shard K/N run into --out.",
    )
    p.add_argument("--data", type=Path, default=None, help="data to augment: SQuAD JSON or squad_v2 rows (.parquet, .jsonl, .csv; see docs/data.md)")
    p.add_argument("--out", type=Path, required=True, help="output SQuAD 2.0 JSON (.json or .json.gz)")
    p.add_argument("--mlm", default=None, help="masked-LM dir, hub id or pip:NAME (bert-base-uncased as in TinyBERT)")
    p.add_argument("--word-vectors", type=Path, default=None, help="GloVe text file for multi-piece words")
    groups = add_flags(p, AugmentConfig)
    runtime = groups["runtime"]
    runtime.add_argument("--batch-size", type=int, default=256, help="masked words per MLM forward pass")
    runtime.add_argument("--max-length", type=int, default=128, help="tokens of context around each masked word")
    runtime.add_argument("--device", type=device, default=None, help="cpu, cuda ... (default: cuda when available)")
    runtime.add_argument("--shard", default="0/1", help="K/N: only paragraphs i with i %% N == K (K from 0)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="SHARD", help="merge shard outputs")
    p.set_defaults(func=cmd_augment)


def cmd_augment(args) -> int:
    import warnings


    if args.merge:
        output_file(args.out, "--out", tuple(("--merge", shard) for shard in args.merge))
        stats = merge_shards(args.merge, args.out)
        print(f"merged {stats['shards']} shards: {stats['questions']} questions in {stats['paragraphs']} paragraphs -> {args.out}")
        return 0
    missing = [flag for flag, value in (("--data", args.data), ("--mlm", args.mlm)) if value is None]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required (or --merge SHARD... to merge shard outputs)")
    output_file(args.out, "--out", (("--data", args.data),))
    shard_index, num_shards = parse_shard(args.shard)
    config = AugmentConfig(**flag_values(args, AugmentConfig), shard_index=shard_index, num_shards=num_shards)
    from pocketqa.augment.mlm import augment_with_mlm

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = augment_with_mlm(
            args.data, args.out, args.mlm, config, word_vectors=args.word_vectors, device=args.device,
            batch_size=args.batch_size, max_length=args.max_length,
        )
    for w in caught:
        if issubclass(w.category, UserWarning) and "pocketqa" in str(w.filename):
            print(f"pocketqa augment: warning: {w.message}", file=sys.stderr)
    print(
        f"wrote {stats['questions_out']} questions in {stats['paragraphs_out']} paragraphs to {args.out} "
        f"(from {stats['questions_in']} questions, {stats['paragraphs_in']} paragraphs; {stats['seconds']} s)"
    )
    return 0


def add_mlm_head(sub) -> None:
    p = sub.add_parser(
        "mlm-head",
        help="fit a masked-LM head on a frozen encoder (for `augment --mlm`) and report masked-token accuracy",
    )
    p.add_argument("--encoder", default="pip:all-MiniLM-L6-v2", help="encoder dir, hub id or pip:NAME")
    p.add_argument("--data", type=Path, required=True, help="SQuAD JSON whose contexts train the head")
    p.add_argument("--out", type=Path, required=True, help="output masked-LM directory")
    add_flags(p, MLMHeadConfig)
    p.add_argument("--device", type=device, default=None, help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=cmd_mlm_head)


def cmd_mlm_head(args) -> int:
    from pocketqa.recipes.mlm_head import fit_mlm_head

    fresh_out_dir(args.out, args.overwrite)
    config = MLMHeadConfig(**flag_values(args, MLMHeadConfig))
    report = fit_mlm_head(args.encoder, args.data, args.out, config, device=args.device)
    before, after = report["before"], report["after"]
    k = config.top_k
    print(
        f"held-out masked-token accuracy ({after['masked_tokens']} tokens): top-1 {before['top1_accuracy']:.3f} -> "
        f"{after['top1_accuracy']:.3f}, top-{k} {before[f'top{k}_accuracy']:.3f} -> {after[f'top{k}_accuracy']:.3f}; "
        f"saved {args.out}"
    )
    return 0


def register(sub) -> None:
    for add in (add_augment, add_mlm_head, add_train, add_distill):
        add(sub)
