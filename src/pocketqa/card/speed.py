"""CPU speed for the card: questions per second at batch 1."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from pocketqa.inference.answerer import QuestionAnswerer


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark_cpu(model_dir: Path, examples, threads: int, progress: bool = True) -> dict:
    """Questions per second on CPU, one question per call (batch 1), ``threads`` threads.

    A few untimed calls first warm up the backend (allocators, one-time graph work).
    """
    torch_threads = _torch_threads()
    try:
        qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu", threads=threads, batch_size=1)
        for ex in examples[:3]:
            qa.decode_examples([ex])
        it = examples
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(examples, desc="cpu bench", unit="q")
        start = time.perf_counter()
        for ex in it:
            qa.decode_examples([ex])
        elapsed = time.perf_counter() - start
    finally:
        if torch_threads is not None:  # TorchBackend sets the process-wide count; put it back
            import torch

            torch.set_num_threads(torch_threads)
    return {
        "questions_per_s": len(examples) / elapsed,
        "ms_per_question": 1000.0 * elapsed / len(examples),
        "questions": len(examples),
        "threads": threads,
        "batch_size": 1,
        "cpu": _cpu_name(),
    }


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def spread(items: list, n: int) -> list:
    """n items evenly spread over the list (so a benchmark sees many articles)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]
