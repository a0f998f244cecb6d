"""Host side of inference: windowing + decoding of many questions, today's code vs the reference it replaced.

On a GPU the forward pass is not the limit (a 6-layer model: about 11,000 windows/s on an
H100), so what the host does around it (cutting questions into windows, padding batches,
decoding the logits) sets the pace. This suite times exactly that: a stand-in model whose
forward costs nothing (logits computed from the token ids and positions, so every window
gets the same logits in both arms whatever its batch), the real tokenizer of
``--model`` (default: the bundled model), ``--n`` real SQuAD 2.0 dev questions.

Arms, taking turns:
- ``reference``: bench/tools/host_reference.py, a frozen copy of windowing (window by window
  from the Rust tokenizer's pair encodings), batching and decoding (question by question)
  as they were before they worked on many windows at once;
- ``pocketqa``: ``QuestionAnswerer.windows`` / ``logits`` / ``decode`` of today's code.

Both must give identical decodings (texts, offsets, scores, probabilities, null odds):
the suite stops if one differs. Notes give where today's time goes (windowing, batching,
decoding) from one extra untimed-by-the-harness pass.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.harness import Arm, Results, Sample, add_common_arguments, load_examples, say, squad_file, take_turns
from bench.tools import host_reference

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "src" / "pocketqa" / "default_model"


class FreeBackend:
    """A stand-in QA model whose forward costs (next to) nothing.

    The logits are a fixed hash of each token id and position, so a window's logits do not
    depend on the batch it is in, and both arms decode the same numbers.
    """

    batch_invariant = True

    def __init__(self, input_names: list[str]):
        self.input_names = input_names

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        ids = batch["input_ids"]
        position = np.arange(ids.shape[1], dtype=np.int64)[None, :]
        start = ((ids * 2654435761 + position * 40503) % 9973).astype(np.float32) / 997.0
        end = ((ids * 40503 + position * 2654435761) % 9967).astype(np.float32) / 997.0
        return start, end


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=3)
    p.add_argument("--data", type=Path, default=None, help="SQuAD 2.0 dev file (questions come from it)")
    p.add_argument("--n", type=int, default=10_000, help="questions: the first N of --data (default 10000)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model dir whose tokenizer cuts the windows")
    p.add_argument("--batch-size", type=int, default=64, help="windows per (stand-in) forward pass (default 64)")
    p.add_argument("--n-best", type=int, default=20)
    p.add_argument("--max-answer-length", type=int, default=30)


def run(args: argparse.Namespace) -> Results:
    from pocketqa.data.tokenizer import WindowTokenizer
    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.modeldir import meta_window, read_meta
    from pocketqa.data.features import WindowConfig

    results = Results("host", args)
    examples = load_examples(squad_file(args.data, "dev", "--data"), args.n)
    tokenizer = WindowTokenizer.from_dir(args.model)
    window = WindowConfig(**meta_window(str(args.model), read_meta(args.model)))
    backend = FreeBackend([n for n in ("input_ids", "attention_mask", "token_type_ids")
                           if n in tokenizer.model_input_names or n == "attention_mask"])
    qa = QuestionAnswerer(backend, tokenizer, window=window, batch_size=args.batch_size, n_best=args.n_best,
                          max_answer_length=args.max_answer_length)
    pad_id = tokenizer.pad_token_id or 0
    results.settings = {"questions": len(examples), "model": str(args.model), "window": window.to_dict(),
                        "batch_size": args.batch_size, "n_best": args.n_best,
                        "max_answer_length": args.max_answer_length, "backend": "stand-in, forward costs nothing"}
    answers: dict[str, list] = {}

    def reference() -> Sample:
        t0 = time.perf_counter()
        features = host_reference.make_features(examples, tokenizer, window)
        starts, ends = host_reference.logits(features, backend, args.batch_size, pad_id)
        answers["reference"] = host_reference.decode_features(examples, features, starts, ends, n_best=args.n_best,
                                                              max_answer_length=args.max_answer_length)
        return Sample(seconds=time.perf_counter() - t0)

    def pocketqa() -> Sample:
        t0 = time.perf_counter()
        features = qa.windows(examples)
        starts, ends = qa.logits(features)
        answers["pocketqa"] = qa.decode(examples, features, starts, ends)
        return Sample(seconds=time.perf_counter() - t0)

    arms = [Arm("reference", reference, work=len(examples)), Arm("pocketqa", pocketqa, work=len(examples))]
    say(f"{len(examples)} questions, windowing + stand-in forward + decoding")
    samples = take_turns(arms, args.rounds, "host", "q/s")
    same = sum(a == b for a, b in zip(answers["pocketqa"], answers["reference"])) / len(examples)
    if same != 1.0:
        raise SystemExit(f"pocketqa's decodings differ from the reference's on {100 * (1 - same):.2f} % of questions")
    results.compare(f"{len(examples)} dev questions", samples, anchor="reference", unit="q/s",
                    identical_answers={"pocketqa": same, "reference": 1.0})
    results.notes.append(_profile(qa, examples, "pocketqa"))
    results.notes.append(_profile_reference(examples, tokenizer, window, backend, args, pad_id))
    return results


def _profile(qa, examples, name: str) -> str:
    t0 = time.perf_counter()
    features = qa.windows(examples)
    t1 = time.perf_counter()
    starts, ends = qa.logits(features)
    t2 = time.perf_counter()
    qa.decode(examples, features, starts, ends)
    t3 = time.perf_counter()
    return _split(name, len(features), t1 - t0, t2 - t1, t3 - t2)


def _profile_reference(examples, tokenizer, window, backend, args, pad_id: int) -> str:
    t0 = time.perf_counter()
    features = host_reference.make_features(examples, tokenizer, window)
    t1 = time.perf_counter()
    starts, ends = host_reference.logits(features, backend, args.batch_size, pad_id)
    t2 = time.perf_counter()
    host_reference.decode_features(examples, features, starts, ends, n_best=args.n_best,
                                   max_answer_length=args.max_answer_length)
    t3 = time.perf_counter()
    return _split("reference", len(features), t1 - t0, t2 - t1, t3 - t2)


def _split(name: str, n_windows: int, windows: float, batches: float, decode: float) -> str:
    total = windows + batches + decode
    return (f"{name}, one more pass: {n_windows} windows; windowing {windows:.2f} s ({100 * windows / total:.0f} %), "
            f"batching + stand-in forward {batches:.2f} s ({100 * batches / total:.0f} %), decoding {decode:.2f} s "
            f"({100 * decode / total:.0f} %)")
