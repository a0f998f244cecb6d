"""CPU inference speed: pocketqa's QuestionAnswerer vs transformers 4.57.6's QA pipeline.

Both sides answer the same real SQuAD 2.0 dev questions with the same randomly
initialised weights (a MobileBERT of google/mobilebert-uncased's shape and a 6-layer
BERT-base, saved once with the real BERT uncased tokenizer), on the same number of
threads, one question at a time (batch 1) and in batches. The anchor runs in its own
virtual environment (torch 2.13.0 + transformers 4.57.6, installed on first use) as a
worker subprocess; the two sides take turns, round after round, so that background
load hits both alike. Reported: questions per second, the pocketqa / pipeline ratio and
the share of identical answers.

    PYTHONPATH=src python bench/inference_cpu.py --n 300 --out runs/bench_inference_cpu.json

With ``--onnx`` the batch-1 rotation also times pocketqa on ONNX Runtime, fp32 and int8
(the same weights exported with ``pocketqa export``), so every runtime's ratio to the
pipeline comes from passes taken in turn within one run.

Decoding settings that make the answers comparable (see docs/bench_inference.md):
the pipeline gets ``max_answer_len=30`` (its default is 15; utils_qa and pocketqa use 30)
and ``align_to_words=False`` (its default widens answers to whole words; pocketqa, like
utils_qa, returns the exact token span).

The same file is the anchor worker (``--worker``), run under the anchor's Python; it
imports nothing from pocketqa. bench/gpu_inference.py reuses the helpers below.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "squad2" / "dev-v2.0.json.gz"
DEFAULT_ANCHOR_VENV = REPO / ".cache" / "anchor-venv"
ANCHOR_PINS = ("torch==2.13.0", "transformers==4.57.6")
ANCHOR_TRANSFORMERS = "4.57.6"

# Window and decoding settings shared by both sides (run_qa / pipeline defaults, but
# max_answer_len 30 as in utils_qa).
MAX_SEQ_LEN, DOC_STRIDE, MAX_QUESTION_LEN, MAX_ANSWER_LEN = 384, 128, 64, 30
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

# google/mobilebert-uncased's shape, and the first 6 layers of bert-base-uncased's shape.
MODEL_SHAPES = {
    "mobilebert-24L": (
        "MobileBertConfig",
        dict(
            hidden_size=512, embedding_size=128, true_hidden_size=128, intra_bottleneck_size=128,
            num_hidden_layers=24, num_attention_heads=4, intermediate_size=512, num_feedforward_networks=4,
        ),
    ),
    "bert-6L-768": (
        "BertConfig",
        dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072),
    ),
    # all-MiniLM-L6-v2's shape (the bundled model's architecture)
    "minilm-L6": (
        "BertConfig",
        dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    ),
}


# -- shared helpers (also used by gpu_inference.py) -----------------------------------------


def build_model_dir(name: str, out_dir: Path, tokenizer_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Saves a seeded random-init QA model of shape ``MODEL_SHAPES[name]`` with a real tokenizer."""
    import torch
    import transformers

    config_class, shape = MODEL_SHAPES[name]
    out = Path(out_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / f).is_file():
            shutil.copy(Path(tokenizer_dir) / f, out / f)
    vocab_size = sum(1 for _ in open(out / "vocab.txt", encoding="utf-8"))
    config = getattr(transformers, config_class)(vocab_size=vocab_size, max_position_embeddings=512, **shape)
    torch.manual_seed(seed)
    model = transformers.AutoModelForQuestionAnswering.from_config(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


def load_questions(path: str | os.PathLike, n: int, sample_seed: int | None = None) -> list:
    """The first ``n`` questions of a SQuAD file, or a seeded sample of ``n`` of them."""
    import random

    from pocketqa.data.squad import load_squad

    examples = load_squad(path)
    if sample_seed is not None:
        return random.Random(sample_seed).sample(examples, min(n, len(examples)))
    return examples[:n]


def write_questions(examples, path: Path) -> Path:
    rows = [{"id": ex.id, "question": ex.question, "context": ex.context} for ex in examples]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def ensure_anchor_venv(venv: Path) -> Path:
    """The anchor venv's python, creating it (torch 2.13.0 + transformers 4.57.6) when missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import transformers, torch; print(transformers.__version__)"]
    if python.is_file():
        done = subprocess.run(probe, capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == ANCHOR_TRANSFORMERS:
            return python
    print(f"installing the anchor ({' '.join(ANCHOR_PINS)}) into {venv} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *ANCHOR_PINS], check=True)
    return python


class AnchorWorker:
    """The transformers pipeline in a subprocess, answering timed passes on request.

    It speaks one JSON object per line: we send ``{"batch_size": k, "warmup": n}``; it
    answers ``{"seconds", "answers", "scores"}`` for all its questions (warm-up questions
    are run first, untimed).
    """

    def __init__(self, python: str, model_dir: Path, questions_file: Path, device: str, threads: int | None, env=None):
        cmd = [str(python), str(Path(__file__).resolve()), "--worker", "--model", str(model_dir),
               "--questions", str(questions_file), "--device", device]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"anchor worker died (exit code {self.proc.wait()}); see its messages above")
        return json.loads(line)

    def run(self, batch_size: int, warmup: int = 8) -> dict:
        self.proc.stdin.write(json.dumps({"batch_size": batch_size, "warmup": warmup}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def time_pocketqa(qa, examples, batch_size: int, warmup: int = 8) -> dict:
    """One timed pass of pocketqa over ``examples`` (after an untimed warm-up)."""
    qa.batch_size = batch_size
    questions = [ex.question for ex in examples]
    contexts = [ex.context for ex in examples]

    def answer_all(qs, cs):
        if batch_size == 1:  # one question per call, as a service answering requests would
            return [qa(q, c) for q, c in zip(qs, cs)]
        return qa(qs, cs)

    answer_all(questions[:warmup], contexts[:warmup])
    sync = _cuda_sync(qa)
    t0, c0 = time.perf_counter(), time.process_time()
    results = answer_all(questions, contexts)
    sync()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "answers": {ex.id: r["answer"] for ex, r in zip(examples, results)},
        "scores": {ex.id: r["null_odds"] for ex, r in zip(examples, results)},
    }


def _cuda_sync(qa):
    device = getattr(getattr(qa.backend, "device", None), "type", "cpu")
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


def explain_mismatches(qa, examples, ours: dict, theirs: dict, their_scores: dict) -> list[dict]:
    """Why answers differ: window count and how close pocketqa's decision was."""
    from pocketqa.data.features import make_features

    diff = [ex for ex in examples if ours[ex.id] != theirs[ex.id]]
    if not diff:
        return []
    features = make_features(diff, qa.tokenizer, qa.window)
    decoded = qa.decode_examples(diff)
    out = []
    for i, (ex, d) in enumerate(zip(diff, decoded)):
        n_windows = int((features.example_index == i).sum())
        margin = d.spans[0].score - d.spans[1].score if len(d.spans) > 1 else None
        if n_windows > 1:
            reason = "several windows: the pipeline compares softmax probabilities normalised per window"
        elif abs(d.null_odds) < 1e-3:
            reason = f"near tie of null and best span (null_odds {d.null_odds:.2e})"
        elif margin is not None and margin < 1e-3:
            reason = f"near tie of the two best spans (margin {margin:.2e})"
        else:
            reason = "unexplained"
        out.append({
            "id": ex.id, "pocketqa": ours[ex.id], "pipeline": theirs[ex.id], "windows": n_windows,
            "null_odds": d.null_odds, "top2_margin": margin, "pipeline_score": their_scores.get(ex.id),
            "reason": reason,
        })
    return out


def pipeline_scoring(qa):
    """The same answerer (same backend and model) decoding with scoring="pipeline", n_best=1."""
    twin = copy.copy(qa)
    twin.scoring, twin.n_best = "pipeline", 1
    return twin


def bench_model(qa, worker: AnchorWorker, examples, batch_sizes: dict[str, tuple[int, int]], rounds: int,
                warmup: int = 8, extra: dict | None = None) -> list[dict]:
    """Times pocketqa and the pipeline in turn, ``rounds`` times per mode; one row per mode.

    Args:
        batch_sizes: mode name -> (pocketqa batch size, pipeline batch size).
        extra: More pocketqa answerers (e.g. ONNX Runtime fp32 / int8) timed in the same
            rotation as the other two in the batch-1 mode, so that load hits all alike.
    """
    rows = []
    for mode, (ours_bs, anchor_bs) in batch_sizes.items():
        sides = {"pocketqa": qa, **(extra if ours_bs == 1 and extra else {})}
        names = [*sides, "pipeline"]
        times = {s: [] for s in names}
        cpu_times = {s: [] for s in names}
        last = {}
        for r in range(rounds):
            shift = r % len(names)  # each side takes each place in the order in turn
            for side in names[shift:] + names[:shift]:
                if side == "pipeline":
                    res = worker.run(anchor_bs, warmup)
                else:
                    res = time_pocketqa(sides[side], examples, ours_bs, warmup)
                times[side].append(res["seconds"])
                cpu_times[side].append(res["cpu_seconds"])
                last[side] = res
            print(f"  {mode} round {r + 1}/{rounds}: "
                  + ", ".join(f"{s} {len(examples) / times[s][-1]:.2f} q/s" for s in times), file=sys.stderr)
        theirs = last["pipeline"]["answers"]
        qps = {s: len(examples) / statistics.median(t) for s, t in times.items()}
        # CPU seconds of each process (all its threads): less sensitive than wall time to
        # other programs competing for the cores, a check on the wall-clock ratio.
        cpu = {s: statistics.median(t) for s, t in cpu_times.items()}
        same = {s: sum(last[s]["answers"][ex.id] == theirs[ex.id] for ex in examples) / len(examples) for s in sides}
        ours = last["pocketqa"]["answers"]
        # Untimed: the same model decoded by the pipeline's own rule (one candidate per
        # window, as its top_k=1), which must leave no difference but float rounding.
        by_rule = time_pocketqa(pipeline_scoring(qa), examples, ours_bs, warmup=0)["answers"]
        same_rule = sum(by_rule[ex.id] == theirs[ex.id] for ex in examples) / len(examples)
        rows.append({
            "mode": mode, "pocketqa_batch_size": ours_bs, "pipeline_batch_size": anchor_bs,
            "pocketqa_qps": qps["pocketqa"], "pipeline_qps": qps["pipeline"],
            "ratio": qps["pocketqa"] / qps["pipeline"], "seconds": times, "cpu_seconds": cpu_times,
            "cpu_ratio": cpu["pipeline"] / cpu["pocketqa"],
            "identical_answers": same["pocketqa"],
            "identical_answers_pipeline_scoring": same_rule,
            "mismatches_pipeline_scoring": [
                {"id": ex.id, "pocketqa": by_rule[ex.id], "pipeline": theirs[ex.id]}
                for ex in examples if by_rule[ex.id] != theirs[ex.id]
            ],
            "abstained": {"pocketqa": sum(v == "" for v in ours.values()) / len(ours),
                          "pipeline": sum(v == "" for v in theirs.values()) / len(theirs)},
            "mismatches": explain_mismatches(qa, examples, ours, theirs, last["pipeline"]["scores"]),
            "runtimes": {s: {"qps": qps[s], "ratio": qps[s] / qps["pipeline"], "cpu_ratio": cpu["pipeline"] / cpu[s],
                             "identical_answers": same[s]} for s in sides},
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | mode | pipeline q/s | pocketqa q/s | ratio | CPU-time ratio | identical answers "
             "| identical, scoring=pipeline |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mode']} | {r['pipeline_qps']:.2f} | {r['pocketqa_qps']:.2f} | "
                     f"{r['ratio']:.2f}x | {r['cpu_ratio']:.2f}x | {100 * r['identical_answers']:.1f} % | "
                     f"{100 * r['identical_answers_pipeline_scoring']:.1f} % |")
    return "\n".join(lines)


def environment() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count()}


def onnx_answerers(model_dir: Path, root: Path, threads: int) -> tuple[dict, dict]:
    """Exports ``model_dir`` to ONNX fp32 and int8 under ``root``; returns answerers and sizes in MB."""
    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.export.exporter import export_model

    answerers, sizes = {}, {}
    for runtime, int8 in (("onnx_fp32", False), ("onnx_int8", True)):
        out = root / f"{model_dir.name}-{runtime}"
        report = export_model(model_dir, out, int8=int8, threads=threads)
        sizes[runtime] = report["sizes_mb"]["int8_onnx" if int8 else "fp32_onnx"]
        qa = QuestionAnswerer.from_pretrained(out, threads=threads, max_seq_length=MAX_SEQ_LEN, doc_stride=DOC_STRIDE,
                                              max_query_length=MAX_QUESTION_LEN)
        qa.max_answer_length = MAX_ANSWER_LEN
        answerers[runtime] = qa
    return answerers, sizes


def runtime_table(rows: list[dict]) -> str:
    lines = ["| model | mode | pipeline q/s | runtime | q/s | vs pipeline | CPU-time ratio | identical answers |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        for runtime, res in r["runtimes"].items():
            name = "pytorch" if runtime == "pocketqa" else runtime
            lines.append(f"| {r['model']} | {r['mode']} | {r['pipeline_qps']:.2f} | {name} | {res['qps']:.2f} | "
                         f"{res['ratio']:.2f}x | {res['cpu_ratio']:.2f}x | {100 * res['identical_answers']:.1f} % |")
    return "\n".join(lines)


# -- the anchor worker (runs under the anchor's Python, no pocketqa imports) -------------


def worker_main(args) -> None:
    import torch
    import transformers
    from transformers import pipeline

    # Library messages must not mix with our JSON lines: they go to stderr.
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rows = json.loads(Path(args.questions).read_text(encoding="utf-8"))
    qa = pipeline("question-answering", model=args.model, tokenizer=args.model, device=args.device)
    kwargs = dict(handle_impossible_answer=True, max_seq_len=MAX_SEQ_LEN, doc_stride=DOC_STRIDE,
                  max_question_len=MAX_QUESTION_LEN, top_k=1, max_answer_len=MAX_ANSWER_LEN, align_to_words=False)

    def answer_all(batch, batch_size):
        if batch_size == 1:
            return [qa(question=r["question"], context=r["context"], **kwargs) for r in batch]
        out = qa(question=[r["question"] for r in batch], context=[r["context"] for r in batch],
                 batch_size=batch_size, **kwargs)
        return out if isinstance(out, list) else [out]

    reply.write(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__}) + "\n")
    reply.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        answer_all(rows[: cmd["warmup"]], cmd["batch_size"])
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        t0, c0 = time.perf_counter(), time.process_time()
        results = answer_all(rows, cmd["batch_size"])
        sync()
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        reply.write(json.dumps({
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "answers": {r["id"]: res["answer"] for r, res in zip(rows, results)},
            "scores": {r["id"]: float(res["score"]) for r, res in zip(rows, results)},
        }) + "\n")
        reply.flush()


