"""CPU inference speed: pocketqa on PyTorch vs ONNX Runtime fp32 vs ONNX Runtime int8.

Batch 1 (one question per call, as an app on a laptop or phone answers it), N real SQuAD
2.0 dev questions, the same thread count for every runtime. The three runtimes are timed
in rotation question by question, so background load hits them alike. Models are
random-init at the real sizes (speed does not depend on the weights):

- MiniLM-L6 (BertConfig 384 hidden, 6 layers, 12 heads, 1536 FFN) with the real
  all-MiniLM-L6-v2 tokenizer;
- MobileBERT (google/mobilebert-uncased sizes: 512/128 bottlenecks, 24 layers, 4 heads,
  4 FFNs) with the same uncased BERT tokenizer.

Usage:
    PYTHONPATH=src python bench/onnx_cpu.py --n 300 --threads 2 [--out results.json]

``bench_onnx(model_dir, examples, threads)`` is the reusable core (it exports into a
temporary directory and returns q/s, ratios vs PyTorch, sizes and int8 agreement).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2" / "dev-v2.0.json.gz"
RUNTIMES = ("pytorch", "onnx_fp32", "onnx_int8")


def build_models(root: Path) -> dict[str, Path]:
    """Saves random-init MiniLM-L6 and MobileBERT QA models with the MiniLM (BERT uncased) tokenizer."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, MobileBertConfig, MobileBertForQuestionAnswering

    from pocketqa.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("pip:all-MiniLM-L6-v2"))
    configs = {
        "minilm-l6": (BertForQuestionAnswering, BertConfig(
            vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        )),
        "mobilebert": (MobileBertForQuestionAnswering, MobileBertConfig(
            vocab_size=30522, hidden_size=512, embedding_size=128, true_hidden_size=128, intra_bottleneck_size=128,
            num_hidden_layers=24, num_attention_heads=4, intermediate_size=512, num_feedforward_networks=4,
        )),
    }
    dirs = {}
    for name, (cls, config) in configs.items():
        torch.manual_seed(0)
        path = root / name
        cls(config).eval().save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[name] = path
    return dirs


def bench_onnx(model_dir: str | Path, examples: list, threads: int = 2, warmup: int = 5, chunk: int = 10) -> dict:
    """Times pocketqa PyTorch, ONNX fp32 and ONNX int8 at batch 1 on ``examples``.

    Args:
        model_dir: A PyTorch QA model directory (exported here to a temporary directory).
        examples: pocketqa Examples (one call per question).
        threads: Intra-op threads for every runtime.
        warmup: Questions run untimed first by each runtime.
        chunk: Questions timed per runtime before switching to the next.

    Returns:
        {"n", "threads", "qps": {runtime: q/s}, "p50_ms", "ratio_vs_pytorch",
        "sizes_mb", "int8_answers_identical" (share vs PyTorch), "fused"}.
    """
    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.export.exporter import export_model

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_model(model_dir, Path(tmp) / "fp32", threads=threads)
        int8 = export_model(model_dir, Path(tmp) / "int8", int8=True, threads=threads)
        answerers = {
            "pytorch": QuestionAnswerer.from_pretrained(model_dir, device="cpu", threads=threads, batch_size=1),
            "onnx_fp32": QuestionAnswerer.from_pretrained(Path(tmp) / "fp32", threads=threads, batch_size=1),
            "onnx_int8": QuestionAnswerer.from_pretrained(Path(tmp) / "int8", threads=threads, batch_size=1),
        }
        for qa in answerers.values():
            qa.decode_examples(examples[:warmup])
        times = {k: [] for k in answerers}
        answers = {k: [] for k in answerers}
        names = list(answerers)
        for c, start in enumerate(range(0, len(examples), chunk)):
            # Chunks in rotating runtime order: background load drifts hit all runtimes alike,
            # and one runtime's spinning worker threads rarely overlap another's timed calls.
            for name in names[c % len(names):] + names[: c % len(names)]:
                qa = answerers[name]
                for ex in examples[start : start + chunk]:
                    t0 = time.perf_counter()
                    (decoded,) = qa.decode_examples([ex])
                    times[name].append(time.perf_counter() - t0)
                    answers[name].append((ex.id, decoded.answer(qa.threshold)))
        answers = {k: [a for _, a in sorted(v)] for k, v in answers.items()}
    qps = {k: len(v) / sum(v) for k, v in times.items()}
    same = sum(a == b for a, b in zip(answers["pytorch"], answers["onnx_int8"]))
    return {
        "n": len(examples),
        "threads": threads,
        "qps": qps,
        "p50_ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
        "ratio_vs_pytorch": {k: qps[k] / qps["pytorch"] for k in qps},
        "sizes_mb": {"pytorch": fp32["sizes_mb"]["pytorch"], "onnx_fp32": fp32["sizes_mb"]["fp32_onnx"],
                     "onnx_int8": int8["sizes_mb"]["int8_onnx"]},
        "int8_answers_identical": same / len(examples),
        "fp32_max_abs_diff": fp32["parity"]["fp32"]["max_abs_diff"],
        "fused": fp32["optimization"].get("fused", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="dev questions (default 300)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEV)
    parser.add_argument("--models", nargs="*", default=["minilm-l6", "mobilebert"])
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    args = parser.parse_args()

    import torch

    from pocketqa.data.squad import load_squad

    torch.set_num_threads(args.threads)
    examples = load_squad(args.data)
    random.Random(0).shuffle(examples)
    examples = examples[: args.n]
    results = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads",
               "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = build_models(Path(tmp))
        for name in args.models:
            results[name] = r = bench_onnx(dirs[name], examples, threads=args.threads)
            print(f"\n{name}: {r['n']} dev questions, batch 1, {r['threads']} threads")
            print(f"{'runtime':<12}{'q/s':>8}{'p50 ms':>9}{'x PyTorch':>11}{'MB':>9}")
            for k in RUNTIMES:
                print(f"{k:<12}{r['qps'][k]:>8.2f}{r['p50_ms'][k]:>9.1f}{r['ratio_vs_pytorch'][k]:>11.2f}"
                      f"{r['sizes_mb'][k]:>9.1f}")
            print(f"int8 answers identical to PyTorch: {100 * r['int8_answers_identical']:.1f}% (random weights); "
                  f"fp32 max |logit diff| {r['fp32_max_abs_diff']:.1e}; fused: {r['fused'] or 'none'}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
