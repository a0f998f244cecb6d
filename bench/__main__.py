"""``python -m bench <suite> [options]``: runs one benchmark suite and prints its markdown table.

Suites: inference, host, training, distillation, serving, augmentation, calibration, batch (bench/README.md).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = {
    "inference": "QuestionAnswerer (PyTorch, ONNX fp32 / int8) vs transformers' QA pipeline",
    "host": "windowing + decoding of many questions (model forward free) vs the reference they replaced",
    "training": "pocketqa's training loop vs transformers' Trainer and run_squad.py's loop",
    "distillation": "stage-2 steps with cached teacher logits vs the teacher run every step",
    "serving": "pocketqa serve with micro-batching vs without, under 1 and N concurrent clients",
    "augmentation": "masked-LM candidates batched vs one masked word per forward pass; augment throughput",
    "calibration": "F1 at thresholds calibrated for simulated domains vs the stored threshold",
    "batch": "predict --engine ray (Ray Data actors) vs one process over Parquet shards",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    modules = {}
    for name, help_text in SUITES.items():
        module = importlib.import_module(f"bench.suites.{name}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__.split("\n\n")[0])
        module.add_arguments(p)
        modules[name] = module
    args = parser.parse_args(argv)
    result = modules[args.suite].run(args)
    result.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