# -- main ------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="questions (first N of the dev set)")
    p.add_argument("--sample-seed", type=int, default=None, help="take a seeded random sample instead")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--models", default=",".join(MODEL_SHAPES), help=f"comma list of {', '.join(MODEL_SHAPES)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="batched mode, both sides")
    p.add_argument("--rounds", type=int, default=2, help="alternating timed passes per side and mode")
    p.add_argument("--anchor-venv", type=Path, default=DEFAULT_ANCHOR_VENV)
    p.add_argument("--onnx", action="store_true",
                   help="also time pocketqa on ONNX Runtime fp32 and int8 (batch 1, in the same rotation)")
    p.add_argument("--seed", type=int, default=0, help="weight init seed")
    p.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--questions", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.models import resolve_model

    torch.set_num_threads(args.threads)
    anchor_python = ensure_anchor_venv(args.anchor_venv)
    examples = load_questions(args.data, args.n, args.sample_seed)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODEL_SHAPES]
    if unknown:
        raise SystemExit(f"unknown --models {unknown}; known: {', '.join(MODEL_SHAPES)}")
    modes = {"batch 1": (1, 1), f"batch {args.batch_size}": (args.batch_size, args.batch_size)}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    rows, sizes, anchor_env = [], {}, None
    with tempfile.TemporaryDirectory(prefix="pocketqa-bench-") as tmp:
        questions_file = write_questions(examples, Path(tmp) / "questions.json")
        for name in models:
            model_dir = build_model_dir(name, Path(tmp), resolve_model("pip:all-MiniLM-L6-v2"), seed=args.seed)
            print(f"{name}: {len(examples)} questions, {args.threads} threads", file=sys.stderr)
            qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu", threads=args.threads,
                                                  max_seq_length=MAX_SEQ_LEN, doc_stride=DOC_STRIDE,
                                                  max_query_length=MAX_QUESTION_LEN)
            qa.max_answer_length = MAX_ANSWER_LEN
            worker = AnchorWorker(anchor_python, model_dir, questions_file, "cpu", args.threads, env=env)
            anchor_env = worker.info
            if anchor_env["transformers"] != ANCHOR_TRANSFORMERS:
                worker.close()
                raise SystemExit(f"{anchor_python} runs transformers {worker.info['transformers']}, "
                                 f"not {ANCHOR_TRANSFORMERS}; delete {args.anchor_venv} to reinstall it")
            extra = {}
            if args.onnx:
                extra, sizes[name] = onnx_answerers(model_dir, Path(tmp), args.threads)
            try:
                for row in bench_model(qa, worker, examples, modes, args.rounds, extra=extra):
                    rows.append({"model": name, **row})
            finally:
                worker.close()
            del qa, extra
    result = {
        "benchmark": "bench/inference_cpu.py", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "n_questions": len(examples), "threads": args.threads, "data": str(args.data),
        "settings": {"max_seq_len": MAX_SEQ_LEN, "doc_stride": DOC_STRIDE, "max_question_len": MAX_QUESTION_LEN,
                     "max_answer_len": MAX_ANSWER_LEN, "handle_impossible_answer": True, "align_to_words": False},
        "pocketqa_env": environment(), "anchor_env": anchor_env, "rows": rows,
    }
    if args.onnx:
        result["onnx_sizes_mb"] = sizes
    print(markdown_table(rows))
    for r in rows:
        for m in r["mismatches"]:
            print(f"  differs [{r['model']}, {r['mode']}] {m['id']}: pocketqa {m['pocketqa']!r} vs pipeline "
                  f"{m['pipeline']!r} ({m['reason']})")
        for m in r["mismatches_pipeline_scoring"]:
            print(f"  differs with scoring=pipeline [{r['model']}, {r['mode']}] {m['id']}: pocketqa "
                  f"{m['pocketqa']!r} vs pipeline {m['pipeline']!r}")
    if args.onnx:
        print(runtime_table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
