"""A training slice and a dev subset of SQuAD 2.0 for CPU-scale runs.

Train: whole paragraphs, round-robin over the articles of the training file (the first
paragraph of every article, then the second, ...) until --questions questions, so every
topic shows up. Dev: every 4th question of the official dev set (2,969 of 11,873).
Writes OUT/train.json and OUT/dev.json.

    python bench/squad_slice.py --data ../shared/data/squad2 --out runs/cpu-small --questions 4000
"""

import argparse
import gzip
import json
from pathlib import Path


def train_slice(articles: list[dict], n: int) -> list[dict]:
    picked: dict[int, list[dict]] = {}
    count, depth = 0, 0
    while count < n:
        added = False
        for a, art in enumerate(articles):
            if depth < len(art["paragraphs"]) and count < n:
                p = art["paragraphs"][depth]
                picked.setdefault(a, []).append(p)
                count += len(p["qas"])
                added = True
        if not added:
            break
        depth += 1
    return [{"title": articles[a]["title"], "paragraphs": ps} for a, ps in sorted(picked.items())]


def dev_subset(articles: list[dict], every: int = 4) -> list[dict]:
    k, out = 0, []
    for art in articles:
        paragraphs = []
        for p in art["paragraphs"]:
            keep = [q for i, q in enumerate(p["qas"], start=k) if i % every == 0]
            k += len(p["qas"])
            if keep:
                paragraphs.append({**p, "qas": keep})
        if paragraphs:
            out.append({**art, "paragraphs": paragraphs})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/squad2", help="folder with train-v2.0.json.gz, dev-v2.0.json.gz")
    ap.add_argument("--out", required=True)
    ap.add_argument("--questions", type=int, default=4000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = train_slice(json.load(gzip.open(f"{args.data}/train-v2.0.json.gz"))["data"], args.questions)
    dev = json.load(gzip.open(f"{args.data}/dev-v2.0.json.gz"))
    dev["data"] = dev_subset(dev["data"])
    json.dump({"version": "v2.0", "data": train}, open(out / "train.json", "w"))
    json.dump(dev, open(out / "dev.json", "w"))
    n_train = sum(len(p["qas"]) for a in train for p in a["paragraphs"])
    n_dev = sum(len(p["qas"]) for a in dev["data"] for p in a["paragraphs"])
    print(n_train, "train questions;", n_dev, "dev questions")


if __name__ == "__main__":
    main()
