"""``pocketqa calibrate``: the no-answer threshold for a domain, from labeled or unlabeled questions."""

from __future__ import annotations

import json
from pathlib import Path

from pocketqa.cli.common import answerer_args, data_args, load_answerer, model_args, number_type, output_file, window_args
from pocketqa.errors import PocketQAError

answerable_rate = number_type(float, "a share", lambda v: 0.0 < v <= 1.0, "must be in (0, 1]")
resample_count = number_type(int, "a whole number", lambda v: v >= 0, "must be >= 0 (0: no interval)")


def add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="pick the no-answer threshold for a domain: best F1 on labeled questions, or from the share "
             "of unlabeled questions expected to be answerable",
    )
    model_args(p)
    window_args(p)
    data_args(p, offsets="repair")  # unlabeled questions: empty answers (SQuAD JSON "answers": [])
    p.add_argument("--answerable-rate", type=answerable_rate, default=None, metavar="R",
                   help="the share of these questions you expect to have an answer: abstain on the share 1 - R "
                        "(no labels needed; with labels, R still picks the threshold and the labels only score it)")
    p.add_argument("--bootstrap", type=resample_count, default=1000, metavar="N",
                   help="bootstrap resamples for the interval of the labeled threshold and its F1 (default 1000; "
                        "0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--save", action="store_true",
                   help="store the threshold in the model's pocketqa.json: under --domain NAME beside the default, "
                        "or without --domain as the default (needs an explicit --model directory)")
    p.add_argument("--out", type=Path, default=None, help="write the report JSON here")
    p.set_defaults(func=cmd_calibrate)


def save_target(args) -> Path | None:
    """The model directory --save writes into, checked before any work (None without --save)."""
    from pocketqa.models import default_model_path, resolve_model

    if not args.save:
        return None
    bundled = "--save needs an explicit --model directory (it writes into that model's pocketqa.json; " \
              "the bundled model is not changed)"
    if args.model is None:
        raise PocketQAError(bundled)
    model_dir = Path(resolve_model(args.model))
    if not model_dir.is_dir():
        raise PocketQAError(f"--save needs a local model directory, got --model {args.model!r}")
    if model_dir.resolve() == Path(default_model_path()).resolve():
        raise PocketQAError(bundled + "; copy it to a directory of your own first")
    return model_dir


def cmd_calibrate(args) -> int:
    from pocketqa.data.squad import write_json_atomic
    from pocketqa.evaluation.calibration import (
        calibrate,
        calibration_entry,
        check_method,
        format_table,
        load_calibration_questions,
    )
    from pocketqa.modeldir import META_FILE, store_threshold

    if args.out is not None:
        output_file(args.out, "--out", (("--data", args.data),))
    model_dir = save_target(args)
    examples = load_calibration_questions(args.data, args.format, args.offsets)  # validate before loading the model
    check_method(examples, args.answerable_rate, str(args.data))
    qa = load_answerer(answerer_args(args, model_dir))
    report = calibrate(qa, examples, args.answerable_rate, resamples=args.bootstrap, seed=args.seed, progress=True)
    report["data"] = str(args.data)
    report["scoring"] = qa.scoring
    if model_dir is not None:
        store_threshold(model_dir, qa.scoring, report["threshold"], calibration_entry(report, args.data, qa),
                        domain=args.domain)
        report["saved"] = {"file": str(model_dir / META_FILE), "domain": args.domain, "threshold": report["threshold"]}
    print(format_table(report))
    if model_dir is not None:
        where = f"domain {args.domain!r}" if args.domain else "the default threshold"
        print(f"saved as {where} ({qa.scoring} scoring) in {model_dir / META_FILE}")
    print(json.dumps(report, indent=2))
    if args.out is not None:
        write_json_atomic(report, args.out, indent=2)
    return 0


def register(sub) -> None:
    add_calibrate(sub)
