"""The README.md text of a model card (pure: everything it shows is passed in).

The card follows the form of the Hugging Face cards the project seeds from
(mrm8488/mobilebert-uncased-finetuned-squadv2, deepset/tinybert-6l-768d-squad2): YAML
front matter (language, license, datasets, tags, model-index), an overview of what the
model is and what it was trained on, the command that made it, a results table and how
to use it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pocketqa.card.facts import SCORE_ROWS, count_parameters, describe_architecture, describe_backend


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
    """pocketqa.json's "export" section (written by ``pocketqa export``): {"format", "int8", "opset", "source", "parity_passed", ...}."""
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


def _train_data(data):
    """The training-data entry of pocketqa.json's "data" (which also records the dev file)."""
    if isinstance(data, dict) and "train" in data:
        return {"train": data["train"]}
    return data
