"""The teacher's start/end logits of every training window, computed once and memory-mapped.

Stage 2 of distillation reads the teacher's logits every step of every epoch; running the
teacher each time would cost as much as training it. They are cached on disk under a key
of everything they depend on (teacher weights, tokenizer, data files, window settings,
the windows themselves, precision, vocabulary bridge), so any change computes them anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pocketqa.data.features import WindowConfig
from pocketqa.errors import PocketQAError
from pocketqa.inference.backends import model_input_names
from pocketqa.models import PROJECTION_FILE
from pocketqa.data.batching import collate
from pocketqa.data.cache import TrainData, default_cache_dir, file_sha256
from pocketqa.training.precision import autocast

if TYPE_CHECKING:
    from pocketqa.training.bridge import VocabBridge

CACHE_FORMAT = 1  # bump when the on-disk layout of the teacher-logit cache changes


def answer_mask(data: TrainData, tokenizer) -> np.ndarray:
    """Flat bool [total_tokens]: True at context tokens and at CLS, where an answer may be.

    The same positions as ``features.offsets[i][j] is not None`` plus ``cls_index``, found
    from the token ids alone via the tokenizer's pair template: context tokens follow the
    first run of separator tokens after the question (``[SEP]`` for BERT, ``</s></s>`` for
    RoBERTa) and stop before the trailing special tokens. Question and padding are False.
    """
    probe = tokenizer("a", "b")
    ids, seq = probe["input_ids"], probe.sequence_ids()
    first_ctx = seq.index(1)
    last_q = max(i for i, s in enumerate(seq) if s == 0)
    lead = seq.index(0)
    middle = ids[last_q + 1 : first_ctx]
    trailing = len(ids) - 1 - max(i for i, s in enumerate(seq) if s == 1)
    cls_id = tokenizer.cls_token_id
    if not middle:
        raise PocketQAError(f"{type(tokenizer).__name__}: no separator between question and context in its pair template")
    n_tokens = len(data.input_ids)
    mask = np.zeros(n_tokens, dtype=bool)
    # First separator at or after each window's question start.
    sep_positions = np.flatnonzero(data.input_ids == middle[0])
    first_sep = sep_positions[np.searchsorted(sep_positions, data.row_starts + lead)]
    ctx_start = first_sep + len(middle)
    ctx_end = data.row_starts + data.lengths - trailing
    if np.any(ctx_start > ctx_end):
        raise PocketQAError("could not locate the context in some training windows (is the tokenizer the one that made them?)")
    delta = np.zeros(n_tokens + 1, dtype=np.int64)
    np.add.at(delta, ctx_start, 1)
    np.add.at(delta, ctx_end, -1)
    mask[:] = np.cumsum(delta[:-1]) > 0
    if cls_id is not None and cls_id in ids:
        at = ids.index(cls_id)
        pos = data.row_starts + at if at < lead else data.row_starts + data.lengths - (len(ids) - at)
        mask[pos] = True
    else:
        mask[data.row_starts] = True  # make_features' fallback: position 0
    return mask


def gather_rows(flat: np.ndarray, data: TrainData, indices: np.ndarray, width: int, fill=0) -> np.ndarray:
    """[len(indices), width] view of per-token values in ``data``'s flat layout (as collate)."""
    lens = data.lengths[indices].astype(np.int64)
    cols = np.arange(width)
    inside = cols[None, :] < lens[:, None]
    pos = data.row_starts[indices][:, None] + np.minimum(cols[None, :], lens[:, None] - 1)
    return np.where(inside, flat[pos], fill)



def model_fingerprint(model_path: str) -> str | None:
    """sha256 over a local model dir's config and weight files; None when not a local dir."""
    path = Path(model_path)
    if not path.is_dir():
        return None
    files = sorted(p for pat in ("config.json", "*.safetensors", "*.bin") for p in path.glob(pat) if p.is_file())
    files = [p for p in files if p.name != PROJECTION_FILE]
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        return None
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode() + b"\0" + file_sha256(p).encode())
    return digest.hexdigest()


