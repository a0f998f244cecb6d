"""Does ``scoring="pipeline"`` give transformers 4.57.6's QA pipeline answers, word widening included?

An identity check, not a timing: the pipeline (in the anchor venv of bench/inference_cpu.py)
and pocketqa answer the same real dev questions with the same random-init weights, with
``align_to_words`` off and on (the pipeline's default is on), top_k=1 / n_best=1,
max_answer_len 30 (``--max-answer-len 15`` for the pipeline's default),
handle_impossible_answer. Random weights put the best span in the middle of words far
more often than a trained model does, which is what this needs.
Prints, per model and setting, the share of identical answers and how many of the
pipeline's answers widening changed; differing answers are listed.

    PYTHONPATH=src python bench/pipeline_align.py --n 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference_cpu import (  # noqa: E402
    DEFAULT_ANCHOR_VENV, DEFAULT_DATA, DOC_STRIDE, MAX_ANSWER_LEN, MAX_QUESTION_LEN, MAX_SEQ_LEN, build_model_dir,
    ensure_anchor_venv, load_questions, write_questions,
)

# Run under the anchor's Python: the pipeline's top answer per question, widening off and on.
ANCHOR = """
import json, sys, torch, transformers
from transformers import pipeline
torch.set_num_threads(int(sys.argv[3]))
transformers.logging.set_verbosity_error()
rows = json.load(open(sys.argv[1], encoding="utf-8"))
qa = pipeline("question-answering", model=sys.argv[2], tokenizer=sys.argv[2], device="cpu")
kwargs = dict(handle_impossible_answer=True, top_k=1, max_seq_len=%d, doc_stride=%d, max_question_len=%d,
              max_answer_len=int(sys.argv[4]))
print(json.dumps({str(align): {r["id"]: qa(question=r["question"], context=r["context"], align_to_words=align,
                                           **kwargs)["answer"] for r in rows} for align in (False, True)}))
""" % (MAX_SEQ_LEN, DOC_STRIDE, MAX_QUESTION_LEN)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="questions (first N of the dev set)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--models", default="minilm-L6,mobilebert-24L")
    p.add_argument("--max-answer-len", type=int, default=MAX_ANSWER_LEN,
                   help="both sides (the pipeline's own default is 15; utils_qa's 30)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--anchor-venv", type=Path, default=DEFAULT_ANCHOR_VENV)
    args = p.parse_args()

    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.models import resolve_model

    python = ensure_anchor_venv(args.anchor_venv)
    examples = load_questions(args.data, args.n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        questions = write_questions(examples, Path(tmp) / "questions.json")
        for name in args.models.split(","):
            model = build_model_dir(name, Path(tmp), resolve_model("pip:all-MiniLM-L6-v2"))
            done = subprocess.run([str(python), "-c", ANCHOR, str(questions), str(model), str(args.threads),
                                   str(args.max_answer_len)],
                                  capture_output=True, text=True, check=True)
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
            widened = sum(theirs["True"][ex.id] != theirs["False"][ex.id] for ex in examples)
            for align in (False, True):
                qa = QuestionAnswerer.from_pretrained(
                    model, threads=args.threads, scoring="pipeline", n_best=1, align_to_words=align,
                    max_answer_length=args.max_answer_len, max_seq_length=MAX_SEQ_LEN, doc_stride=DOC_STRIDE,
                    max_query_length=MAX_QUESTION_LEN,
                )
                ours = qa([ex.question for ex in examples], [ex.context for ex in examples])
                pipeline_answers = theirs[str(align)]
                differ = [(ex.id, o["answer"], pipeline_answers[ex.id])
                          for ex, o in zip(examples, ours) if o["answer"] != pipeline_answers[ex.id]]
                for qid, a, b in differ:
                    print(f"  {name} align_to_words={align} {qid}: pocketqa {a!r}, pipeline {b!r}")
                rows.append((name, align, len(examples) - len(differ), len(examples), widened))
    print("| model | align_to_words | identical answers | pipeline answers changed by widening |")
    print("|---|---|---:|---:|")
    for name, align, same, n, widened in rows:
        print(f"| {name} | {align} | {same}/{n} ({100 * same / n:.1f} %) | {widened} |")


if __name__ == "__main__":
    main()
