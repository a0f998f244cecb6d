"""Model cards: a README.md for a model directory, with scores, size, speed and plots.

The card follows the form of the Hugging Face cards the project seeds from
(mrm8488/mobilebert-uncased-finetuned-squadv2, deepset/tinybert-6l-768d-squad2): YAML
front matter (language, license, datasets, tags, model-index), an overview of what the
model is and what it was trained on, the command that made it, a results table and how
to use it. Everything comes from the directory itself: config.json, pocketqa.json (read
tolerantly: any key may be missing) and, with a dev file, a fresh evaluation.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import struct
import time
from pathlib import Path

import numpy as np

from pocketqa.errors import PocketQAError
from pocketqa.models import dir_size_mb
from pocketqa.modeldir import read_json_file, read_meta

CARD_FILE = "README.md"
EVAL_FILE = "eval_results.json"
CURVE_PLOT = "threshold_curve.png"
SPLIT_PLOT = "has_no_ans.png"

NO_PLOTS_NOTE = "note: matplotlib is not installed, so no plots; add them with: pip install 'pocketqa[plots]'"
SPLIT_ALT = "EM and F1 on answerable (HasAns) and unanswerable (NoAns) questions"

# Rows of the results table: (label, key in the scores dict).
SCORE_ROWS = (
    ("EM", "exact"),
    ("F1", "f1"),
    ("HasAns EM", "HasAns_exact"),
    ("HasAns F1", "HasAns_f1"),
    ("NoAns EM", "NoAns_exact"),
    ("NoAns F1", "NoAns_f1"),
)

# Operators that only a quantized ONNX graph holds (onnxruntime.quantization output).
_INT8_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger"}


# -- what the directory holds -----------------------------------------------------------


def read_config(model_dir: Path) -> dict:
    """config.json of the model ({} when absent: an ONNX-only directory may lack it)."""
    return _json_object(read_json_file(model_dir / "config.json"), model_dir / "config.json")


def _json_object(value, path: Path) -> dict:
    """``value`` (a parsed JSON file of the model dir) when it is an object, else one clear error."""
    if not isinstance(value, dict):
        raise PocketQAError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (u64 little-endian length, then JSON)."""
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > path.stat().st_size - 8:
                raise ValueError(f"header length {size} is past the end of the file")
            header = json.loads(fh.read(size))
    except (struct.error, ValueError) as e:  # truncated, or not safetensors at all
        raise PocketQAError(f"{path}: not a readable safetensors file ({e}); copy or save it again") from None
    if not isinstance(header, dict):
        raise PocketQAError(f"{path}: not a readable safetensors file (header is not a JSON object)")
    return header


def count_parameters(model_dir: Path, meta: dict) -> tuple[int, bool] | None:
    """Parameter count, and whether it is approximate; None when nothing tells.

    Exact from the safetensors headers (no weights are loaded), else from a
    ``parameters`` entry of pocketqa.json (top level or its "export" section), else
    approximate from the initializers of an ONNX graph (when onnx is installed: an int8
    graph also holds per-channel scales, a few parameters more than the model).
    """
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        total = 0
        for f in files:
            header = _safetensors_header(f)
            total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
        return total, False
    export = meta.get("export") if isinstance(meta.get("export"), dict) else {}
    for section in (meta, export):
        value = section.get("parameters")
        if isinstance(value, int) and not isinstance(value, bool):
            return value, False
    onnx_files = sorted(model_dir.glob("*.onnx"))
    if onnx_files:
        try:
            import onnx

            graph = onnx.load(str(onnx_files[0]), load_external_data=False).graph
        except Exception:  # no onnx package, or a graph only the runtime can judge
            return None
        total = sum(math.prod(t.dims) for t in graph.initializer if len(t.dims) >= 1 and math.prod(t.dims) > 1)
        return total, True
    return None


def describe_backend(model_dir: Path, meta: dict) -> str:
    """"PyTorch (safetensors)", "ONNX Runtime, int8" or "ONNX Runtime, fp32".

    A directory with a ``*.onnx`` file runs on ONNX Runtime (as QuestionAnswerer decides).
    The precision comes from pocketqa.json's "export" section when it says, else from the
    graph's operators (when the onnx package is installed), else it is left unnamed.
    """
    onnx_files = sorted(model_dir.glob("*.onnx"))
    if not onnx_files:
        return "PyTorch (safetensors)" if any(model_dir.glob("*.safetensors")) else "PyTorch"
    export = meta.get("export") if isinstance(meta.get("export"), dict) else {}
    precision = _precision_from_export(export)
    if precision is None:
        precision = _precision_from_graph(onnx_files[0])
    return f"ONNX Runtime, {precision}" if precision else "ONNX Runtime"


