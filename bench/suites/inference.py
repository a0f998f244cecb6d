"""Inference: pocketqa's QuestionAnswerer (PyTorch, ONNX fp32 / int8) vs transformers' QA pipeline.

Both sides answer the same real SQuAD 2.0 dev questions with the same seeded random
weights (speed does not depend on the weights; ``--models pip:all-MiniLM-L6-v2`` or a
model dir for real ones), at each ``--batch-sizes`` value: 1 is one question per call,
as a service answering requests; larger values hand all questions over in one call with
that many windows per forward pass. The anchor is transformers' ``pipeline
("question-answering")`` when one is reachable (the installed transformers < 5.3,
``--anchor-python`` or ``--anchor-path``), otherwise a plain transformers forward with
utils_qa-style decoding (bench/anchors.py). At batch 1 pocketqa also runs on ONNX Runtime,
fp32 and int8 (the same weights exported with ``pocketqa export``), in the same rotation.

Besides the speed, each comparison reports the share of answers identical to the
anchor's and, against the pipeline, the share identical under ``scoring="pipeline"``
(the pipeline's own rule, decoded untimed from the same model).

Decoding settings that make the answers comparable: max_seq_len 384, doc_stride 128,
max_question_len 64, max_answer_len 30 (the pipeline's default is 15; utils_qa and
pocketqa use 30), no-answer allowed, top_k 1, ``align_to_words=False`` (the pipeline's
default widens answers to whole words; pocketqa and utils_qa return the token span).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

from bench.anchors import PipelineWorker, PlainTransformersQA, pipeline_python, write_questions
from bench.harness import (
    Arm,
    Results,
    Sample,
    add_common_arguments,
    cuda_sync,
    load_examples,
    model_dir,
    say,
    setup,
    split_list,
    squad_file,
    take_turns,
)
from bench.pipeline_worker import DOC_STRIDE, MAX_ANSWER_LEN, MAX_QUESTION_LEN, MAX_SEQ_LEN

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
WINDOW = dict(max_seq_length=MAX_SEQ_LEN, doc_stride=DOC_STRIDE, max_query_length=MAX_QUESTION_LEN)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p, rounds=2)
    p.add_argument("--data", type=Path, default=None, help="SQuAD 2.0 dev file (questions come from it)")
    p.add_argument("--n", type=int, default=300, help="questions: the first N of --data (default 300)")
    p.add_argument("--sample-seed", type=int, default=None, help="a seeded random sample of N instead")
    p.add_argument("--models", default="minilm-l6,mobilebert,bert-6l-768",
                   help="comma list: random-weight shapes (minilm-l6, bert-6l-768, mobilebert) or model dirs / pip:NAME")
    p.add_argument("--layers", type=int, default=None, help="fewer layers in the random-weight shapes (quick runs)")
    p.add_argument("--batch-sizes", default="1,32", help="comma list; 1 = one question per call (default 1,32)")
    p.add_argument("--dtypes", default="fp32",
                   help="pocketqa PyTorch weight dtypes; fp16/bf16 run at the largest batch size (default fp32)")
    p.add_argument("--no-onnx", action="store_true", help="leave out the ONNX Runtime fp32 / int8 arms")
    p.add_argument("--anchor", choices=("auto", "pipeline", "plain"), default="auto",
                   help="pipeline, plain transformers, or auto: the pipeline when reachable (default)")
    p.add_argument("--anchor-python", default=None, help="a Python whose transformers has the QA pipeline (< 5.3)")
    p.add_argument("--anchor-path", type=Path, default=None,
                   help="a folder with transformers < 5.3 (pip install --target), put on the pipeline's PYTHONPATH")
    p.add_argument("--warmup", type=int, default=8, help="questions answered untimed before each timed pass")
    p.add_argument("--bundled", action="store_true",
                   help="also time the bundled int8 model at batch 1, beside the model of the same shape "
                        "(minilm-l6); its answers differ (trained weights), its speed is what the README quotes")


def pocketqa_answerer(path: str, device: str, threads: int | None, batch_size: int, dtype: str = "fp32"):
    """A QuestionAnswerer with the comparison's window settings; PyTorch weights in ``dtype``."""
    from pocketqa.inference.answerer import QuestionAnswerer

    if dtype == "fp32":
        return QuestionAnswerer.from_pretrained(path, device=device, threads=threads, batch_size=batch_size,
                                                max_answer_length=MAX_ANSWER_LEN, **WINDOW)
    import torch

    from pocketqa.data.features import WindowConfig
    from pocketqa.inference.backends import TorchBackend
    from pocketqa.models import load_qa_model, load_tokenizer

    model = load_qa_model(path, device=device, dtype=getattr(torch, DTYPES[dtype]))
    return QuestionAnswerer(TorchBackend(model, device=device, threads=threads), load_tokenizer(path),
                            window=WindowConfig(**WINDOW), max_answer_length=MAX_ANSWER_LEN, batch_size=batch_size)


