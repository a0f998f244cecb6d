"""Compares pocketqa.evaluation.metrics.squad_v2_eval with the official SQuAD 2.0 evaluate-v2.0.py.

Builds a deterministic mixed prediction file on a SQuAD 2.0 JSON file (each question gets,
at random with a fixed seed: a gold answer, a gold answer with extra words, punctuation or
case changes, a random span of the context, or ""), plus a no-answer probability file
(random floats in [0, 1.35), higher on average for unanswerable questions so the best
threshold lies inside the range, half rounded to 2 decimals so that ties occur), then runs
the official script as a subprocess without the na file, with it, and with it plus
--na-prob-thresh 0.5, and reports the absolute difference per key.

The official script is not part of pocketqa; pass its path (download it from
https://rajpurkar.github.io/SQuAD-explorer/, "Evaluation Script v2.0").

Usage (from the repository root):
    python -m bench.tools.metrics_official OFFICIAL_SCRIPT DEV_JSON[.gz] [--workdir DIR] [--seed N]

Prints both outputs and the per-key differences as JSON. Exit code 0 when every key
matches within 1e-9 in every configuration, else 1.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from pocketqa.evaluation.metrics import squad_v2_eval

TOLERANCE = 1e-9


def load_json(path: Path) -> dict:
    """Reads a JSON file, gunzipping it when its name ends in .gz."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def perturb(text: str, rng: random.Random) -> str:
    """A gold answer with extra words, punctuation, articles or case changes."""
    kind = rng.randrange(6)
    if kind == 0:
        return "The " + text + "."
    if kind == 1:
        return text.upper() + "!!"
    if kind == 2:
        return f"  {text.lower()} , "
    if kind == 3:
        return text + " " + rng.choice(["and more", "of course", "in 1990", "a b c"])
    if kind == 4:
        return rng.choice(["about ", "roughly ", "an "]) + text
    words = text.split()
    return " ".join(words[: max(1, len(words) - 1)])  # drop the last word


def random_span(context: str, rng: random.Random) -> str:
    """A random run of 1 to 8 whitespace tokens from the context."""
    words = context.split()
    start = rng.randrange(len(words))
    return " ".join(words[start : start + rng.randint(1, 8)])


def make_inputs(data: dict, seed: int) -> tuple[dict[str, str], dict[str, float]]:
    """Deterministic mixed predictions and no-answer probabilities for every question."""
    rng = random.Random(seed)
    preds: dict[str, str] = {}
    na_probs: dict[str, float] = {}
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                golds = [a["text"] for a in qa["answers"]]
                choice = rng.randrange(4)
                if choice == 0 and golds:
                    pred = rng.choice(golds)
                elif choice == 1 and golds:
                    pred = perturb(rng.choice(golds), rng)
                elif choice in (0, 1, 2):
                    pred = random_span(paragraph["context"], rng)
                else:
                    pred = ""
                preds[qa["id"]] = pred
                # Skewed towards the truth so the best threshold lies inside (0, 1).
                p = 0.35 * rng.random() + (0.5 if not golds else 0.35) * rng.random()
                p += 0.5 * rng.random() if not golds else 0.0
                na_probs[qa["id"]] = round(p, 2) if rng.random() < 0.5 else p
    return preds, na_probs


def run_official(script: Path, data_file: Path, pred_file: Path, extra: list[str]) -> dict:
    """Runs the official script and parses its JSON output."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [sys.executable, str(script), str(data_file), str(pred_file), "-o", out.name, *extra],
            check=True,
        )
        return json.loads(Path(out.name).read_text())


def compare(official: dict, ours: dict) -> dict[str, float]:
    """Absolute difference per key; raises when the key lists differ."""
    if list(official) != list(ours):
        raise AssertionError(f"keys differ: official {list(official)} vs ours {list(ours)}")
    return {k: abs(float(official[k]) - float(ours[k])) for k in official}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official_script", type=Path)
    parser.add_argument("dev_file", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_json(args.dev_file)
    preds, na_probs = make_inputs(data, args.seed)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data_file = args.workdir / "dev.json"
    pred_file = args.workdir / "preds.json"
    na_file = args.workdir / "na.json"
    data_file.write_text(json.dumps(data))
    pred_file.write_text(json.dumps(preds))
    na_file.write_text(json.dumps(na_probs))
    # Read back what the official script reads, so both sides see the same dict order.
    preds = json.loads(pred_file.read_text())
    na_probs = json.loads(na_file.read_text())

    configs = [
        ("no na file", [], {}),
        ("--na-prob-file", ["--na-prob-file", str(na_file)], {"na_probs": na_probs}),
        (
            "--na-prob-file --na-prob-thresh 0.5",
            ["--na-prob-file", str(na_file), "--na-prob-thresh", "0.5"],
            {"na_probs": na_probs, "na_prob_thresh": 0.5},
        ),
    ]
    report = {"dev_file": str(args.dev_file), "seed": args.seed, "questions": len(preds), "runs": []}
    ok = True
    for name, flags, kwargs in configs:
        official = run_official(args.official_script, data_file, pred_file, flags)
        ours = squad_v2_eval(data["data"], preds, **kwargs)
        diffs = compare(official, ours)
        ok &= max(diffs.values()) <= TOLERANCE
        report["runs"].append(
            {"config": name, "official": official, "pocketqa": dict(ours), "abs_diff": diffs}
        )
    print(json.dumps(report, indent=2))
    print("MATCH" if ok else "MISMATCH", f"(tolerance {TOLERANCE})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
