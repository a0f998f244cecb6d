"""Writes tests/assets/utils_qa_golden.json: transformers' utils_qa decoding on fixed logits.

The golden file pins pocketqa's decoding (pocketqa.inference.decode) to the reference rule
of transformers' question-answering examples, ``utils_qa.postprocess_qa_predictions``
with ``version_2_with_negative=True``; tests/test_decode_golden.py reads it. utils_qa.py is
not part of the transformers package, so this tool takes a local copy of it
(examples/pytorch/question-answering/utils_qa.py from the transformers repository) and is
run by hand, not in CI (from the repository root):

    python -m bench.tools.decode_golden --utils-qa /tmp/utils_qa.py --out tests/assets/utils_qa_golden.json

The examples use the tiny test tokenizer (tests/helpers.py) so that long contexts cut
into several windows; start/end logits are seeded random numbers, shaped per example
(clearly answerable, clearly unanswerable, no-answer in some windows only, a borderline
case between the two thresholds, and one with no valid span at all). The file stores the
inputs (examples, window settings, per-window logits and offsets) and utils_qa's outputs
(answers at two thresholds, null odds, n-best texts and probabilities).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np

from pocketqa.data.features import Features, WindowConfig, make_features
from pocketqa.data.squad import Example

REPO = Path(__file__).resolve().parents[2]


def load_module(name: str, path: Path):
    """Imports a Python file by path (utils_qa.py, the tests' helpers.py: neither is a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = load_module("pocketqa_tests_helpers", REPO / "tests" / "helpers.py")
CONTEXTS, build_tokenizer = helpers.CONTEXTS, helpers.build_tokenizer

WINDOW = WindowConfig(max_seq_length=48, doc_stride=16, max_query_length=12)
N_BEST = 20
MAX_ANSWER_LENGTH = 30
THRESHOLDS = (0.0, -1.0)
PAD_LOGIT = -1e4  # padding positions of the stacked arrays: never among the top starts/ends
SEED = 1234

NORMANS, PARIS = CONTEXTS[0][1], CONTEXTS[1][1]

# (id, kind, question, context). Kinds drive how the logits are shaped, see _logits().
CASES = [
    ("answerable-long", "answerable", "In what country is Normandy located?", NORMANS),
    ("answerable-short", "answerable", "What is the capital of France?", PARIS.split(". ")[0] + "."),
    ("unanswerable-long", "unanswerable", "Who gave their name to Italy?", NORMANS),
    ("null-in-some-windows", "mixed", "Since when has Paris been a major centre?", PARIS),
    ("borderline", "borderline", "Who was the leader of the Norse?", NORMANS),
    ("random", "random", "What is the capital of Germany?", PARIS),
    ("two-contexts", "answerable", "Where is the city?", NORMANS + " " + PARIS),
    # 12 question tokens leave 33 context tokens in a single window: enough to push every
    # top-20 start after every top-20 end (utils_qa then answers the literal "empty").
    ("no-valid-span", "nospan", "Who was the leader of the Norse raiders and pirates then?", NORMANS[:150]),
]


class Rows:
    """The two ways utils_qa reads a ``datasets.Dataset``: a column by name, rows by iteration."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row[key] for row in self.rows]
        return self.rows[key]

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _logits(rng: np.random.Generator, kind: str, offsets: list, window_no: int, n_windows: int):
    """Seeded start/end logits for one window, shaped by the example's kind."""
    n = len(offsets)
    start = rng.normal(0.0, 2.0, n)
    end = rng.normal(0.0, 2.0, n)
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if kind in ("answerable", "borderline", "mixed") and window_no == n_windows // 2:
        # one clear span in the middle window
        s = ctx[int(rng.integers(0, len(ctx) - 3))]
        start[s] += 8.0
        end[s + int(rng.integers(0, 3))] += 8.0
    if kind in ("answerable", "borderline"):
        start[0] -= 6.0
        end[0] -= 6.0
    if kind == "unanswerable":
        start[0] += 12.0
        end[0] += 12.0
    if kind == "mixed" and window_no != 0:
        # Only the first window is sure there is no answer: the null score is the *minimum*
        # over windows, so the answer in the middle window must still win.
        start[0] += 12.0
        end[0] += 12.0
    if kind == "mixed" and window_no == 0:
        start[0] -= 4.0
        end[0] -= 4.0
    if kind == "nospan":
        outside = [i for i in range(n) if offsets[i] is None]
        k = N_BEST - len(outside)
        assert 0 < k and 2 * k <= len(ctx), (k, len(ctx))
        start[:] = rng.normal(-20.0, 1.0, n)
        end[:] = rng.normal(-20.0, 1.0, n)
        start[outside] = rng.normal(5.0, 1.0, len(outside))
        end[outside] = rng.normal(5.0, 1.0, len(outside))
        start[ctx[-k:]] = rng.normal(0.0, 1.0, k)  # top starts: the last k context tokens
        end[ctx[:k]] = rng.normal(0.0, 1.0, k)  # top ends: the first k context tokens
    # Six decimals keep the file small; float64 throughout so both sides add exactly alike.
    return np.round(start, 6), np.round(end, 6)


def run_utils_qa(utils_qa, examples: list[Example], features: Features, starts, ends, threshold: float) -> dict:
    """Runs utils_qa on our windows, converted to its dataset rows and padded arrays."""
    ex_rows = Rows([{"id": ex.id, "context": ex.context} for ex in examples])
    width = int(features.lengths.max())
    feat_rows = []
    all_start = np.full((len(features), width), PAD_LOGIT)
    all_end = np.full((len(features), width), PAD_LOGIT)
    for w, offs in enumerate(features.offsets):
        padded = [list(o) if o is not None else None for o in offs] + [None] * (width - len(offs))
        feat_rows.append({"example_id": examples[features.example_index[w]].id, "offset_mapping": padded})
        all_start[w, : len(offs)] = starts[w]
        all_end[w, : len(offs)] = ends[w]
    with tempfile.TemporaryDirectory() as tmp:
        answers = utils_qa.postprocess_qa_predictions(
            ex_rows,
            feat_rows,
            (all_start, all_end),
            version_2_with_negative=True,
            n_best_size=N_BEST,
            max_answer_length=MAX_ANSWER_LENGTH,
            null_score_diff_threshold=threshold,
            output_dir=tmp,
        )
        nbest = json.loads((Path(tmp) / "nbest_predictions.json").read_text())
        null_odds = json.loads((Path(tmp) / "null_odds.json").read_text())
    return {"answers": dict(answers), "nbest": nbest, "null_odds": null_odds}


def build(utils_qa) -> dict:
    tokenizer = build_tokenizer()
    examples = [Example(id=i, title="", context=c, question=q) for i, _, q, c in CASES]
    kinds = {i: kind for i, kind, _, _ in CASES}
    features = make_features(examples, tokenizer, WINDOW)
    rng = np.random.default_rng(SEED)
    starts, ends = [], []
    for ex_idx, ex in enumerate(examples):
        windows = np.flatnonzero(features.example_index == ex_idx)
        for no, w in enumerate(windows):
            s, e = _logits(rng, kinds[ex.id], features.offsets[w], no, len(windows))
            starts.append(s)
            ends.append(e)

    # Move the borderline example's null score to 0.5 below its best span: answered at
    # threshold 0.0, abstained at -1.0, so the two thresholds give different answers.
    first = run_utils_qa(utils_qa, examples, features, starts, ends, THRESHOLDS[0])
    shift = -first["null_odds"]["borderline"] - 0.5
    for w in np.flatnonzero(features.example_index == [ex.id for ex in examples].index("borderline")):
        starts[w][0] = round(starts[w][0] + shift, 6)

    runs = {t: run_utils_qa(utils_qa, examples, features, starts, ends, t) for t in THRESHOLDS}
    base = runs[THRESHOLDS[0]]
    assert runs[THRESHOLDS[0]]["answers"] != runs[THRESHOLDS[1]]["answers"], "thresholds give the same answers"
    assert base["answers"]["no-valid-span"] == "empty" or base["nbest"]["no-valid-span"][0]["text"] == "empty"
    return {
        "source": "transformers examples/pytorch/question-answering/utils_qa.py, postprocess_qa_predictions",
        "generator": "bench/tools/decode_golden.py",
        "window": WINDOW.to_dict(),
        "n_best": N_BEST,
        "max_answer_length": MAX_ANSWER_LENGTH,
        "seed": SEED,
        "examples": [
            {"id": ex.id, "kind": kinds[ex.id], "question": ex.question, "context": ex.context} for ex in examples
        ],
        "windows": [
            {
                "example_id": examples[features.example_index[w]].id,
                "offsets": [list(o) if o is not None else None for o in features.offsets[w]],
                "start_logits": starts[w].tolist(),
                "end_logits": ends[w].tolist(),
            }
            for w in range(len(features))
        ],
        "expected": {
            "answers": {str(t): runs[t]["answers"] for t in THRESHOLDS},
            "null_odds": base["null_odds"],
            "nbest": {
                qid: [{"text": p["text"], "probability": p["probability"]} for p in preds]
                for qid, preds in base["nbest"].items()
            },
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utils-qa", type=Path, required=True, help="local copy of transformers' utils_qa.py")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "assets" / "utils_qa_golden.json")
    args = parser.parse_args(argv)
    golden = build(load_module("utils_qa", args.utils_qa))  # needs only numpy and tqdm
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One line per window keeps the file small and its diffs readable.
    windows = golden.pop("windows")
    text = json.dumps(golden, indent=1, ensure_ascii=False)
    rows = ",\n  ".join(json.dumps(w, ensure_ascii=False, separators=(",", ":")) for w in windows)
    text = text[: text.rindex("}")].rstrip() + ',\n "windows": [\n  ' + rows + "\n ]\n}"
    args.out.write_text(text + "\n", encoding="utf-8")
    golden["windows"] = windows
    n_windows = len(golden["windows"])
    print(f"wrote {args.out}: {len(golden['examples'])} examples, {n_windows} windows")
    for t, answers in golden["expected"]["answers"].items():
        print(f"threshold {t}: {answers}")


if __name__ == "__main__":
    main()
