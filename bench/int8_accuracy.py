"""Accuracy and size of int8 ONNX vs fp32 ONNX vs PyTorch for a fine-tuned QA model.

Exports the model twice (fp32, int8), runs PyTorch fp32, ONNX fp32 and ONNX int8 on a
SQuAD 2.0 file, and reports EM/F1 at the model's calibrated threshold and at the best
threshold, answers identical to PyTorch, and file sizes. ``--sweep`` also tries the
other int8 settings (per-channel scales on/off, 7-bit reduce_range on/off, QA head kept
in fp32 or not) so the defaults in pocketqa/export.py can be checked on a real model.

Usage:
    PYTHONPATH=src python bench/int8_accuracy.py MODEL_DIR --data dev-v2.0.json.gz \\
        [--limit N] [--sweep] [--threads 4] --out int8_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.evaluation.scoring import score_decoded
from pocketqa.export.exporter import FP32_FILE, INT8_KEEP_HEAD_FP32, INT8_PER_CHANNEL, INT8_REDUCE_RANGE, export_model
from pocketqa.data.squad import load_squad


def evaluate(qa, examples, reference_answers=None) -> dict:
    """EM/F1 at the model's threshold and best, plus answers identical to the reference."""
    t0 = time.perf_counter()
    decoded = qa.decode_examples(examples, progress=True)
    seconds = time.perf_counter() - t0
    s = score_decoded(examples, decoded, qa.threshold)
    answers = [d.answer(qa.threshold) for d in decoded]
    row = {k: float(s[k]) for k in ("exact", "f1", "best_exact", "best_f1", "best_f1_thresh")}
    row["threshold"] = qa.threshold
    row["seconds"] = seconds
    if reference_answers is not None:
        row["answers_identical"] = sum(a == b for a, b in zip(answers, reference_answers)) / len(answers)
    return row, answers


def int8_variants(sweep: bool) -> dict[str, dict]:
    """The int8 settings to evaluate: the defaults, and with --sweep the alternatives."""
    default = {"per_channel": INT8_PER_CHANNEL, "reduce_range": INT8_REDUCE_RANGE, "keep_head_fp32": INT8_KEEP_HEAD_FP32}
    variants = {"onnx_int8": default}
    if sweep:
        for pc in (True, False):
            for rr in (False, True):
                if (pc, rr) != (default["per_channel"], default["reduce_range"]):
                    variants[f"onnx_int8 per_channel={pc} reduce_range={rr}"] = {**default, "per_channel": pc,
                                                                                 "reduce_range": rr}
        variants[f"onnx_int8 keep_head_fp32={not INT8_KEEP_HEAD_FP32}"] = {**default,
                                                                           "keep_head_fp32": not INT8_KEEP_HEAD_FP32}
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="fine-tuned PyTorch QA model directory")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD 2.0 dev file")
    parser.add_argument("--limit", type=int, default=None, help="first N questions only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sweep", action="store_true", help="also try other int8 settings")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    args = parser.parse_args()

    examples = load_squad(args.data)[: args.limit]
    results: dict = {"model": str(args.model), "data": str(args.data), "questions": len(examples), "rows": {}}
    rows = results["rows"]
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir = Path(tmp) / "fp32"
        fp32 = export_model(args.model, fp32_dir, threads=args.threads)
        torch_qa = QuestionAnswerer.from_pretrained(args.model, device="cpu", threads=args.threads)
        rows["pytorch"], reference = evaluate(torch_qa, examples)
        rows["pytorch"]["size_mb"] = fp32["sizes_mb"]["pytorch"]
        rows["onnx_fp32"], _ = evaluate(QuestionAnswerer.from_pretrained(fp32_dir, threads=args.threads), examples, reference)
        rows["onnx_fp32"]["size_mb"] = fp32["sizes_mb"]["fp32_onnx"]
        results["fused"] = fp32["optimization"]
        for i, (name, settings) in enumerate(int8_variants(args.sweep).items()):
            out = Path(tmp) / f"int8_{i}"
            report = export_model(args.model, out, int8=True, threads=args.threads, **settings)
            rows[name], _ = evaluate(QuestionAnswerer.from_pretrained(out, threads=args.threads), examples, reference)
            rows[name]["size_mb"] = report["sizes_mb"]["int8_onnx"]
            rows[name]["settings"] = settings
            assert not (out / FP32_FILE).exists()
    base = rows["pytorch"]
    print(f"\n{args.model} on {len(examples)} questions of {args.data.name} (threshold {base['threshold']:.3f})\n")
    print("| runtime | EM | F1 | best EM | best F1 | ΔF1 vs PyTorch | same answers | MB | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        same = f"{100 * r['answers_identical']:.1f}%" if "answers_identical" in r else "-"
        print(f"| {name} | {r['exact']:.2f} | {r['f1']:.2f} | {r['best_exact']:.2f} | {r['best_f1']:.2f} | "
              f"{r['f1'] - base['f1']:+.2f} | {same} | {r['size_mb']:.1f} | {r['seconds']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
