"""``pocketqa ask``, ``predict`` and ``evaluate``: answers and scores from a model or a file."""

from __future__ import annotations

import json
from pathlib import Path

from pocketqa.cli.batch import add_engine_args, refuse_ray_flags, run_ray_predict
from pocketqa.cli.common import (answerer_args, data_args, finite_float, load_answerer, model_args, output_file,
                                 positive_int, window_args, writable)
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
    p.add_argument("--json", action="store_true",
                   help="print JSON, the HTTP API's response shape: {answers, abstained, answerability, threshold}")
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
    response = qa.respond(args.question, context, top_k=args.top_k, abstain=not args.no_abstain)
    if args.json:
        print(json.dumps(response, ensure_ascii=False, indent=2))
        return 0
    for line in describe_response(response):
        print(line)
    return 0


def describe_response(response: dict) -> list[str]:
    """The lines ``ask`` prints: the decision with its answerability, then other distinct candidates.

    Scores shown agree with the decision: answerability is at least 0.5 exactly when the
    model answers, and the no-answer's score is 1 - answerability.
    """
    answers, sure, threshold = response["answers"], response["answerability"], response["threshold"]
    best = answers[0]
    why = f"answerability={sure:.3f} (answers at >= 0.5: null_odds {best['null_odds']:.3f} vs threshold {threshold:.3f})"
    if best["start"] is None:
        lines = [f"(no answer in this passage)  {why}"]
    else:
        lines = [f"{best['answer']}  span=[{best['start']}, {best['end']})  score={best['score']:.3f}  {why}"]
    others = distinct_spans(answers[1:] if best["start"] is not None else answers, shown=[best])
    if others:
        lines.append("best spans, not chosen:" if best["start"] is None else "other candidates:")
        lines += [f"  {a['answer']}  span=[{a['start']}, {a['end']})  score={a['score']:.3f}" for a in others]
    return lines


def distinct_spans(answers: list[dict], shown: list[dict]) -> list[dict]:
    """The span answers that overlap no answer shown before them ("France." after "France")."""
    taken = [(a["start"], a["end"]) for a in shown if a["start"] is not None]
    out = []
    for a in answers:
        if a["start"] is None or any(a["start"] < e and s < a["end"] for s, e in taken):
            continue
        taken.append((a["start"], a["end"]))
        out.append(a)
    return out



