"""The question-answering anchors pocketqa is compared with.

- ``PipelineWorker``: transformers' ``pipeline("question-answering")`` in a worker process
  (bench/pipeline_worker.py), under this Python when the installed transformers still has
  it, else under ``--anchor-python`` or with ``--anchor-path`` on its PYTHONPATH.
- ``PlainTransformersQA``: what a user of transformers >= 5.3 writes without the pipeline:
  run_qa-style windows (every window padded to 384 tokens), ``AutoModelForQuestionAnswering``,
  and decoding by utils_qa's rule (best start + end logit over all windows, null score the
  minimum over windows, no answer when the null score beats the best span). Written here
  from that behaviour; it imports nothing from pocketqa.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.pipeline_worker import DOC_STRIDE, MAX_ANSWER_LEN, MAX_SEQ_LEN

WORKER = Path(__file__).resolve().parent / "pipeline_worker.py"
N_BEST = 20


def installed_pipeline() -> bool:
    """Whether the installed transformers still has the question-answering pipeline (< 5.3)."""
    try:
        from transformers.pipelines import SUPPORTED_TASKS
    except ImportError:
        return False
    return "question-answering" in SUPPORTED_TASKS


def pipeline_python(anchor_python: str | None, anchor_path: Path | None) -> tuple[str, dict] | None:
    """The interpreter and environment that run the pipeline, or None when none has it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if anchor_path is not None:
        env["PYTHONPATH"] = str(Path(anchor_path).resolve())
        return anchor_python or sys.executable, env
    if anchor_python is not None:
        return anchor_python, env
    if installed_pipeline():
        return sys.executable, env
    return None


def write_questions(examples, path: Path) -> Path:
    rows = [{"id": ex.id, "question": ex.question, "context": ex.context} for ex in examples]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


class PipelineWorker:
    """The pipeline in a subprocess, answering timed passes over its questions on request."""

    def __init__(self, python: str, env: dict, model_dir: str, questions_file: Path, device: str,
                 threads: int | None, max_answer_len: int = MAX_ANSWER_LEN):
        cmd = [python, str(WORKER), "--model", str(model_dir), "--questions", str(questions_file),
               "--device", device, "--max-answer-len", str(max_answer_len)]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the pipeline worker exited (code {self.proc.wait()}); its messages are above")
        return json.loads(line)

    def run(self, batch_size: int, warmup: int = 8, align_to_words: bool = False) -> dict:
        """One pass over all questions: {"seconds", "cpu_seconds", "answers", "scores"}."""
        request = {"batch_size": batch_size, "warmup": warmup, "align_to_words": align_to_words}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self) -> PipelineWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PlainTransformersQA:
    """A model answered with transformers alone: run_qa windows, forward, utils_qa-style decoding.

    Args:
        model_dir: A QA model directory.
        device: Torch device.
        batch_size: Windows per forward pass.
    """

    def __init__(self, model_dir: str, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForQuestionAnswering.from_pretrained(model_dir).to(device).eval()
        self.device = device
        self.batch_size = batch_size

    def __call__(self, questions: list[str], contexts: list[str]) -> list[str]:
        """The answer text per question ("" = no answer), at threshold 0."""
        enc = self.tokenizer(
            [q.lstrip() for q in questions], contexts, truncation="only_second", max_length=MAX_SEQ_LEN,
            stride=DOC_STRIDE, return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length",
            return_tensors="np",
        )
        owner = enc.pop("overflow_to_sample_mapping")
        offsets = enc.pop("offset_mapping")
        in_context = np.array([[s == 1 for s in enc.sequence_ids(w)] for w in range(len(owner))])
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
        starts, ends = [], []
        with self.torch.inference_mode():
            for i in range(0, len(owner), self.batch_size):
                batch = {n: self.torch.from_numpy(enc[n][i : i + self.batch_size]).to(self.device) for n in names}
                out = self.model(**batch)
                starts.append(out.start_logits.float().cpu().numpy())
                ends.append(out.end_logits.float().cpu().numpy())
        start, end = np.concatenate(starts), np.concatenate(ends)
        answers = []
        for q in range(len(questions)):
            windows = np.flatnonzero(owner == q)
            null = min(start[w, 0] + end[w, 0] for w in windows)
            best, text = -np.inf, ""
            for w in windows:
                for i in np.argsort(start[w])[::-1][:N_BEST]:
                    for j in np.argsort(end[w])[::-1][:N_BEST]:
                        if not (in_context[w, i] and in_context[w, j]) or j < i or j - i + 1 > MAX_ANSWER_LEN:
                            continue
                        score = start[w, i] + end[w, j]
                        if score > best:
                            best, text = score, contexts[q][offsets[w, i, 0] : offsets[w, j, 1]]
            answers.append(text if best >= null else "")  # utils_qa: null wins only when strictly higher
        return answers

