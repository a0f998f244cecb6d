"""``pocketqa predict --engine ray``: the flags of the Ray Data engine and its run."""

from __future__ import annotations

import argparse
import json
import math

from pocketqa.cli.common import decoding_kwargs, number_type, positive_int, window_kwargs
from pocketqa.errors import PocketQAError

RAY_ONLY = ("actors", "rows_per_batch", "gpus_per_actor", "address", "overwrite", "out_format")


non_negative_float = number_type(float, "a number", lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """``--engine`` and the flags of the Ray engine (see docs/batch.md)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: one process, a SQuAD file in, official JSON out (default); ray: Ray Data over "
                        "row files (.parquet, .jsonl, .csv with id, question, context), --out a directory")
    g = p.add_argument_group("--engine ray")
    g.add_argument("--actors", type=positive_int, default=None, help="actors, each holding one model (default 1)")
    g.add_argument("--rows-per-batch", type=positive_int, default=None,
                   help="questions per actor call; all windows of a question stay in one (default 64)")
    g.add_argument("--gpus-per-actor", type=non_negative_float, default=None,
                   help="GPUs each actor claims; > 0 runs the model with PyTorch on CUDA (default 0: ONNX Runtime "
                        "or PyTorch on CPU, --threads CPUs per actor)")
    g.add_argument("--address", default=None,
                   help="join this Ray cluster (`ray start --head` prints it; auto: the one on this machine); "
                        "default: start a local Ray for this command and stop it after")
    g.add_argument("--overwrite", action="store_true", help="redo input files whose output exists (default: skip them)")
    g.add_argument("--out-format", choices=("parquet", "jsonl"), default=None,
                   help="output file format (default parquet)")


def refuse_ray_flags(args) -> None:
    """The local engine refuses the Ray engine's flags rather than ignoring them."""
    given = [f"--{name.replace('_', '-')}" for name in RAY_ONLY if getattr(args, name) not in (None, False)]
    if given:
        raise PocketQAError(f"{', '.join(given)} only apply with --engine ray")


def run_ray_predict(args) -> int:
    """Runs ``pocketqa predict --engine ray`` and prints a one-line summary (JSON)."""
    from pocketqa.batch.engine import run_batch

    if args.null_odds is not None:
        raise PocketQAError("--null-odds is for --engine local; with --engine ray every output row holds null_odds")
    if args.device is not None:
        raise PocketQAError("--device is for --engine local; with --engine ray, --gpus-per-actor puts actors on GPUs")
    answerer_kwargs = {**decoding_kwargs(args), **window_kwargs(args), "threads": args.threads or 1,
                       "batch_size": args.batch_size}
    summary = run_batch(
        args.data, args.out, model=args.model, threshold=args.threshold, answerer_kwargs=answerer_kwargs,
        actors=args.actors or 1, cpus_per_actor=args.threads or 1, gpus_per_actor=args.gpus_per_actor or 0.0,
        rows_per_batch=args.rows_per_batch or 64, out_format=args.out_format or "parquet",
        overwrite=args.overwrite, address=args.address,
    )
    print(json.dumps({"out": str(args.out), **summary}))
    return 0