def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict answers for a data file (official JSON, JSON Lines or Parquet)")
    model_args(p)
    window_args(p)
    data_args(p, offsets=None)  # predict never reads gold answers
    p.add_argument("--out", type=Path, required=True,
                   help="predictions: .json is the official {qid: text}; .jsonl / .jsonl.gz / .parquet one row per "
                        "question (id, answer, start, end, score, null_odds, answerability, abstained)")
    p.add_argument("--null-odds", type=Path, default=None,
                   help="also write {qid: null_odds} (na-prob file); the .json predictions then hold each question's "
                        "best span, for the official script's --na-prob-thresh")
    p.add_argument("--threshold", type=finite_float, default=None,
                   help="abstain when null_odds > this (default: the threshold calibrated in the model's pocketqa.json, else 0)")
    add_engine_args(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    import warnings

    from pocketqa.data.predictions import row_format, write_prediction_rows
    from pocketqa.data.squad import write_json_atomic
    from pocketqa.evaluation.scoring import load_questions

    if args.engine == "ray":
        return run_ray_predict(args)
    refuse_ray_flags(args)
    output_file(args.out, "--out", (("--data", args.data),))
    if args.null_odds is not None:
        output_file(args.null_odds, "--null-odds", (("--data", args.data), ("--out", args.out)))
    # Validated before the model loads; gold answers are not read, so a bad offset never stops a prediction.
    examples = load_questions(args.data, args.format, offsets="ignore", gold=False)
    blank = [ex.id for ex in examples if not ex.context.strip() or not ex.question.strip()]
    if blank:
        shown = ", ".join(repr(q) for q in blank[:5]) + (", ..." if len(blank) > 5 else "")
        warnings.warn(f"{len(blank)} question(s) with an empty context or question get no answer (abstained): "
                      f"ids {shown}", UserWarning, stacklevel=1)
    skipped = set(blank)
    todo = [ex for ex in examples if ex.id not in skipped]
    qa = load_answerer(args, threshold=args.threshold)
    decoded = qa.decode_examples(todo, progress=True)
    rows = {r["id"]: r for r in qa.records(todo, decoded, qa.threshold)}
    best = {ex.id: (d.spans[0].text if d.spans else "") for ex, d in zip(todo, decoded)}
    for qid in blank:
        rows[qid] = {"id": qid, "answer": "", "start": None, "end": None, "score": 1.0, "null_odds": 1e6,
                     "answerability": 0.0, "abstained": True}
    rows = [rows[ex.id] for ex in examples]
    if row_format(args.out) is not None:
        write_prediction_rows(args.out, rows, {"model": qa.name, "threshold": qa.threshold, "data": str(args.data)})
    elif args.null_odds is not None:
        # The official scorer thresholds the na-prob file itself (--na-prob-thresh) and searches its best
        # threshold over it; on answers already thresholded here that search comes out wrong.
        write_json_atomic({ex.id: best.get(ex.id, "") for ex in examples}, args.out, indent=2)
        print(f"{args.out} holds each question's best span (not thresholded at {qa.threshold:g}): score it with "
              f"the official --na-prob-file {args.null_odds} and --na-prob-thresh")
    else:
        write_json_atomic({r["id"]: r["answer"] for r in rows}, args.out, indent=2)
    if args.null_odds is not None:
        write_json_atomic({r["id"]: r["null_odds"] for r in rows}, args.null_odds, indent=2)
    print(f"wrote {len(rows)} predictions to {args.out}" + (f" and null odds to {args.null_odds}" if args.null_odds else ""))
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="official SQuAD 2.0 scores of a predictions file, or of a model (--model) on a data file",
    )
    model_args(p)
    window_args(p)
    data_args(p, offsets="repair")
    p.add_argument("--predictions", type=Path, default=None, help="predictions JSON (else --model predicts)")
    p.add_argument("--null-odds", type=Path, default=None, help="na-prob file, as the official --na-prob-file")
    p.add_argument("--na-prob-thresh", type=finite_float, default=1.0, help="as the official script (with --null-odds)")
    p.add_argument("--null-threshold", type=finite_float, default=None, help="with --model: abstain when null_odds > T")
    p.add_argument("--save-threshold", action="store_true",
                   help="with --model: store the best-F1 threshold (under --domain NAME when given)")
    p.add_argument("--save-predictions", type=Path, default=None, metavar="DIR",
                   help="with --model: write predictions.json (best spans), null_odds.json and predictions.jsonl "
                        "(one row per question) into DIR")
    p.add_argument("--out", type=Path, default=None, help="write the scores JSON here")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from pocketqa.evaluation.scoring import evaluate_files, evaluate_model

    if args.out is not None:
        output_file(args.out, "--out", (("--data", args.data), ("--predictions", args.predictions),
                                         ("--null-odds", args.null_odds)))
    if args.save_predictions is not None:
        if args.save_predictions.exists() and not args.save_predictions.is_dir():
            raise PocketQAError(f"--save-predictions {args.save_predictions}: is a file, expected a directory")
        writable(args.save_predictions, "--save-predictions")
    if args.predictions is not None:
        if args.model is not None or args.null_threshold is not None:
            raise PocketQAError("--model / --null-threshold score a model; with --predictions the file is scored "
                                "(its abstentions are in it; see --null-odds and --na-prob-thresh)")
        if args.save_threshold or args.save_predictions is not None:
            raise PocketQAError("--save-threshold and --save-predictions need --model (they save a model's results)")
        scores = evaluate_files(args.data, args.predictions, args.null_odds, args.na_prob_thresh,
                                data_format=args.format, offsets=args.offsets)
        print(json.dumps(scores, indent=2))
    else:
        if args.null_odds is not None:
            raise PocketQAError("--null-odds reads a file with --predictions; with --model odds are computed")
        if args.save_threshold and args.model is None:
            raise PocketQAError("--save-threshold needs an explicit --model (it writes into that model directory; "
                                "the bundled model is not changed)")
        model_dir = Path(args.model) if args.save_threshold and Path(args.model).is_dir() else None
        if model_dir is not None:
            writable(model_dir, "--model")
        qa = load_answerer(answerer_args(args, model_dir), threshold=args.null_threshold)
        report = evaluate_model(qa, args.data, save_threshold=args.save_threshold, model_arg=args.model,
                                data_format=args.format, offsets=args.offsets, save_predictions=args.save_predictions,
                                domain=args.domain)
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
