"""Mechanism check for QuestionAnswerer.overlap on a machine without a GPU.

On a GPU, windowing and decoding (CPU, ~0.4 ms a question) run in series with the forward
passes unless they overlap. This stands in for the GPU with a model that sleeps a fixed
time per window (releasing the GIL, as a CUDA wait does) and returns pseudo-logits, and
times the same 4,000 dev questions in series and overlapped, taking turns. The anchor
comparison on a real GPU is bench/gpu_inference.py (its "no overlap" variant).

    PYTHONPATH=src python bench/overlap_proxy.py
"""

import statistics
import time
from pathlib import Path

import numpy as np

from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.data.features import WindowConfig
from pocketqa.models import resolve_model
from pocketqa.data.squad import load_squad
from pocketqa.data.tokenizer import WindowTokenizer

REPO = Path(__file__).resolve().parent.parent
DEV = next((p for p in (REPO / ".carry/data/dev-v2.0.json.gz", REPO.parent / "shared/data/squad2/dev-v2.0.json.gz")
            if p.exists()), REPO.parent / "shared/data/squad2/dev-v2.0.json.gz")


class SleepyModel:
    """Stands in for a GPU: ``ms`` of wall time per window with the GIL released, pseudo-logits."""

    input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def __init__(self, ms: float):
        self.ms = ms

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.ms * len(batch["input_ids"]) / 1000)
        ids = batch["input_ids"].astype(np.float32)
        return np.sin(ids * 0.37) * 4, np.cos(ids * 0.53) * 4


def main() -> None:
    examples = load_squad(DEV)[:4000]
    tokenizer = WindowTokenizer.from_dir(resolve_model(None))
    for ms in (0.1, 0.25, 0.5):
        qa = QuestionAnswerer(SleepyModel(ms), tokenizer, WindowConfig(), batch_size=256)
        seconds = {False: [], True: []}
        for r in range(2):
            for overlap in (False, True) if r == 0 else (True, False):
                qa.overlap = overlap
                t0 = time.perf_counter()
                qa.decode_examples(examples)
                seconds[overlap].append(time.perf_counter() - t0)
        serial, overlapped = statistics.median(seconds[False]), statistics.median(seconds[True])
        print(f"model {ms} ms/window: in series {len(examples) / serial:.0f} q/s, overlapped "
              f"{len(examples) / overlapped:.0f} q/s, {serial / overlapped:.2f}x")


if __name__ == "__main__":
    main()
