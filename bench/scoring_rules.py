"""Official SQuAD 2.0 scores of one model under both scoring rules, from one set of logits.

The model runs once over the data; its logits are decoded with scoring="logits" (utils_qa:
span logits compared across windows, pocketqa's default) and with scoring="pipeline" (the
removed transformers pipeline: per-window probabilities), at n_best 20 and, for the
pipeline rule, also at n_best 1 (the pipeline's top_k=1). For each: EM/F1 at threshold 0
(the pipeline's own rule is threshold 0 of its null odds), the best threshold and its F1,
and how many answers differ from the default rule, split by questions with one window and
with several.

Usage:
    PYTHONPATH=src python bench/scoring_rules.py --model src/pocketqa/default_model \\
        --data ../shared/data/squad2/dev-v2.0.json.gz --out runs/scoring_rules.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.decode import decode_features
from pocketqa.evaluation.scoring import score_decoded
from pocketqa.data.features import make_features
from pocketqa.data.squad import load_squad

RULES = {"logits (default)": ("logits", 20), "pipeline": ("pipeline", 20), "pipeline, n_best 1": ("pipeline", 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model dir (default: the bundled model)")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    examples = load_squad(args.data)[: args.limit]
    qa = QuestionAnswerer.from_pretrained(args.model, threads=args.threads)
    features = make_features(examples, qa.tokenizer, qa.window)
    starts, ends = qa.logits(features, progress=True)
    windows = np.bincount(features.example_index, minlength=len(examples))
    results, answers = {}, {}
    for name, (scoring, n_best) in RULES.items():
        decoded = decode_features(examples, features, starts, ends, n_best=n_best,
                                  max_answer_length=qa.max_answer_length, scoring=scoring)
        s = score_decoded(examples, decoded, 0.0)
        answers[name] = [d.answer(0.0) for d in decoded]
        results[name] = {k: round(float(s[k]), 3) for k in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_exact",
                                                           "best_f1", "best_f1_thresh")}
    default = answers["logits (default)"]
    for name in RULES:
        differs = np.array([a != b for a, b in zip(answers[name], default)])
        results[name]["differs_from_default"] = {"one window": int(differs[windows == 1].sum()),
                                                 "several windows": int(differs[windows > 1].sum())}
    report = {"model": qa.name, "data": str(args.data), "questions": len(examples),
              "questions_with_several_windows": int((windows > 1).sum()), "window": qa.window.to_dict(),
              "rules": results}
    print(f"{len(examples)} questions, {report['questions_with_several_windows']} with several windows")
    print("| rule | EM @0 | F1 @0 | HasAns F1 | NoAns F1 | best F1 (threshold) | answers differing from default (1 window / several) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        d = r["differs_from_default"]
        print(f"| {name} | {r['exact']:.2f} | {r['f1']:.2f} | {r['HasAns_f1']:.2f} | {r['NoAns_f1']:.2f} | "
              f"{r['best_f1']:.2f} ({r['best_f1_thresh']:.3f}) | {d['one window']} / {d['several windows']} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
