"""Does ``scoring="pipeline"`` give transformers' QA pipeline answers, word widening included?

An identity check, not a timing: the pipeline (transformers < 5.3, run as
bench/pipeline_worker.py) and pocketqa answer the same real dev questions with the same
random-weight models, with ``align_to_words`` off and on (the pipeline's default is on),
top_k=1 / n_best=1, max_answer_len 30 (``--max-answer-len 15`` for the pipeline's
default), handle_impossible_answer. Random weights put the best span in the middle of
words far more often than a trained model does, which is what this check needs.
Prints, per model and setting, the share of identical answers and how many of the
pipeline's answers widening changed; differing answers are listed. Exit code 0 when
every answer is identical, else 1.

The installed transformers >= 5.3 has no pipeline; install 4.57.6 into a folder and pass
it (from the repository root):

    pip install --target .cache/anchor transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 requests
    python -m bench.tools.pipeline_align --n 1000 --anchor-path .cache/anchor
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.anchors import PipelineWorker, pipeline_python, write_questions
from bench.harness import build_model, load_examples, split_list, squad_file
from bench.pipeline_worker import DOC_STRIDE, MAX_ANSWER_LEN, MAX_QUESTION_LEN, MAX_SEQ_LEN


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="questions (the first N of the dev set)")
    p.add_argument("--data", type=Path, default=None, help="SQuAD 2.0 dev file")
    p.add_argument("--models", default="minilm-l6,mobilebert", help="random-weight shapes (bench/harness.py)")
    p.add_argument("--max-answer-len", type=int, default=MAX_ANSWER_LEN,
                   help="both sides (the pipeline's own default is 15; utils_qa's 30)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--anchor-python", default=None, help="a Python whose transformers has the QA pipeline (< 5.3)")
    p.add_argument("--anchor-path", type=Path, default=None,
                   help="a folder with transformers < 5.3 (pip install --target), put on the pipeline's PYTHONPATH")
    args = p.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from pocketqa.inference.answerer import QuestionAnswerer

    hf_logging.disable_progress_bar()

    anchor = pipeline_python(args.anchor_python, args.anchor_path)
    if anchor is None:
        raise SystemExit("the installed transformers has no QA pipeline (removed in 5.3); "
                         "pass --anchor-path or --anchor-python with transformers<5.3")
    examples = load_examples(squad_file(args.data, "dev", "--data"), args.n)
    rows, all_same = [], True
    with tempfile.TemporaryDirectory() as tmp:
        questions = write_questions(examples, Path(tmp) / "questions.json")
        for name in split_list(args.models):
            model = build_model(name, Path(tmp))
            with PipelineWorker(*anchor, str(model), questions, "cpu", args.threads, args.max_answer_len) as worker:
                theirs = {align: worker.run(1, warmup=0, align_to_words=align)["answers"] for align in (False, True)}
            widened = sum(theirs[True][ex.id] != theirs[False][ex.id] for ex in examples)
            for align in (False, True):
                qa = QuestionAnswerer.from_pretrained(
                    model, threads=args.threads, scoring="pipeline", n_best=1, align_to_words=align,
                    max_answer_length=args.max_answer_len, max_seq_length=MAX_SEQ_LEN, doc_stride=DOC_STRIDE,
                    max_query_length=MAX_QUESTION_LEN,
                )
                ours = qa([ex.question for ex in examples], [ex.context for ex in examples])
                differ = [(ex.id, o["answer"], theirs[align][ex.id])
                          for ex, o in zip(examples, ours) if o["answer"] != theirs[align][ex.id]]
                for qid, a, b in differ:
                    print(f"  {name} align_to_words={align} {qid}: pocketqa {a!r}, pipeline {b!r}")
                all_same &= not differ
                rows.append((name, align, len(examples) - len(differ), len(examples), widened))
    print(f"pipeline: transformers {worker.info['transformers']}")
    print("| model | align_to_words | identical answers | pipeline answers changed by widening |")
    print("|---|---|---:|---:|")
    for name, align, same, n, widened in rows:
        print(f"| {name} | {align} | {same}/{n} ({100 * same / n:.1f} %) | {widened} |")
    return 0 if all_same else 1


if __name__ == "__main__":
    sys.exit(main())