BUNDLED = "pocketqa bundled int8"


def bundled_answerer(threads: int | None):
    """The bundled model (int8 ONNX MiniLM-L6) with the comparison's settings, for batch 1."""
    from pocketqa.inference.answerer import QuestionAnswerer

    return QuestionAnswerer.from_pretrained(None, threads=threads, batch_size=1, max_answer_length=MAX_ANSWER_LEN,
                                            **WINDOW)


def onnx_answerers(path: str, root: Path, threads: int | None) -> dict:
    """``path`` exported to ONNX fp32 and int8 under ``root``, loaded for batch 1."""
    from pocketqa.export.exporter import export_model
    from pocketqa.inference.answerer import QuestionAnswerer

    answerers = {}
    for name, int8 in (("pocketqa onnx-fp32", False), ("pocketqa onnx-int8", True)):
        out = root / f"{Path(path).name}-{'int8' if int8 else 'fp32'}"
        export_model(path, out, int8=int8, threads=threads)
        answerers[name] = QuestionAnswerer.from_pretrained(out, threads=threads, batch_size=1,
                                                           max_answer_length=MAX_ANSWER_LEN, **WINDOW)
    return answerers


def answerer_arm(name: str, answer, examples, batch_size: int, warmup: int, sync, answers: dict) -> Arm:
    """An arm answering every example with ``answer(questions, contexts) -> list[str]``.

    At batch size 1 it makes one call per question. The last pass's answers land in ``answers[name]``.
    """
    questions = [ex.question for ex in examples]
    contexts = [ex.context for ex in examples]

    def answer_all(qs, cs):
        if batch_size == 1:
            return [answer([q], [c])[0] for q, c in zip(qs, cs)]
        return answer(qs, cs)

    def run() -> None:
        answers[name] = dict(zip((ex.id for ex in examples), answer_all(questions, contexts)))

    return Arm(name, run, work=len(examples), before=lambda: answer_all(questions[:warmup], contexts[:warmup]),
               sync=sync)


def texts(qa):
    """``qa`` as ``(questions, contexts) -> answer texts``."""
    return lambda qs, cs: [r["answer"] for r in qa(qs, cs)]


def pipeline_arm(worker: PipelineWorker, n: int, batch_size: int, warmup: int, answers: dict) -> Arm:
    def run() -> Sample:
        res = worker.run(batch_size, warmup)
        answers["pipeline"] = res["answers"]
        return Sample(seconds=res["seconds"], cpu_seconds=res["cpu_seconds"])

    return Arm("pipeline", run, work=n)


def windows_per_question(qa, examples) -> dict[str, int]:
    from pocketqa.data.features import make_features

    features = make_features(examples, qa.tokenizer, qa.window)
    counts = {}
    for i in features.example_index:
        counts[examples[int(i)].id] = counts.get(examples[int(i)].id, 0) + 1
    return counts


