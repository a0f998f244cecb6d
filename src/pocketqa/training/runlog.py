"""The run log (``OUT/log.jsonl``), the logged loss and the progress bar of a training loop.

One JSON record per line: ``{"step": ..., "loss": ..., "lr": ..., "time": ...}`` at log
steps, ``{"event": "start", ...}`` when a run (or a resumed run) starts, ``{"step": ...,
"eval": {...}}`` after a dev evaluation. ``read_log`` reads it back.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import time
from pathlib import Path

import torch

from pocketqa.training.distributed import all_reduce_sum, distributed

LOG_FILE = "log.jsonl"


class RunLog:
    """Appends timed JSON lines to log.jsonl.

    Only rank 0 writes: the other ranks of a DDP run pass ``path=None`` and every call is a
    no-op for them. ``log(step=3, loss=0.5)`` is ``log.write({"step": 3, "loss": 0.5})``.
    """

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, record: dict) -> None:
        """Appends ``record`` with the wall-clock ``time`` added."""
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")

    def __call__(self, **record) -> None:
        self.write(record)

    def forget_after(self, step: int) -> int:
        """Drops the records of steps after ``step``, which a resumed run trains again.

        A run killed between checkpoints logged steps that the resumed run repeats from the
        checkpoint; left in, every such step would appear twice. Rewritten atomically.
        Returns how many records were dropped.
        """
        if self.path is None or not self.path.is_file():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and _logged_step(line) <= step]
        if len(kept) < len(lines):
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)
        return len(lines) - len(kept)


def _logged_step(line: str) -> float:
    """The step of one log.jsonl line; a line cut off by a kill counts as after every step."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


def read_log(out_dir: str | os.PathLike) -> list[dict]:
    """The records of ``out_dir/log.jsonl`` (plain or gzip), in order."""
    path = Path(out_dir) / LOG_FILE
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def global_mean(total: torch.Tensor, count: int) -> float:
    """Sum of a device scalar over ranks / ``count``, as a Python float (one sync per call)."""
    value = all_reduce_sum(total.detach().clone())
    return value.item() / max(1, count)


class LossMeter:
    """The training loss summed on the device between log steps, read back once per log step.

    Reading a loss (``.item()``) every step makes the CPU wait for the GPU every step. The
    meter adds losses to a device scalar instead, and ``mean()`` reads it: the mean over the
    optimizer steps since the last read and over the ranks of a DDP run.

    Example:
        meter = LossMeter(device)
        for step ...:
            for micro_batch ...:
                meter.add(loss)   # one micro-batch's share of the step's loss
            meter.end_step()
            if step % log_steps == 0:
                log(step=step, loss=meter.mean())
    """

    def __init__(self, device: str | torch.device):
        self.total = torch.zeros((), device=device)
        self.steps = 0

    def add(self, loss: torch.Tensor) -> None:
        """Adds (part of) this step's loss, a 0-d tensor; no sync with the device."""
        self.total += loss.detach()

    def end_step(self) -> None:
        """Counts one optimizer step."""
        self.steps += 1

    def mean(self) -> float:
        """Mean loss per step and rank since the last call (nan or inf passed on as such); resets."""
        d = distributed()
        value = global_mean(self.total, self.steps * (d.get_world_size() if d is not None else 1))
        self.total.zero_()
        self.steps = 0
        return value


def progress_bar(total: int, initial: int = 0, desc: str = "train", enabled: bool = True):
    """A tqdm bar counting optimizer steps (hidden when not ``enabled``, e.g. on ranks > 0)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)