def state_dict_fingerprint(model) -> str:
    """sha256 over a loaded model's tensors (for teachers that are not local dirs)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's definition (vocab, normaliser, template).

    The Rust tokenizer's truncation/padding state is left out: it changes whenever the
    tokenizer is called with ``truncation=...`` and says nothing about the vocabulary.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()


def windows_fingerprint(data: TrainData) -> str:
    """sha256 of every window's token ids and segment ids: exactly what the teacher sees."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.lengths, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(data.input_ids, dtype=np.int32).tobytes())
    if data.token_type_ids is not None:
        digest.update(np.ascontiguousarray(data.token_type_ids, dtype=np.int8).tobytes())
    return digest.hexdigest()


def cache_key_parts(
    teacher: str,
    teacher_sha256: str,
    tokenizer,
    data_paths: Sequence[str | os.PathLike],
    window: WindowConfig,
    data: TrainData,
    precision: str,
    bridge: VocabBridge | None = None,
    teacher_tokenizer=None,
) -> dict:
    """What teacher logits depend on; a change in any part gives another key.

    The window token ids already follow from tokenizer + data + window settings; they are
    hashed too, so a change in how windows are cut (features.py) cannot reuse old logits.
    With a vocabulary bridge, the teacher sees other ids and another template than the
    student's windows hold: its tokenizer and template join the key (as a "bridge" part,
    absent without one, so unbridged keys are what they were before bridges existed).
    """
    parts = {
        "format": CACHE_FORMAT,
        "teacher": teacher_sha256,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        # a hub id has no file: its name stands in (the windows fingerprint covers the content)
        "data": [file_sha256(p) if Path(p).is_file() else hashlib.sha256(str(p).encode()).hexdigest()
                 for p in data_paths],
        "window": window.to_dict(),
        "windows": windows_fingerprint(data),
        "precision": precision,
        # names only serve the stale-cache message; they are not part of the key
        "names": {"teacher": str(teacher), "data": [str(p) for p in data_paths]},
    }
    if bridge is not None:
        if teacher_tokenizer is None:
            raise ValueError("cache_key_parts: a bridge needs the teacher_tokenizer it maps to")
        parts["bridge"] = {
            "teacher_tokenizer": tokenizer_fingerprint(teacher_tokenizer),
            "template": f"{bridge.student.text} -> {bridge.teacher.text}",
        }
    return parts


def cache_key(parts: dict) -> str:
    keyed = {k: v for k, v in parts.items() if k != "names"}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


@dataclass
class TeacherLogits:
    """The teacher's start/end logits of every training window, memory-mapped fp16.

    Flat arrays in the layout of the training data (window i's logits start at
    ``data.row_starts[i]``), so :func:`gather_rows` pads them like ``collate`` pads ids.
    """

    start: np.ndarray
    end: np.ndarray
    path: Path
    key: str
    status: str  # "hit"; "miss" (computed); "stale" (computed; an entry for the same names was outdated)
    reason: str = ""