def _precision_from_export(export: dict) -> str | None:
    for key in ("precision", "dtype", "quantization", "quantize", "int8"):
        if key not in export:
            continue
        value = export[key]
        if isinstance(value, bool):
            return "int8" if value else "fp32"
        if isinstance(value, str) and value:
            return "int8" if "int8" in value.lower() or "dynamic" in value.lower() else value.lower()
        if isinstance(value, dict):  # e.g. {"mode": "dynamic", "weight_type": "int8"}
            return "int8"
    return None


def _precision_from_graph(path: Path) -> str | None:
    try:
        import onnx
    except ImportError:
        return None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # an unreadable graph is reported by the runtime, not by the card
        return None
    return "int8" if any(node.op_type in _INT8_OPS for node in graph.node) else "fp32"


def describe_architecture(config: dict, parameters: tuple[int, bool] | None) -> str:
    """One line: "bert, 6 layers, hidden 384, 12 heads, 22.7M parameters"."""
    parts = [str(config.get("model_type", "unknown architecture"))]
    for key, label in (
        ("num_hidden_layers", "layers"),
        ("hidden_size", "hidden"),
        ("num_attention_heads", "heads"),
        ("intermediate_size", "intermediate"),
    ):
        if key in config:
            value = config[key]
            parts.append(f"{value} {label}" if label == "layers" else f"{label} {value}")
    if parameters is not None:
        count, approximate = parameters
        parts.append(f"{'about ' if approximate else ''}{format_count(count)} parameters")
    return ", ".join(parts)


def format_count(n: int) -> str:
    """1234 -> "1.2k", 22_713_216 -> "22.7M"."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)


def _text(value) -> str:
    """Renders whatever pocketqa.json holds for a key as one short line."""
    if isinstance(value, str):
        # sha256 digests: the first 12 hex digits identify a file well enough on a card
        return value[:12] if len(value) == 64 and all(c in "0123456789abcdef" for c in value) else value
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        for key in ("name", "source", "path", "id"):  # a dict that names itself
            if isinstance(value.get(key), str):
                rest = {k: v for k, v in value.items() if k != key and not isinstance(v, (dict, list))}
                extra = ", ".join(f"{k}={_text(v)}" for k, v in rest.items())
                return f"{value[key]} ({extra})" if extra else value[key]
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


def _export_text(export: dict) -> str:
    """export.py's section: {"format", "int8", "opset", "source", "parity_passed", ...}."""
    head = str(export.get("format", "exported")).replace("onnx", "ONNX")
    if export.get("opset") is not None:
        head += f" opset {export['opset']}"
    parts = [head]
    if export.get("source"):
        parts.append(f"from {export['source']}")
    if "int8" in export:
        parts.append("int8 dynamic quantization" if export["int8"] else "fp32")
    if "parity_passed" in export:
        parts.append("parity check with PyTorch " + ("passed" if export["parity_passed"] else "FAILED"))
    known = {"format", "opset", "source", "int8", "parity_passed"}
    parts += [f"{k}={_text(v)}" for k, v in export.items() if k not in known and not isinstance(v, (dict, list))]
    return ", ".join(parts)


def _command_text(command) -> str:
    if isinstance(command, (list, tuple)):
        return shlex.join(str(c) for c in command)
    return str(command)


def metrics_from_meta(meta: dict) -> dict | None:
    """Scores stored in pocketqa.json's "metrics" (flat, or one level down), else None."""
    metrics = meta.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return None
    if any(key in metrics for _, key in SCORE_ROWS):
        return metrics
    for value in metrics.values():  # e.g. {"dev": {"exact": ..., "f1": ...}}
        if isinstance(value, dict) and any(key in value for _, key in SCORE_ROWS):
            return value
    return None


# -- the threshold curve -------------------------------------------------------------------


