"""Training windows tokenised once and cached on disk as plain ``.npz`` int arrays.

``load_train_features`` turns a SQuAD file into labelled windows (``TrainData``: flat
token arrays plus per-window offsets) and stores them under a key that covers everything
they depend on (tokenizer definition, data checksum, window settings), so a stale cache is
never read. The files hold numpy arrays only and load without pickle.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import zipfile
import zlib
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pocketqa.data.features import WindowConfig, make_features
from pocketqa.errors import PocketQAError
from pocketqa.data.formats import HF_PREFIX, load_examples

# Bump when the cached array layout or the labelling rules change: old caches are then ignored.
CACHE_VERSION = 1


@dataclass
class TrainData:
    """Training windows as flat int arrays (exactly what the feature cache stores).

    Attributes:
        input_ids: int32 [total_tokens]: every window's token ids, concatenated.
        token_type_ids: int8 [total_tokens], or None when the tokenizer has no segments.
        row_starts: int64 [n_windows]: where each window begins in the flat arrays.
        lengths: int32 [n_windows]: tokens per window.
        start_positions / end_positions: int32 [n_windows]: label tokens (CLS if no answer).
        example_index: int32 [n_windows]: the example each window comes from.
        n_examples: Examples in the file.
        data_sha256: Checksum of the data file.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    row_starts: np.ndarray
    lengths: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    example_index: np.ndarray
    n_examples: int
    data_sha256: str

    def __len__(self) -> int:
        return len(self.lengths)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_sha256(source: str | os.PathLike, data_format: str | None = None, offsets: str = "strict") -> str:
    """Checksum of the examples a data source gives under an offsets mode.

    A file's bytes (mixed with the mode unless strict, since repair changes the examples);
    a hub id's examples themselves, as there is no file to hash.
    """
    if str(source).startswith(HF_PREFIX) or data_format == "hf":
        rows = [asdict(ex) for ex in load_examples(source, format=data_format, offsets=offsets)]
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    sha = file_sha256(source)
    return sha if offsets == "strict" else hashlib.sha256(f"{sha}:offsets={offsets}".encode()).hexdigest()


