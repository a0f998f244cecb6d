"""GPU inference speed: pocketqa's QuestionAnswerer vs transformers 4.57.6's QA pipeline on CUDA.

The GPU counterpart of bench/inference_cpu.py (same random-init models, same SQuAD 2.0
dev questions, same window and decoding settings, the pipeline in a worker subprocess,
the two sides taking turns round after round). The pipeline runs fp32 at its batch size
(64 windows); pocketqa runs fp32 at the same and larger batch sizes and, as a deployment
would, with fp16 and bf16 weights.

The GPU machine has transformers 5.x only, so the anchor comes from wheels carried in
.whl/ (transformers 4.57.6, tokenizers 0.22.2, huggingface_hub 0.36.2, requests and its
dependencies) installed into /tmp/anchor and put on the worker's PYTHONPATH; pocketqa
uses the machine's own transformers. One command (data and tokenizer from .carry/):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/anchor .whl/*.whl && \
    PYTHONPATH=src python3 bench/gpu_inference.py --anchor-path /tmp/anchor --out $OUT/gpu_inference.json

Try it on a CPU at tiny scale with ``--device cpu --n 4``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_cpu import (  # noqa: E402
    ANCHOR_TRANSFORMERS,
    DOC_STRIDE,
    MAX_ANSWER_LEN,
    MAX_QUESTION_LEN,
    MAX_SEQ_LEN,
    MODEL_SHAPES,
    REPO,
    AnchorWorker,
    build_model_dir,
    environment,
    explain_mismatches,
    load_questions,
    pipeline_scoring,
    time_pocketqa,
    write_questions,
)

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def make_answerer(model_dir: Path, device: str, dtype: str, batch_size: int):
    """A QuestionAnswerer whose PyTorch model holds its weights in ``dtype`` (logits come back as fp32)."""
    import torch

    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.inference.backends import TorchBackend
    from pocketqa.data.features import WindowConfig
    from pocketqa.models import load_qa_model, load_tokenizer

    model = load_qa_model(str(model_dir), device=device, dtype=getattr(torch, DTYPES[dtype]))
    window = WindowConfig(max_seq_length=MAX_SEQ_LEN, doc_stride=DOC_STRIDE, max_query_length=MAX_QUESTION_LEN)
    return QuestionAnswerer(TorchBackend(model, device=device), load_tokenizer(str(model_dir)), window=window,
                            max_answer_length=MAX_ANSWER_LEN, batch_size=batch_size, name=f"{dtype} b{batch_size}")


def bench_gpu_model(variants: dict, worker: AnchorWorker, examples, pipeline_bs: int, rounds: int) -> list[dict]:
    """Times the pipeline and every pocketqa variant once per round, in alternating order."""
    names = ["pipeline", *variants]
    times = {k: [] for k in names}
    last = {}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if name == "pipeline":
                res = worker.run(pipeline_bs, warmup=64)
            else:
                qa = variants[name]
                res = time_pocketqa(qa, examples, qa.batch_size, warmup=64)
            times[name].append(res["seconds"])
            last[name] = res
        print(f"  round {r + 1}/{rounds}: "
              + ", ".join(f"{k} {len(examples) / times[k][-1]:.1f} q/s" for k in names), file=sys.stderr)
    qps = {k: len(examples) / statistics.median(t) for k, t in times.items()}
    theirs = last["pipeline"]["answers"]
    rows = []
    for name, qa in variants.items():
        ours = last[name]["answers"]
        by_rule = time_pocketqa(pipeline_scoring(qa), examples, qa.batch_size, warmup=0)["answers"]  # untimed
        mismatches = explain_mismatches(qa, examples, ours, theirs, last["pipeline"]["scores"])
        if not name.startswith("fp32"):
            for m in mismatches:
                m["reason"] = f"half-precision weights round the logits; {m['reason']}"
        rows.append({
            "variant": name, "batch_size": qa.batch_size, "pipeline_batch_size": pipeline_bs,
            "pocketqa_qps": qps[name], "pipeline_qps": qps["pipeline"], "ratio": qps[name] / qps["pipeline"],
            "seconds": {"pocketqa": times[name], "pipeline": times["pipeline"]},
            "identical_answers": sum(ours[ex.id] == theirs[ex.id] for ex in examples) / len(examples),
            "identical_answers_pipeline_scoring": sum(by_rule[ex.id] == theirs[ex.id] for ex in examples) / len(examples),
            "mismatches": mismatches[:50],
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | pocketqa | pipeline q/s (fp32, batch) | pocketqa q/s | ratio | identical answers "
             "| identical, scoring=pipeline |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['pipeline_qps']:.1f} (b{r['pipeline_batch_size']}) | "
                     f"{r['pocketqa_qps']:.1f} | {r['ratio']:.2f}x | {100 * r['identical_answers']:.1f} % | "
                     f"{100 * r['identical_answers_pipeline_scoring']:.1f} % |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="questions (first N of the dev set)")
    p.add_argument("--sample-seed", type=int, default=None, help="take a seeded random sample instead")
    p.add_argument("--data", type=Path, default=REPO / ".carry" / "data" / "dev-v2.0.json.gz")
    p.add_argument("--tokenizer", type=Path, default=REPO / ".carry" / "minilm",
                   help="directory with the BERT uncased tokenizer files (tokenizer.json, vocab.txt, ...)")
    p.add_argument("--anchor-path", type=Path, required=True,
                   help="folder holding transformers 4.57.6 (pip install --target), put on the worker's PYTHONPATH")
    p.add_argument("--models", default=",".join(MODEL_SHAPES), help=f"comma list of {', '.join(MODEL_SHAPES)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--pipeline-batch-size", type=int, default=64)
    p.add_argument("--batch-sizes", default="64,256", help="pocketqa batch sizes (windows per forward)")
    p.add_argument("--dtypes", default="fp32,fp16,bf16", help="pocketqa weight dtypes; fp16/bf16 at the largest batch")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (both sides)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here (try --device cpu for a dry run)")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        raise SystemExit(f"unknown --dtypes {bad}; known: {', '.join(DTYPES)}")
    # fp32 at every batch size; the half-precision runs at the largest one.
    plan = [("fp32", b) for b in batch_sizes if "fp32" in dtypes] + [(d, max(batch_sizes)) for d in dtypes if d != "fp32"]
    examples = load_questions(args.data, args.n, args.sample_seed)
    env = {**os.environ, "PYTHONPATH": str(args.anchor_path.resolve())}
    rows = []
    anchor_env = None
    with tempfile.TemporaryDirectory(prefix="pocketqa-gpu-bench-") as tmp:
        questions_file = write_questions(examples, Path(tmp) / "questions.json")
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model_dir = build_model_dir(name, Path(tmp), args.tokenizer, seed=args.seed)
            worker = AnchorWorker(sys.executable, model_dir, questions_file, args.device, args.threads, env=env)
            anchor_env = worker.info
            if anchor_env["transformers"] != ANCHOR_TRANSFORMERS:
                worker.close()
                raise SystemExit(f"the worker imported transformers {anchor_env['transformers']}, not "
                                 f"{ANCHOR_TRANSFORMERS}: is --anchor-path {args.anchor_path} installed?")
            variants = {f"{d} b{b}": make_answerer(model_dir, args.device, d, b) for d, b in plan}
            # the same as the last variant with windowing/decoding in series with the model
            # (QuestionAnswerer.overlap, on by default on CUDA): what overlapping them gains
            d, b = plan[-1]
            serial = make_answerer(model_dir, args.device, d, b)
            serial.overlap = False
            variants[f"{d} b{b} no overlap"] = serial
            print(f"{name}: {len(examples)} questions on {args.device}", file=sys.stderr)
            try:
                for row in bench_gpu_model(variants, worker, examples, args.pipeline_batch_size, args.rounds):
                    rows.append({"model": name, **row})
            finally:
                worker.close()
            del variants
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {
        "benchmark": "bench/gpu_inference.py", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "n_questions": len(examples), "device": device_name, "data": str(args.data),
        "settings": {"max_seq_len": MAX_SEQ_LEN, "doc_stride": DOC_STRIDE, "max_question_len": MAX_QUESTION_LEN,
                     "max_answer_len": MAX_ANSWER_LEN, "handle_impossible_answer": True, "align_to_words": False},
        "pocketqa_env": environment(), "anchor_env": anchor_env, "rows": rows,
    }
    print(markdown_table(rows))
    for r in rows:
        for m in r["mismatches"][:5]:
            print(f"  differs [{r['model']}, {r['variant']}] {m['id']}: pocketqa {m['pocketqa']!r} vs pipeline "
                  f"{m['pipeline']!r} ({m['reason']})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