def threshold_curve(examples, decoded) -> dict:
    """EM and F1 (all, HasAns, NoAns) at every no-answer threshold, computed once.

    Each question is scored twice, with its best span and with "" (metrics.py's official
    scoring). At threshold t a question answers "" when its null odds exceed t, so sorting
    by null odds and taking cumulative sums of (span score - empty score) gives the score
    at every threshold without re-running the evaluation per threshold.

    Returns:
        ``{"thresholds": [k], "exact"/"f1"/"HasAns_f1"/"NoAns_f1"/...: [k]}`` in percent;
        the score at ``thresholds[i]`` holds on [thresholds[i], thresholds[i + 1]) (a step
        function: plot with ``drawstyle="steps-post"``). ``thresholds[0]`` lies below every
        finite null odds value (everyone abstains), the last one above all of them.
    """
    from pocketqa.evaluation.metrics import exact_and_f1_scores, make_qid_to_has_ans
    from pocketqa.data.squad import to_squad_json

    dataset = to_squad_json(examples)["data"]
    ids = [ex.id for ex in examples]
    raw = {ex.id: (d.spans[0].text if d.spans else "") for ex, d in zip(examples, decoded)}
    span_em, span_f1 = exact_and_f1_scores(dataset, raw)
    null_em, null_f1 = exact_and_f1_scores(dataset, {q: "" for q in ids})
    has_answer = make_qid_to_has_ans(dataset)
    # No span at all -> +inf odds: such a question abstains at every threshold.
    odds = np.array([d.null_odds if d.spans else math.inf for d in decoded], dtype=np.float64)
    order = np.argsort(odds, kind="stable")
    sorted_odds = odds[order]
    finite = np.unique(sorted_odds[np.isfinite(sorted_odds)])
    if finite.size:
        pad = max(1.0, 0.05 * float(finite[-1] - finite[0]))
        thresholds = np.concatenate([[finite[0] - pad], finite, [finite[-1] + pad]])
    else:
        thresholds = np.array([-1.0, 1.0])
    # How many questions (in sorted order) answer with their span at each threshold.
    answered = np.searchsorted(sorted_odds, thresholds, side="right")

    groups = {"": np.ones(len(ids), dtype=bool), "HasAns_": np.array([has_answer[q] for q in ids])}
    groups["NoAns_"] = ~groups["HasAns_"]
    curve = {"thresholds": thresholds}
    for metric, span, null in (("exact", span_em, null_em), ("f1", span_f1, null_f1)):
        span_v = np.array([span[q] for q in ids], dtype=np.float64)[order]
        null_v = np.array([null[q] for q in ids], dtype=np.float64)[order]
        for prefix, mask in groups.items():
            mask = mask[order]
            n = int(mask.sum())
            if n == 0:
                continue
            gain = np.concatenate([[0.0], np.cumsum(np.where(mask, span_v - null_v, 0.0))])
            curve[f"{prefix}{metric}"] = 100.0 * (null_v[mask].sum() + gain[answered]) / n
    return curve


def curve_at(curve: dict, threshold: float, key: str = "f1") -> float:
    """Reads the step function of :func:`threshold_curve` at one threshold."""
    i = int(np.searchsorted(curve["thresholds"], threshold, side="right")) - 1
    return float(curve[key][max(i, 0)])


# -- plots ----------------------------------------------------------------------------------


def _split_title(name: str, scores: dict) -> str:
    threshold = scores.get("threshold")
    at = f" at threshold {threshold:.2f}" if isinstance(threshold, (int, float)) else ""
    return f"{name}: answerable vs unanswerable{at}"


def _has_splits(scores: dict) -> bool:
    return all(f"{p}{k}" in scores for p in ("", "HasAns_", "NoAns_") for k in ("exact", "f1", "total"))


