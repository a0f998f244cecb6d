"""The ``pocketqa.json`` contract: what pocketqa knows about a model directory.

A pocketqa model directory is a plain Hugging Face checkpoint (or an exported ONNX graph)
plus ``pocketqa.json``: window settings, calibrated no-answer thresholds, metrics, the
recipe that made it. This module is the only code that reads or writes that file.

Keys, each owned by the step that writes it:
    name, window {max_seq_length, doc_stride, max_query_length}: training / export.
    threshold, pipeline_threshold: the calibrated no-answer thresholds, one per scoring rule.
    calibration, calibration_<scoring>: how a threshold was found.
    domains {name: {threshold, calibration, <scoring>_threshold, ...}}: thresholds calibrated for
        other question sources (``pocketqa calibrate --save --domain NAME``), the same keys per domain.
    metrics, train / distill / export: what produced the model.
Updates merge into the file and keep every key they do not name.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from pocketqa.errors import PocketQAError

META_FILE = "pocketqa.json"
# The scores ``pocketqa card --dev`` measured on the directory's own model (the card's table).
EVAL_FILE = "eval_results.json"
WINDOW_KEYS = ("max_seq_length", "doc_stride", "max_query_length")
# The official SQuAD 2.0 scores a "metrics" entry may hold (evaluation/metrics.py names them).
SCORE_KEYS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")
DOMAINS_KEY = "domains"
# The keys of a calibration entry that the calibrating steps (evaluate --save-threshold,
# calibrate --save) write, and so replace all at once: a key one of them left is never
# mistaken for part of the next one's result. Other keys (e.g. "backend") survive.
CALIBRATION_KEYS = ("data", "best_f1", "best_exact", "n_best", "max_answer_length", "align_to_words",
                    "method", "questions", "answerable_rate", "abstain_share", "f1", "interval")
_DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    return _finite_threshold(Path(path) / META_FILE, key, meta.get(key, 0.0))


def check_domain_name(name: str) -> str:
    """Returns ``name`` if it can name a domain (letters, digits, ".", "_", "-"; at most 64), else raises."""
    if not isinstance(name, str) or not _DOMAIN_NAME.fullmatch(name):
        raise PocketQAError(
            f"domain name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def meta_domains(path: str | os.PathLike, meta: dict) -> dict[str, dict]:
    """The domains of a model's pocketqa.json ({} when none), each checked to be a mapping."""
    domains = meta.get(DOMAINS_KEY, {})
    where = Path(path) / META_FILE
    if not isinstance(domains, dict):
        raise PocketQAError(f"{where}: '{DOMAINS_KEY}' must be a mapping, found {type(domains).__name__}")
    for name, entry in domains.items():
        if not isinstance(entry, dict):
            raise PocketQAError(f"{where}: {DOMAINS_KEY}.{name} must be a mapping, found {type(entry).__name__}")
    return domains


def domain_threshold(path: str | os.PathLike, meta: dict, domain: str, scoring: str) -> float:
    """The threshold calibrated for ``domain`` and ``scoring`` in a model's pocketqa.json.

    Raises:
        PocketQAError: The domain is unknown (the message lists the known ones), has no
            threshold for this scoring rule, or holds a value that is not a finite number.
    """
    domains = meta_domains(path, meta)
    where = Path(path) / META_FILE
    if domain not in domains:
        known = ", ".join(sorted(domains)) or "none"
        raise PocketQAError(
            f"{where}: unknown domain {domain!r} (known: {known}); calibrate one with "
            f"pocketqa calibrate --model DIR --data FILE --save --domain {domain}, or leave out --domain"
        )
    key = threshold_key(scoring)
    if key not in domains[domain]:
        raise PocketQAError(
            f"{where}: domain {domain!r} has no threshold for scoring {scoring!r} ({DOMAINS_KEY}.{domain}.{key}); "
            f"calibrate it with --scoring {scoring}"
        )
    return _finite_threshold(where, f"{DOMAINS_KEY}.{domain}.{key}", domains[domain][key])


def store_threshold(
    model_dir: str | os.PathLike, scoring: str, threshold: float, calibration: dict, domain: str | None = None
) -> dict:
    """Stores a calibrated threshold and how it was found in ``pocketqa.json`` (written atomically).

    Without ``domain`` it replaces the model's default threshold for ``scoring``; with one, it
    goes under ``domains.<domain>`` beside the default. Every other key survives: other domains,
    other scoring rules' thresholds, and the keys of the calibration entry that no calibrating
    step owns (``CALIBRATION_KEYS``; e.g. "backend").

    Args:
        model_dir: A local model directory.
        scoring: The scoring rule the threshold belongs to ("logits", "pipeline").
        threshold: Abstain when null_odds > threshold.
        calibration: How it was found (method, data, question count, ...).
        domain: The domain name, or None for the default threshold.

    Returns:
        The whole pocketqa.json as written.
    """
    meta = read_meta(model_dir)
    if domain is None:
        entry = meta
    else:
        check_domain_name(domain)
        domains = meta_domains(model_dir, meta)
        meta[DOMAINS_KEY] = domains
        entry = domains.setdefault(domain, {})
    key = threshold_key(scoring, "calibration")
    stored = entry.get(key)
    kept = {k: v for k, v in stored.items() if k not in CALIBRATION_KEYS} if isinstance(stored, dict) else {}
    entry[threshold_key(scoring)] = _finite_threshold(Path(model_dir) / META_FILE, threshold_key(scoring), threshold)
    entry[key] = {**kept, **calibration}
    return write_meta(model_dir, meta)


def _finite_threshold(where, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PocketQAError(f"{where}: {key} must be a finite number, found {value!r}")
    return float(value)


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
