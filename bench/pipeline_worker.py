"""transformers' question-answering pipeline as a worker process (run by path, imports no pocketqa).

transformers 5.3 removed ``pipeline("question-answering")``, so the anchor often lives in
another environment: a virtual env with ``transformers<5.3`` (``--anchor-python``) or a
folder installed with ``pip install --target DIR transformers==4.57.6`` put on the
worker's PYTHONPATH (``--anchor-path``). The inference suite and tools/pipeline_align.py
start it with that interpreter and talk to it one JSON object per line:

- it first writes ``{"transformers": version, "torch": version}``;
- for each request ``{"batch_size": k, "warmup": n, "align_to_words": bool}`` it answers
  the first n questions untimed, then all of them timed, and writes
  ``{"seconds", "cpu_seconds", "answers": {id: text}, "scores": {id: score}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Window and decoding settings shared with pocketqa's side: run_qa's windows, and
# max_answer_len 30 as utils_qa (the pipeline's own default is 15).
MAX_SEQ_LEN, DOC_STRIDE, MAX_QUESTION_LEN, MAX_ANSWER_LEN = 384, 128, 64, 30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--questions", required=True, help="JSON list of {id, question, context}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-answer-len", type=int, default=MAX_ANSWER_LEN)
    args = p.parse_args()

    import torch
    import transformers
    from transformers import pipeline

    # Library messages must not mix with the JSON lines: they go to stderr.
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rows = json.loads(Path(args.questions).read_text(encoding="utf-8"))
    qa = pipeline("question-answering", model=args.model, tokenizer=args.model, device=args.device)
    settings = dict(handle_impossible_answer=True, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE,
                    max_question_len=MAX_QUESTION_LEN, top_k=1, max_answer_len=args.max_answer_len)

    def answer_all(batch: list[dict], batch_size: int, align: bool) -> list[dict]:
        if batch_size == 1:  # one question per call, as a service answering requests
            return [qa(question=r["question"], context=r["context"], align_to_words=align, **settings) for r in batch]
        out = qa(question=[r["question"] for r in batch], context=[r["context"] for r in batch],
                 batch_size=batch_size, align_to_words=align, **settings)
        return out if isinstance(out, list) else [out]

    reply.write(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}) + "\n")
    reply.flush()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for line in sys.stdin:
        request = json.loads(line)
        align = bool(request.get("align_to_words", False))
        answer_all(rows[: request["warmup"]], request["batch_size"], align)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        results = answer_all(rows, request["batch_size"], align)
        sync()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        reply.write(json.dumps({
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "answers": {r["id"]: res["answer"] for r, res in zip(rows, results)},
            "scores": {r["id"]: float(res["score"]) for r, res in zip(rows, results)},
        }) + "\n")
        reply.flush()


if __name__ == "__main__":
    main()