def _open_cache_entry(entry: Path, key: str, n_tokens: int) -> TeacherLogits | None:
    """The cached logits at ``entry`` if complete and made for ``key``, else None."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None
        start = np.load(entry / "start.npy", mmap_mode="r", allow_pickle=False)
        end = np.load(entry / "end.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if start.shape != (n_tokens,) or end.shape != (n_tokens,):
        return None
    return TeacherLogits(start, end, entry, key, "hit")


def _stale_reason(root: Path, parts: dict) -> str:
    """Names what changed when the cache holds an entry for the same teacher and data names."""
    for manifest_path in sorted(root.glob("*/manifest.json")):
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))["parts"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError):
            continue
        if not isinstance(old, dict):
            continue
        if old.get("names") != parts["names"]:
            continue
        changed = [k for k in sorted(parts.keys() | old.keys()) if k != "names" and old.get(k) != parts.get(k)]
        if changed:
            return f"cache entry {manifest_path.parent.name} for the same teacher and data is stale ({', '.join(changed)} changed)"
    return ""


def teacher_logits(
    data: TrainData,
    parts: dict,
    cache_root: str | os.PathLike,
    load_teacher: Callable[[], object],
    batch_size: int = 64,
    device: str = "cpu",
    precision: str = "fp32",
    pad_id: int = 0,
    progress: bool = True,
    bridge: VocabBridge | None = None,
) -> TeacherLogits:
    """Teacher start/end logits of every window: read from the cache, or computed once and cached.

    ``load_teacher`` is only called on a miss, so a hit never loads or runs the teacher.
    An entry is written into a temp dir and renamed into place, so an interrupted run
    never leaves a half-written entry that a later run could take for a good one.

    With a ``bridge``, the teacher runs on ``bridge.teacher_batch`` of each batch of
    student windows and its logits are gathered back onto student positions, so the cache
    has the student's layout either way and stage 2 reads it unchanged.

    Args:
        data: The training windows.
        parts: :func:`cache_key_parts` of teacher, tokenizer, data and windows.
        cache_root: Directory with one sub-directory per key.
        load_teacher: Returns the teacher QA model (on ``device``, in eval mode).
        batch_size / device / precision / pad_id: How to run the teacher on a miss
            (pad_id: the padding id of ``data``'s windows).
        progress: Show a tqdm bar while computing.
        bridge: Maps the student windows in ``data`` to the teacher's vocabulary.
    """
    import torch

    key = cache_key(parts)
    root = Path(cache_root).expanduser()
    entry = root / key[:32]
    n_tokens = len(data.input_ids)
    cached = _open_cache_entry(entry, key, n_tokens)
    if cached is not None:
        return cached
    reason = _stale_reason(root, parts) if root.is_dir() else ""
    teacher = load_teacher()
    names = model_input_names(teacher)
    collate_names = ["input_ids", "attention_mask", *(["token_type_ids"] if "token_type_ids" in names else [])]
    tmp = root / f".tmp-{key[:16]}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        start = np.lib.format.open_memmap(tmp / "start.npy", mode="w+", dtype=np.float16, shape=(n_tokens,))
        end = np.lib.format.open_memmap(tmp / "end.npy", mode="w+", dtype=np.float16, shape=(n_tokens,))
        order = np.argsort(-data.lengths, kind="stable")  # longest first: little padding, OOM shows early
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for idx in _bar(batches, "teacher logits", progress):
            batch = {k: torch.from_numpy(v) for k, v in collate(data, idx, pad_id, collate_names).items()}
            index = None
            if bridge is not None:
                batch, index = bridge.teacher_batch(batch)
            inputs = {k: batch[k].to(device) for k in names if k in batch}
            with torch.inference_mode(), autocast(device, precision):
                out = teacher(**inputs)
            s, e = out.start_logits, out.end_logits
            if index is not None:
                index = index.to(device)
                s, e = bridge.gather(s, index), bridge.gather(e, index)
            s, e = s.float().cpu().numpy(), e.float().cpu().numpy()
            for row, w in enumerate(idx.tolist()):
                a, n = data.row_starts[w], data.lengths[w]
                start[a : a + n] = s[row, :n]
                end[a : a + n] = e[row, :n]
        start.flush()
        end.flush()
        del start, end
        manifest = {"key": key, "parts": parts, "windows": len(data), "tokens": n_tokens, "dtype": "float16"}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if entry.exists():  # an incomplete or unreadable entry under our key
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _open_cache_entry(entry, key, n_tokens)
    result.status, result.reason = ("stale" if reason else "miss"), reason
    return result


def default_cache_root() -> Path:
    """``$POCKETQA_CACHE/teacher-logits`` (default ``~/.cache/pocketqa/teacher-logits``)."""
    return default_cache_dir() / "teacher-logits"


def _bar(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch")