def _figure():
    """A matplotlib Figure that needs no GUI backend and leaves pyplot's state alone."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def plot_threshold_curve(curve: dict, scores: dict, path: Path, title: str) -> None:
    """F1 and EM against the no-answer threshold; marks the threshold used and the best F1."""
    Figure = _figure()
    fig = Figure(figsize=(7.5, 4.5), dpi=120)
    ax = fig.add_subplot()
    x = curve["thresholds"]
    threshold = float(scores["threshold"])
    # Show the threshold used even when it lies outside the range of the null odds.
    lo, hi = min(x[0], threshold), max(x[-1], threshold)
    pad = 0.02 * (hi - lo or 1.0)
    xs = np.concatenate([[lo - pad], x, [hi + pad]])

    def ys(key):
        y = curve[key]
        return np.concatenate([[y[0]], y, [y[-1]]])

    # EM <= F1 everywhere, and the two often coincide: draw EM dashed so F1 shows through.
    ax.plot(xs, ys("f1"), drawstyle="steps-post", color="tab:blue", lw=2, label="F1")
    ax.plot(xs, ys("exact"), drawstyle="steps-post", color="tab:orange", lw=2, ls="--", label="EM")
    for key, color, label in (("HasAns_f1", "tab:purple", "HasAns F1"), ("NoAns_f1", "tab:gray", "NoAns F1")):
        if key in curve:
            ax.plot(xs, ys(key), drawstyle="steps-post", color=color, lw=1, ls=":", label=label)
    used_f1 = curve_at(curve, threshold, "f1")
    ax.axvline(threshold, color="tab:red", lw=1)
    ax.plot([threshold], [used_f1], "o", color="tab:red", label=f"threshold used {threshold:.2f}: F1 {used_f1:.1f}")
    best = int(np.argmax(curve["f1"]))
    ax.plot([x[best]], [curve["f1"][best]], "*", ms=12, color="tab:green",
            label=f"best F1 {curve['f1'][best]:.1f} at {x[best]:.2f}")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(0, 100)
    ax.set_xlabel("no-answer threshold (abstain when null odds > threshold)")
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")


def plot_has_no_ans(scores: dict, path: Path, title: str) -> None:
    """EM and F1 bars for all questions, answerable (HasAns) and unanswerable (NoAns) ones."""
    Figure = _figure()
    groups = [
        (f"{label} (n={scores[f'{prefix}total']})", scores[f"{prefix}exact"], scores[f"{prefix}f1"])
        for label, prefix in (("all", ""), ("HasAns", "HasAns_"), ("NoAns", "NoAns_"))
        if f"{prefix}exact" in scores and f"{prefix}f1" in scores and f"{prefix}total" in scores
    ]
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    width = 0.38
    for offset, idx, label, color in ((-width / 2, 1, "EM", "tab:orange"), (width / 2, 2, "F1", "tab:blue")):
        values = [g[idx] for g in groups]
        bars = ax.bar(x + offset, values, width, label=label, color=color)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(x, [g[0] for g in groups])
    ax.set_ylim(0, 110)
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


# -- speed -----------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark_cpu(model_dir: Path, examples, threads: int, progress: bool = True) -> dict:
    """Questions per second on CPU, one question per call (batch 1), ``threads`` threads.

    A few untimed calls first warm up the backend (allocators, one-time graph work).
    """
    from pocketqa.inference.answerer import QuestionAnswerer

    torch_threads = _torch_threads()
    try:
        qa = QuestionAnswerer.from_pretrained(model_dir, device="cpu", threads=threads, batch_size=1)
        for ex in examples[:3]:
            qa.decode_examples([ex])
        it = examples
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(examples, desc="cpu bench", unit="q")
        start = time.perf_counter()
        for ex in it:
            qa.decode_examples([ex])
        elapsed = time.perf_counter() - start
    finally:
        if torch_threads is not None:  # TorchBackend sets the process-wide count; put it back
            import torch

            torch.set_num_threads(torch_threads)
    return {
        "questions_per_s": len(examples) / elapsed,
        "ms_per_question": 1000.0 * elapsed / len(examples),
        "questions": len(examples),
        "threads": threads,
        "batch_size": 1,
        "cpu": _cpu_name(),
    }


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _spread(items: list, n: int) -> list:
    """n items evenly spread over the list (so a benchmark sees many articles)."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


# -- the card --------------------------------------------------------------------------------


def _fmt(value, digits: int = 2) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "–"


def _front_matter(name: str, meta: dict, config: dict, scores: dict | None, data_name: str | None) -> str:
    import yaml

    tags = ["question-answering", "pocketqa"]
    if config.get("model_type"):
        tags.append(str(config["model_type"]))
    front = {
        "language": "en",
        "license": str(meta.get("license", "other")),
        "datasets": ["squad_v2"],
        "tags": tags,
        "pipeline_tag": "question-answering",
    }
    if scores and isinstance(scores.get("exact"), (int, float)) and isinstance(scores.get("f1"), (int, float)):
        front["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "question-answering", "name": "Question Answering"},
                        "dataset": {"name": data_name or "squad_v2", "type": "squad_v2", "split": "validation"},
                        "metrics": [
                            {"type": "exact_match", "value": round(float(scores["exact"]), 4), "name": "Exact Match"},
                            {"type": "f1", "value": round(float(scores["f1"]), 4), "name": "F1"},
                        ],
                    }
                ],
            }
        ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n"


