"""``pocketqa card``: writes README.md (and, with a dev file, eval_results.json and plots) into a model dir.

Everything comes from the directory itself: config.json, pocketqa.json and, with a dev
file, a fresh evaluation (card/facts.py reads, card/render.py writes the text).
"""

from __future__ import annotations

import os
from pathlib import Path

from pocketqa.card.facts import json_object, read_config
from pocketqa.card.plots import figure_class, has_splits, plot_has_no_ans, plot_threshold_curve, split_title
from pocketqa.card.render import render_card
from pocketqa.card.speed import benchmark_cpu, spread
from pocketqa.data.formats import load_examples
from pocketqa.data.squad import write_json_atomic
from pocketqa.errors import PocketQAError
from pocketqa.evaluation.curves import threshold_curve
from pocketqa.evaluation.scoring import score_decoded
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.modeldir import EVAL_FILE, meta_metrics, read_meta
from pocketqa.models import dir_size_mb

CARD_FILE = "README.md"
CURVE_PLOT = "threshold_curve.png"
SPLIT_PLOT = "has_no_ans.png"

NO_PLOTS_NOTE = "note: matplotlib is not installed, so no plots; add them with: pip install 'pocketqa[plots]'"
SPLIT_ALT = "EM and F1 on answerable (HasAns) and unanswerable (NoAns) questions"


def write_card(
    model_dir: str | os.PathLike,
    dev_path: str | os.PathLike | None = None,
    bench_questions: int = 100,
    threads: int = 2,
) -> Path:
    """Writes README.md (and, with a dev file, eval_results.json and plots) into a model dir.

    With ``dev_path`` the model is scored on it (as ``pocketqa evaluate --model`` does) at
    the threshold of pocketqa.json, and ``bench_questions`` of its questions time CPU
    speed; without it, metrics come from pocketqa.json's "metrics", if any.

    Args:
        model_dir: A local pocketqa model directory.
        dev_path: A SQuAD 2.0 JSON (or .json.gz) to evaluate on.
        bench_questions: Questions timed at batch 1 on CPU (0: no speed measurement).
        threads: CPU threads for the speed measurement.

    Returns:
        The path of the README.md written.
    """
    model_dir = Path(model_dir).expanduser()
    problems = []
    if not model_dir.is_dir():
        problems.append(f"--model {model_dir}: no such directory")
    elif not (model_dir / "config.json").is_file() and not any(model_dir.glob("*.onnx")):
        problems.append(f"--model {model_dir}: not a model directory (no config.json or *.onnx)")
    if isinstance(bench_questions, bool) or not isinstance(bench_questions, int) or bench_questions < 0:
        problems.append(f"--bench-questions must be an integer >= 0, found {bench_questions!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        problems.append(f"--threads must be an integer >= 1, found {threads!r}")
    if problems:
        raise PocketQAError("; ".join(problems))
    meta = json_object(read_meta(model_dir), model_dir / "pocketqa.json")
    config = read_config(model_dir)
    name = str(meta.get("name") or model_dir.name)

    scores = speed = None
    scores_source = None
    plots: list[tuple[str, str]] = []
    if dev_path is not None:
        examples = load_examples(dev_path)  # a bad file fails before the model loads
        if not examples:
            raise PocketQAError(f"--dev {dev_path}: no questions in the file")
        qa = QuestionAnswerer.from_pretrained(model_dir)
        decoded = qa.decode_examples(examples, progress=True)
        scores = score_decoded(examples, decoded, qa.threshold)
        scores_source = str(dev_path)
        if bench_questions:
            speed = benchmark_cpu(model_dir, spread(examples, bench_questions), threads)
        results = {**scores, "data": str(dev_path)}
        if speed:
            results["speed"] = speed
        write_json_atomic(results, model_dir / EVAL_FILE, indent=2)
        if figure_class() is None:
            print(NO_PLOTS_NOTE)
        else:
            title = f"{name} on {Path(dev_path).name} ({len(examples)} questions)"
            plot_threshold_curve(threshold_curve(examples, decoded), scores, model_dir / CURVE_PLOT, title)
            plots.append((CURVE_PLOT, "F1 and EM against the no-answer threshold"))
            plot_has_no_ans(scores, model_dir / SPLIT_PLOT, split_title(name, scores))
            plots.append((SPLIT_PLOT, SPLIT_ALT))
    else:
        scores = meta_metrics(meta)
        if scores is not None and "threshold" not in scores and isinstance(meta.get("threshold"), (int, float)):
            scores = {**scores, "threshold": meta["threshold"]}
        if scores is not None and has_splits(scores):
            if figure_class() is None:
                print(NO_PLOTS_NOTE)
            else:
                plot_has_no_ans(scores, model_dir / SPLIT_PLOT, split_title(name, scores))
                plots.append((SPLIT_PLOT, SPLIT_ALT))

    text = render_card(model_dir, meta, config, scores, scores_source, dir_size_mb(model_dir), speed, plots)
    path = model_dir / CARD_FILE
    tmp = model_dir / f".{CARD_FILE}.tmp{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
