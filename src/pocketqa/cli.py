"""The ``pocketqa`` command line: thin subcommands that parse, call one function, print.

Every user mistake (bad file, bad flag value, missing model) exits with code 2 and one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PocketQAError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model dir, hub id or pip:NAME (default: the bundled model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")


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
    from .answerer import QuestionAnswerer

    return QuestionAnswerer.from_pretrained(
        args.model,
        device=args.device,
        threads=args.threads,
        threshold=threshold,
        batch_size=args.batch_size,
        **_window_kwargs(args),
    )


# -- ask ------------------------------------------------------------------------------


def _add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer one question about a passage")
    _model_arg(p)
    p.add_argument("--question", "-q", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--context", "-c", help="the passage text")
    src.add_argument("--context-file", type=Path, help="a UTF-8 text file holding the passage")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--threshold", type=float, default=None, help="abstain when null_odds > this")
    p.add_argument("--no-abstain", action="store_true", help="always give the best span")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ask)


def cmd_ask(args) -> int:
    if args.context_file is not None:
        try:
            context = args.context_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PocketQAError(f"{args.context_file}: cannot read context file ({e})") from None
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
    p.add_argument("--threshold", type=float, default=None)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from .squad import load_squad, write_json_atomic

    examples = load_squad(args.data)  # validate before loading the model
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
    p.add_argument("--na-prob-thresh", type=float, default=1.0, help="as the official script (with --null-odds)")
    p.add_argument("--null-threshold", type=float, default=None, help="with --model: abstain when null_odds > T")
    p.add_argument("--save-threshold", action="store_true", help="with --model: store the best-F1 threshold")
    p.add_argument("--out", type=Path, default=None, help="write the scores JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate_model, evaluate_files

    if args.predictions is not None:
        if args.save_threshold:
            raise PocketQAError("--save-threshold needs --model (it writes into the model directory)")
        scores = evaluate_files(args.data, args.predictions, args.null_odds, args.na_prob_thresh)
        print(json.dumps(scores, indent=2))
    else:
        if args.null_odds is not None:
            raise PocketQAError("--null-odds reads a file with --predictions; with --model odds are computed")
        qa = _load_answerer(args, threshold=args.null_threshold)
        report = evaluate_model(qa, args.data, save_threshold=args.save_threshold, model_arg=args.model)
        print(report["table"])
        scores = report["scores"]
        print(json.dumps(scores, indent=2))
    if args.out:
        from .squad import write_json_atomic

        write_json_atomic(scores, args.out, indent=2)
    return 0


# -- serve ----------------------------------------------------------------------------


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (JSON API with batching, /docs, a page at /)")
    _model_arg(p)
    _window_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="require this X-API-Key on /v1/* (default: $POCKETQA_API_KEY)")
    p.add_argument("--max-batch", type=int, default=32, help="most questions per model call (1 = no batching)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a question waits for others to batch with")
    p.add_argument("--max-context-chars", type=int, default=20_000)
    p.add_argument("--max-question-chars", type=int, default=1_000)
    p.add_argument("--max-batch-items", type=int, default=64, help="most items in one /v1/answer/batch request")
    p.add_argument("--max-body-bytes", type=int, default=2_000_000)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from .serve import Limits, serve

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
        **_window_kwargs(args),
    )
    return 0


# -- entry point ----------------------------------------------------------------------

COMMANDS = [_add_ask, _add_predict, _add_evaluate, _add_serve]


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
