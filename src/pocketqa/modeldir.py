"""The ``pocketqa.json`` contract: what pocketqa knows about a model directory.

A pocketqa model directory is a plain Hugging Face checkpoint (or an exported ONNX graph)
plus ``pocketqa.json``: window settings, calibrated no-answer thresholds, metrics, the
recipe that made it. This module is the only code that reads or writes that file.

Keys, each owned by the step that writes it:
    name, window {max_seq_length, doc_stride, max_query_length}: training / export.
    threshold, pipeline_threshold: the calibrated no-answer thresholds, one per scoring rule.
    calibration, calibration_<scoring>: how a threshold was found.
    metrics, train / distill / export: what produced the model.
Updates merge into the file and keep every key they do not name.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from pocketqa.errors import PocketQAError

META_FILE = "pocketqa.json"
# The scores ``pocketqa card --dev`` measured on the directory's own model (the card's table).
EVAL_FILE = "eval_results.json"
WINDOW_KEYS = ("max_seq_length", "doc_stride", "max_query_length")
# The official SQuAD 2.0 scores a "metrics" entry may hold (evaluation/metrics.py names them).
SCORE_KEYS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")


def read_json_file(path: str | os.PathLike) -> dict:
    """Reads a small JSON file of a model dir ({} when absent), one clear error when invalid."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PocketQAError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise PocketQAError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return value


def read_meta(model_dir: str | os.PathLike) -> dict:
    """Reads ``pocketqa.json`` of a local model dir ({} when absent or not local)."""
    path = Path(model_dir) / META_FILE
    meta = read_json_file(path)
    if not isinstance(meta, dict):
        raise PocketQAError(f"{path}: must hold a JSON object, found {type(meta).__name__}")
    return meta


def write_meta(model_dir: str | os.PathLike, meta: dict) -> dict:
    """Writes ``pocketqa.json`` whole, atomically (a temp file renamed over the old one)."""
    model_dir = Path(model_dir)
    tmp = model_dir / f".{META_FILE}.tmp{os.getpid()}"
    try:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, model_dir / META_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def update_meta(model_dir: str | os.PathLike, **updates) -> dict:
    """Merges ``updates`` into ``pocketqa.json`` (written atomically) and returns the result.

    A mapping value is merged one level deep into the mapping already stored under its key,
    so an update keeps the keys it does not own (``calibration.backend`` survives a new
    threshold); ``None`` removes a key.
    """
    meta = read_meta(model_dir)
    for key, value in updates.items():
        if value is None:
            meta.pop(key, None)
        elif isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    return write_meta(model_dir, meta)


def threshold_key(scoring: str, name: str = "threshold") -> str:
    """The pocketqa.json key of a calibration entry (``name``) for a scoring rule."""
    return name if scoring == "logits" else f"{scoring}_{name}"


def meta_window(path: str | os.PathLike, meta: dict) -> dict:
    """The window settings stored in a model's pocketqa.json, checked against the known keys."""
    win = meta.get("window", {})
    where = Path(path) / META_FILE
    if not isinstance(win, dict):
        raise PocketQAError(f"{where}: 'window' must be a mapping, found {type(win).__name__}")
    unknown = sorted(set(win) - set(WINDOW_KEYS))
    if unknown:
        raise PocketQAError(f"{where}: unknown window setting(s) {unknown} (known: {list(WINDOW_KEYS)})")
    return win


def meta_threshold(path: str | os.PathLike, meta: dict, scoring: str) -> float:
    """The threshold calibrated for ``scoring`` in a model's pocketqa.json (0.0 when absent), checked."""
    key = threshold_key(scoring)
    threshold = meta.get(key, 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise PocketQAError(f"{Path(path) / META_FILE}: {key} must be a finite number, found {threshold!r}")
    return float(threshold)


def meta_metrics(meta: dict) -> dict | None:
    """The scores stored in pocketqa.json's "metrics" (flat, or one level down), else None.

    Read tolerantly: "metrics" may be absent, or hold the scores under a split name
    (``{"dev": {"exact": ..., "f1": ...}}``); the first entry holding a score is taken.
    """
    metrics = meta.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return None
    if any(key in metrics for key in SCORE_KEYS):
        return metrics
    for value in metrics.values():
        if isinstance(value, dict) and any(key in value for key in SCORE_KEYS):
            return value
    return None


def stored_metrics(model_dir: str | os.PathLike | None, meta: dict) -> dict | None:
    """The scores a model's card shows: its eval_results.json, else pocketqa.json's "metrics".

    eval_results.json is measured on this very directory (an exported or quantised model
    included), so it wins over the "metrics" that training stored for the checkpoint.

    Args:
        model_dir: The local model directory (None: only ``meta`` is read).
        meta: Its pocketqa.json.
    """
    if model_dir is not None and Path(model_dir).is_dir():
        results = read_json_file(Path(model_dir) / EVAL_FILE)
        if isinstance(results, dict) and any(key in results for key in SCORE_KEYS):
            return results
    return meta_metrics(meta)