def feature_cache_key(tokenizer, data_sha256: str, window: WindowConfig) -> str:
    """sha256 over the tokenizer's full definition, the data checksum and the window settings."""
    h = hashlib.sha256()
    h.update(f"pocketqa-train-features-v{CACHE_VERSION}\n".encode())
    # All of tokenizer.json (vocab, normaliser, template) except the truncation/padding state,
    # which transformers rewrites on every call and which make_features sets itself.
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    h.update(json.dumps(definition, sort_keys=True).encode())
    h.update(json.dumps(list(tokenizer.model_input_names)).encode())
    h.update(data_sha256.encode())
    h.update(json.dumps(window.to_dict(), sort_keys=True).encode())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$POCKETQA_CACHE``, else ``~/.cache/pocketqa``."""
    return Path(os.environ.get("POCKETQA_CACHE") or Path.home() / ".cache" / "pocketqa")


def load_train_features(
    path: str | os.PathLike,
    tokenizer,
    window: WindowConfig,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    chunk_size: int = 1000,
    workers: int | None = None,
    data_format: str | None = None,
    offsets: str = "strict",
) -> TrainData:
    """Windows and labels of a data file, tokenised once and then read from the cache.

    Args:
        path: Any source :func:`pocketqa.data.formats.load_examples` reads (SQuAD JSON,
            Parquet, JSON Lines, CSV, ``hf:`` ids).
        tokenizer: A fast tokenizer.
        window: Window sizes.
        cache_dir: Where ``train-<key>.npz`` files live (default: ``default_cache_dir()``).
            The key covers tokenizer, data checksum and window settings, so a stale
            cache is never read. Files are plain numpy arrays, loaded without pickle.
        progress: Show a tqdm bar while tokenising.
        chunk_size: Examples per ``make_features`` call.
        workers: Processes that tokenise chunks in parallel (None: up to 8 for big files;
            transformers turns encodings into Python lists on one core, so this pays).
        data_format: The format of ``path`` (default: from its name).
        offsets: ``strict`` or ``repair`` (see :mod:`pocketqa.data.rows`); part of the cache key.
    """
    data_sha = data_sha256(path, data_format, offsets)
    key = feature_cache_key(tokenizer, data_sha, window)
    cache_path = Path(cache_dir or default_cache_dir()).expanduser() / f"train-{key[:32]}.npz"
    cached = _read_cache(cache_path, key, data_sha)
    if cached is not None:
        return cached
    examples = load_examples(path, format=data_format, offsets=offsets)
    data = _tokenise(examples, path, tokenizer, window, data_sha, progress, chunk_size, workers)
    _write_cache(cache_path, key, data)
    return data


# Set by _tokenise right before forking workers, which inherit it instead of unpickling 130k examples.
_FORK_JOB: tuple | None = None


def _chunk_arrays(first: int) -> dict[str, np.ndarray]:
    examples, tokenizer, window, chunk_size = _FORK_JOB
    chunk = examples[first : first + chunk_size]
    feats = make_features(chunk, tokenizer, window, labels=True)
    arrays = {
        "lengths": feats.lengths.astype(np.int32),
        "input_ids": np.fromiter(itertools.chain.from_iterable(feats.input_ids), dtype=np.int32),
        "start_positions": feats.start_positions.astype(np.int32),
        "end_positions": feats.end_positions.astype(np.int32),
        "example_index": (feats.example_index + first).astype(np.int32),
    }
    if feats.token_type_ids is not None:
        arrays["token_type_ids"] = np.fromiter(itertools.chain.from_iterable(feats.token_type_ids), dtype=np.int8)
    return arrays


def _tokenise(examples, path, tokenizer, window, data_sha, progress, chunk_size, workers) -> TrainData:
    global _FORK_JOB
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    if not examples:
        raise PocketQAError(f"{path}: no training examples")
    firsts = list(range(0, len(examples), chunk_size))
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if len(firsts) >= 16 else 1
    # fork only: spawn would re-run the `python -m pocketqa` entry point in every worker.
    can_fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    bar = tqdm(total=len(examples), desc=f"tokenise {Path(path).name}", unit="ex", disable=not progress)
    _FORK_JOB = (examples, tokenizer, window, chunk_size)
    saved_env = os.environ.get("TOKENIZERS_PARALLELISM")
    parallel = workers > 1 and can_fork
    parts = []
    try:
        if parallel:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the workers are the parallelism (and no fork warning)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) if parallel else nullcontext() as pool:
            results = pool.map(_chunk_arrays, firsts) if parallel else map(_chunk_arrays, firsts)
            for first, arrays in zip(firsts, results):  # map keeps chunk order
                parts.append(arrays)
                bar.update(min(chunk_size, len(examples) - first))
    finally:
        _FORK_JOB = None
        if saved_env is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved_env
    bar.close()
    lengths = np.concatenate([p["lengths"] for p in parts])
    row_starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=row_starts[1:])
    return TrainData(
        input_ids=np.concatenate([p["input_ids"] for p in parts]),
        token_type_ids=np.concatenate([p["token_type_ids"] for p in parts]) if "token_type_ids" in parts[0] else None,
        row_starts=row_starts,
        lengths=lengths,
        start_positions=np.concatenate([p["start_positions"] for p in parts]),
        end_positions=np.concatenate([p["end_positions"] for p in parts]),
        example_index=np.concatenate([p["example_index"] for p in parts]),
        n_examples=len(examples),
        data_sha256=data_sha,
    )


_ARRAYS = ("input_ids", "row_starts", "lengths", "start_positions", "end_positions", "example_index")


def _read_cache(path: Path, key: str, data_sha: str) -> TrainData | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            arrays = {name: z[name] for name in _ARRAYS}
            types = z["token_type_ids"] if bool(z["has_token_types"]) else None
            n_examples = int(z["n_examples"])
    # A truncated or foreign file: rebuild it. A cut-off .npz is not a zip any more (BadZipFile),
    # a damaged member fails its CRC (BadZipFile) or, when compressed, its inflate (zlib.error).
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        print(f"pocketqa: ignoring unreadable feature cache {path} ({e})", file=sys.stderr)
        return None
    return TrainData(token_type_ids=types, n_examples=n_examples, data_sha256=data_sha, **arrays)


def _write_cache(path: Path, key: str, data: TrainData) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            key=np.array(key),
            has_token_types=np.array(data.token_type_ids is not None),
            token_type_ids=data.token_type_ids if data.token_type_ids is not None else np.zeros(0, np.int8),
            n_examples=np.array(data.n_examples),
            **{name: getattr(data, name) for name in _ARRAYS},
        )
        os.replace(tmp, path)  # readers never see a half-written cache
    except OSError as e:
        print(f"pocketqa: could not write the feature cache {path} ({e}); continuing without it", file=sys.stderr)


def load_data(
    paths: Sequence[str | os.PathLike],
    tokenizer,
    window: WindowConfig,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    data_format: str | None = None,
    offsets: str = "strict",
) -> TrainData:
    """Training windows of one or more data files, concatenated in order.

    Each file goes through :func:`pocketqa.data.cache.load_train_features`, so its windows
    are tokenised once and read back from the feature cache on later runs.
    """
    parts = [load_train_features(p, tokenizer, window, cache_dir=cache_dir, progress=progress,
                                 data_format=data_format, offsets=offsets) for p in paths]
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(d.input_ids) for d in parts[:-1]])
    examples = np.cumsum([0] + [d.n_examples for d in parts[:-1]])
    types = [d.token_type_ids for d in parts]
    return TrainData(
        input_ids=np.concatenate([d.input_ids for d in parts]),
        token_type_ids=None if any(t is None for t in types) else np.concatenate(types),
        row_starts=np.concatenate([d.row_starts + o for d, o in zip(parts, offsets)]),
        lengths=np.concatenate([d.lengths for d in parts]),
        start_positions=np.concatenate([d.start_positions for d in parts]),
        end_positions=np.concatenate([d.end_positions for d in parts]),
        example_index=np.concatenate([d.example_index + e for d, e in zip(parts, examples)]),
        n_examples=int(sum(d.n_examples for d in parts)),
        data_sha256=hashlib.sha256("".join(d.data_sha256 for d in parts).encode()).hexdigest(),
    )