def run(args: argparse.Namespace) -> Results:
    setup(args)
    results = Results("inference", args)
    data = squad_file(args.data, "dev", "--data")
    examples = load_examples(data, args.n, args.sample_seed)
    batch_sizes = [int(b) for b in split_list(args.batch_sizes)]
    dtypes = split_list(args.dtypes)
    if bad := [d for d in dtypes if d not in DTYPES]:
        raise SystemExit(f"--dtypes: unknown {bad}; known: {', '.join(DTYPES)}")
    reachable = pipeline_python(args.anchor_python, args.anchor_path) if args.anchor != "plain" else None
    if args.anchor == "pipeline" and reachable is None:
        raise SystemExit("--anchor pipeline: the installed transformers has no QA pipeline (removed in 5.3); "
                         "pass --anchor-python or --anchor-path with transformers<5.3")
    anchor = "pipeline" if reachable else "transformers (plain)"
    results.settings = {
        "data": str(data), "questions": len(examples), "batch_sizes": batch_sizes, "dtypes": dtypes,
        "anchor": anchor, "max_seq_len": MAX_SEQ_LEN, "doc_stride": DOC_STRIDE, "max_question_len": MAX_QUESTION_LEN,
        "max_answer_len": MAX_ANSWER_LEN, "handle_impossible_answer": True, "align_to_words": False,
    }
    sync = cuda_sync(args.device)
    onnx = not args.no_onnx and args.device == "cpu" and 1 in batch_sizes
    with tempfile.TemporaryDirectory(prefix="pocketqa-bench-") as tmp:
        root = Path(tmp)
        questions_file = write_questions(examples, root / "questions.json")
        for model_name in split_list(args.models):
            path = model_dir(model_name, root, seed=args.seed, layers=args.layers)
            label = Path(path).name
            worker = None
            if reachable:
                worker = PipelineWorker(*reachable, path, questions_file, args.device, args.threads)
                results.settings["anchor_versions"] = worker.info
            extra = onnx_answerers(path, root, args.threads) if onnx else {}
            try:
                for bs in batch_sizes:
                    say(f"{label}, batch {bs}: {len(examples)} questions")
                    answers: dict[str, dict] = {}
                    qa = pocketqa_answerer(path, args.device, args.threads, bs)
                    arms = [pipeline_arm(worker, len(examples), bs, args.warmup, answers) if worker else
                            answerer_arm(anchor, PlainTransformersQA(path, args.device, bs), examples, bs,
                                         args.warmup, sync, answers),
                            answerer_arm("pocketqa", texts(qa), examples, bs, args.warmup, sync, answers)]
                    if bs == 1:
                        arms += [answerer_arm(n, texts(a), examples, 1, args.warmup, None, answers)
                                 for n, a in extra.items()]
                        if args.bundled and model_name == "minilm-l6":
                            arms.append(answerer_arm(BUNDLED, texts(bundled_answerer(args.threads)), examples, 1,
                                                     args.warmup, None, answers))
                    if bs == max(batch_sizes):
                        for dtype in dtypes[1:] if dtypes[0] == "fp32" else dtypes:
                            twin = pocketqa_answerer(path, args.device, args.threads, bs, dtype)
                            arms.append(answerer_arm(f"pocketqa {dtype}", texts(twin), examples, bs, args.warmup,
                                                     sync, answers))
                        if args.device.startswith("cuda"):
                            # windowing and decoding in series with the model: what overlapping them gains
                            serial = pocketqa_answerer(path, args.device, args.threads, bs)
                            serial.overlap = False
                            arms.append(answerer_arm("pocketqa no-overlap", texts(serial), examples, bs,
                                                     args.warmup, sync, answers))
                    samples = take_turns(arms, args.rounds, f"{label} batch {bs}", "q/s")
                    row = results.compare(f"{label}, batch {bs}", samples, anchor=arms[0].name, unit="q/s",
                                          **agreement(qa, examples, answers, arms[0].name))
                    results.notes.append(describe(row))
            finally:
                if worker:
                    worker.close()
    results.notes.append(f"anchor: {anchor}" + (f" ({results.settings['anchor_versions']})" if worker else
                         ": run_qa windows padded to 384, utils_qa-style decoding; the installed transformers "
                         "has no QA pipeline"))
    return results


def agreement(qa, examples, answers: dict, anchor: str) -> dict:
    """Shares of answers identical to the anchor's; against the pipeline also under its own scoring rule."""
    theirs = answers[anchor]
    same = {name: sum(a[ex.id] == theirs[ex.id] for ex in examples) / len(examples)
            for name, a in answers.items() if name not in (anchor, BUNDLED)}  # other weights: other answers
    differ = [ex for ex in examples if answers["pocketqa"][ex.id] != theirs[ex.id]]
    windows = windows_per_question(qa, differ) if differ else {}
    info = {"identical_answers": same, "differing": len(differ),
            "differing_with_several_windows": sum(windows.get(ex.id, 1) > 1 for ex in differ)}
    if anchor == "pipeline":
        twin = copy.copy(qa)  # the same model decoded by the pipeline's rule, one candidate per window
        twin.scoring, twin.n_best = "pipeline", 1
        ours = [r["answer"] for r in twin([ex.question for ex in examples], [ex.context for ex in examples])]
        info["identical_answers_scoring_pipeline"] = sum(
            a == theirs[ex.id] for ex, a in zip(examples, ours)) / len(examples)
    return info


def describe(row: dict) -> str:
    """One line on how the answers of a comparison agree with the anchor's."""
    text = (f"{row['name']}: {row['differing']} of pocketqa's answers differ from the anchor's, "
            f"{row['differing_with_several_windows']} of them on questions with several windows")
    if "identical_answers_scoring_pipeline" in row:
        text += f"; with scoring=\"pipeline\" {100 * row['identical_answers_scoring_pipeline']:.1f} % are identical"
    return text