def _results_table(scores: dict | None, size_mb: float, speed: dict | None, measured_note: str) -> list[str]:
    rows = ["| Metric | Value |", "|---|---|"]
    if scores is None:
        rows.append("| EM / F1 | not evaluated |")
    else:
        for label, key in SCORE_ROWS:
            if key in scores:
                rows.append(f"| {label} | {_fmt(scores[key])} |")
        if "threshold" in scores:
            rows.append(f"| no-answer threshold used | {_fmt(scores['threshold'], 4)} |")
        if "best_f1" in scores:
            rows.append(f"| best F1 | {_fmt(scores['best_f1'])} at threshold {_fmt(scores.get('best_f1_thresh'), 4)} |")
        if "best_exact" in scores:
            rows.append(
                f"| best EM | {_fmt(scores['best_exact'])} at threshold {_fmt(scores.get('best_exact_thresh'), 4)} |"
            )
    rows.append(f"| size (MB) | {size_mb:.2f} |")
    if speed:
        rows.append(
            f"| CPU questions/s (batch 1, {speed['threads']} threads) | {speed['questions_per_s']:.2f} |"
        )
    else:
        rows.append(f"| CPU questions/s (batch 1) | {measured_note} |")
    return rows


def render_card(
    model_dir: Path,
    meta: dict,
    config: dict,
    scores: dict | None,
    scores_source: str | None,
    size_mb: float,
    speed: dict | None,
    plots: list[tuple[str, str]],
) -> str:
    """The README.md text (pure: everything it shows is passed in)."""
    name = str(meta.get("name") or model_dir.name)
    data_name = Path(scores_source).name if scores_source else None
    backend = describe_backend(model_dir, meta)
    lines = [_front_matter(name, meta, config, scores, data_name), f"# {name} for extractive QA (SQuAD 2.0)", ""]
    lines += [
        "A compact extractive question-answering model with abstention: it answers with a span of the",
        "passage, or with nothing when the passage does not hold the answer. Made with pocketqa.",
        "",
        "## Overview",
        "",
        f"**Architecture:** {describe_architecture(config, count_parameters(model_dir, meta))}  ",
        f"**Backend:** {backend}  ",
        "**Language:** English  ",
    ]
    recipe = meta.get("recipe")
    # train.py records base_model and data; a distillation recipe names student/teacher/train.
    from_recipe = recipe if isinstance(recipe, dict) else {}
    for label, value in (
        ("Base model", meta.get("base_model") or from_recipe.get("student") or from_recipe.get("model")),
        ("Teacher", meta.get("teacher") or from_recipe.get("teacher")),
        # train.py records {"train": ..., "dev": ...}: only the train entry is training data
        ("Training data", _train_data(meta.get("data")) or from_recipe.get("train")),
    ):
        if value:
            lines.append(f"**{label}:** {_text(value)}  ")
    if isinstance(recipe, str) and recipe:
        lines.append(f"**Recipe:** {recipe}  ")
    elif isinstance(recipe, dict) and isinstance(recipe.get("name"), str):
        lines.append(f"**Recipe:** {recipe['name']}  ")
    if scores_source:
        total = f" ({scores['total']} questions)" if scores and "total" in scores else ""
        lines.append(f"**Eval data:** {data_name}{total}  ")
    calibration = meta.get("calibration")
    if isinstance(calibration, dict) and calibration.get("data"):
        lines.append(f"**Threshold calibrated on:** {Path(str(calibration['data'])).name}  ")
    training = meta.get("training")
    if isinstance(training, dict) and training:
        lines.append(f"**Training run:** {_text(training)}  ")
    export = meta.get("export")
    if isinstance(export, dict) and export:
        lines.append(f"**Export:** {_export_text(export)}  ")
    lines.append(f"**Size:** {size_mb:.2f} MB of weights  ")
    lines.append("")

    if meta.get("command") or isinstance(recipe, dict):
        lines += ["## Training", ""]
        if meta.get("command"):
            lines += ["The model was made with:", "", "```bash", _command_text(meta["command"]), "```", ""]
        if isinstance(recipe, dict):
            import yaml

            lines += ["Recipe:", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```", ""]

    lines += ["## Results", ""]
    if scores is None:
        lines += ["Not evaluated: run `pocketqa card --model DIR --dev dev-v2.0.json` to score it.", ""]
    else:
        where = f"on {data_name}" if data_name else "as stored in pocketqa.json"
        lines += [f"Official SQuAD 2.0 scores (evaluate-v2.0 rules) {where}; null odds = null score - best span score.", ""]
    lines += _results_table(scores, size_mb, speed, "not measured" if scores_source else "not measured (needs --dev)")
    lines.append("")
    if speed:
        lines += [
            f"Speed: {speed['questions']} questions answered one at a time on {speed['cpu']}, "
            f"{speed['threads']} threads ({speed['ms_per_question']:.1f} ms per question).",
            "",
        ]
    for file, alt in plots:
        lines += [f"![{alt}]({file})", ""]

    rel = model_dir.name
    lines += [
        "## Usage",
        "",
        "```python",
        "from pocketqa import QuestionAnswerer",
        "",
        f'qa = QuestionAnswerer.from_pretrained("{rel}")  # the directory holding this card',
        'qa("Who wrote the report?", "The report was written by Ann Lee in 2019.")',
        "# {'answer': ..., 'start': ..., 'end': ..., 'score': ..., 'null_odds': ...}; answer '' = no answer",
        "```",
        "",
        "```bash",
        f'pocketqa ask --model {shlex.quote(rel)} -q "Who wrote the report?" -c "The report was written by Ann Lee in 2019."',
        "```",
        "",
    ]
    return "\n".join(lines)


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
    meta = _json_object(read_meta(model_dir), model_dir / "pocketqa.json")
    config = read_config(model_dir)
    name = str(meta.get("name") or model_dir.name)

    scores = speed = None
    scores_source = None
    plots: list[tuple[str, str]] = []
    if dev_path is not None:
        from pocketqa.inference.answerer import QuestionAnswerer
        from pocketqa.evaluation.scoring import score_decoded
        from pocketqa.data.squad import load_squad, write_json_atomic

        examples = load_squad(dev_path)  # a bad file fails before the model loads
        if not examples:
            raise PocketQAError(f"--dev {dev_path}: no questions in the file")
        qa = QuestionAnswerer.from_pretrained(model_dir)
        decoded = qa.decode_examples(examples, progress=True)
        scores = score_decoded(examples, decoded, qa.threshold)
        scores_source = str(dev_path)
        if bench_questions:
            speed = benchmark_cpu(model_dir, _spread(examples, bench_questions), threads)
        results = {**scores, "data": str(dev_path)}
        if speed:
            results["speed"] = speed
        write_json_atomic(results, model_dir / EVAL_FILE, indent=2)
        if _figure() is None:
            print(NO_PLOTS_NOTE)
        else:
            title = f"{name} on {Path(dev_path).name} ({len(examples)} questions)"
            plot_threshold_curve(threshold_curve(examples, decoded), scores, model_dir / CURVE_PLOT, title)
            plots.append((CURVE_PLOT, "F1 and EM against the no-answer threshold"))
            plot_has_no_ans(scores, model_dir / SPLIT_PLOT, _split_title(name, scores))
            plots.append((SPLIT_PLOT, SPLIT_ALT))
    else:
        scores = metrics_from_meta(meta)
        if scores is not None and "threshold" not in scores and isinstance(meta.get("threshold"), (int, float)):
            scores = {**scores, "threshold": meta["threshold"]}
        if scores is not None and _has_splits(scores):
            if _figure() is None:
                print(NO_PLOTS_NOTE)
            else:
                plot_has_no_ans(scores, model_dir / SPLIT_PLOT, _split_title(name, scores))
                plots.append((SPLIT_PLOT, SPLIT_ALT))

    text = render_card(model_dir, meta, config, scores, scores_source, dir_size_mb(model_dir), speed, plots)
    path = model_dir / CARD_FILE
    tmp = model_dir / f".{CARD_FILE}.tmp{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _train_data(data):
    """The training-data entry of pocketqa.json's "data" (which also records the dev file)."""
    if isinstance(data, dict) and "train" in data:
        return {"train": data["train"]}
    return data
