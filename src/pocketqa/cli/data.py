"""``pocketqa convert``: question files between SQuAD JSON and the squad_v2 row layouts."""

from __future__ import annotations

from pathlib import Path

from pocketqa.cli.common import output_file
from pocketqa.errors import PocketQAError


def add_convert(sub) -> None:
    from pocketqa.data.formats import FORMATS
    from pocketqa.data.squad import OFFSET_MODES

    p = sub.add_parser(
        "convert",
        help="convert a question file between SQuAD JSON and .parquet / .jsonl / .json rows / .csv",
        description="Reads IN (any layout pocketqa reads, hf: ids included), validates it, and writes OUT in the "
        "layout its name says: .json is SQuAD JSON (--to json writes a JSON array of rows), .parquet, .jsonl and "
        ".csv hold one squad_v2 row per question; .gz compresses .json, .jsonl and .csv.",
    )
    p.add_argument("input", metavar="IN", help="the file (or hf:NAME[:CONFIG]:SPLIT) to read")
    p.add_argument("output", metavar="OUT", type=Path, help="the file to write")
    p.add_argument("--format", choices=FORMATS, default=None, help="layout of IN (default: from its name)")
    p.add_argument("--to", choices=tuple(f for f in FORMATS if f != "hf"), default=None,
                   help="layout of OUT (default: from its name; .json is SQuAD JSON)")
    p.add_argument("--offsets", choices=OFFSET_MODES, default="strict",
                   help="an answer_start that misses its text: strict refuses IN, repair moves it to the nearest "
                        "occurrence (dropping answers not in the context), ignore copies it as is (default strict)")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from pocketqa.data.formats import detect_format, load_examples, write_examples

    output_file(args.output, "OUT", (("IN", args.input),))
    to = args.to or detect_format(args.output)  # an unknown OUT name fails before IN is read
    if to == "hf":
        raise PocketQAError(f"OUT {args.output}: cannot write to the hub; name a .json, .parquet, .jsonl or .csv file")
    examples = load_examples(args.input, format=args.format, offsets=args.offsets)
    n = write_examples(examples, args.output, format=args.to)
    print(f"wrote {n} questions from {args.input} to {args.output}")
    return 0


def register(sub) -> None:
    add_convert(sub)
