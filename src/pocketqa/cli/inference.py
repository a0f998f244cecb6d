"""``pocketqa ask``, ``predict`` and ``evaluate``: answers and scores from a model or a file."""

from __future__ import annotations

import json
from pathlib import Path

from pocketqa.cli.batch import add_engine_args, refuse_ray_flags, run_ray_predict
from pocketqa.cli.common import finite_float, positive_int, load_answerer, model_args, output_file, window_args
from pocketqa.errors import PocketQAError

def add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer one question about a passage")
    model_args(p)
    p.add_argument("--question", "-q", required=True, help="the question to answer")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--context", "-c", help="the passage text")
    src.add_argument("--context-file", type=Path, help="a UTF-8 text file holding the passage")
    p.add_argument("--top-k", type=positive_int, default=1, help="how many answers to show, best first (default 1)")
    p.add_argument("--threshold", type=finite_float, default=None,
                   help="abstain when null_odds > this (default: the threshold calibrated in the model's pocketqa.json, else 0)")
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
    qa = load_answerer(args, threshold=args.threshold)
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



def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict answers for a SQuAD file (official prediction format)")
    model_args(p)
    window_args(p)
    p.add_argument("--data", type=Path, required=True, help="SQuAD 1.1/2.0 JSON or .json.gz")
    p.add_argument("--out", type=Path, required=True, help="predictions JSON {qid: text}")
    p.add_argument("--null-odds", type=Path, default=None, help="also write {qid: null_odds} (na-prob file)")
    p.add_argument("--threshold", type=finite_float, default=None,
                   help="abstain when null_odds > this (default: the threshold calibrated in the model's pocketqa.json, else 0)")
    add_engine_args(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from pocketqa.evaluation.scoring import load_questions
    from pocketqa.data.squad import write_json_atomic

    if args.engine == "ray":
        return run_ray_predict(args)
    refuse_ray_flags(args)
    output_file(args.out, "--out", (("--data", args.data),))
    if args.null_odds is not None:
        output_file(args.null_odds, "--null-odds", (("--data", args.data), ("--out", args.out)))
    examples = load_questions(args.data)  # validate before loading the model
    qa = load_answerer(args, threshold=args.threshold)
    preds, odds = qa.predict(examples, progress=True)
    write_json_atomic(preds, args.out, indent=2)
    if args.null_odds:
        write_json_atomic(odds, args.null_odds, indent=2)
    print(f"wrote {len(preds)} predictions to {args.out}" + (f" and null odds to {args.null_odds}" if args.null_odds else ""))
    return 0



def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="official SQuAD 2.0 scores of a predictions file, or of a model (--model) on a data file",
    )
    model_args(p)
    window_args(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--predictions", type=Path, default=None, help="predictions JSON (else --model predicts)")
    p.add_argument("--null-odds", type=Path, default=None, help="na-prob file, as the official --na-prob-file")
    p.add_argument("--na-prob-thresh", type=finite_float, default=1.0, help="as the official script (with --null-odds)")
    p.add_argument("--null-threshold", type=finite_float, default=None, help="with --model: abstain when null_odds > T")
    p.add_argument("--save-threshold", action="store_true", help="with --model: store the best-F1 threshold")
    p.add_argument("--out", type=Path, default=None, help="write the scores JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from pocketqa.evaluation.scoring import evaluate_files, evaluate_model

    if args.out is not None:
        output_file(args.out, "--out", (("--data", args.data), ("--predictions", args.predictions),
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
        qa = load_answerer(args, threshold=args.null_threshold)
        report = evaluate_model(qa, args.data, save_threshold=args.save_threshold, model_arg=args.model)
        print(report["table"])
        scores = report["scores"]
        print(json.dumps(scores, indent=2))
    if args.out:
        from pocketqa.data.squad import write_json_atomic

        write_json_atomic(scores, args.out, indent=2)
    return 0




def register(sub) -> None:
    for add in (add_ask, add_predict, add_evaluate):
        add(sub)
