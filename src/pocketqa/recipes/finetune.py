"""Fine-tuning an encoder for extractive QA on SQuAD 2.0 (``pocketqa train``).

Read it top to bottom:

1. ``TrainConfig``: every setting, with defaults; bad recipes fail here, all at once.
2. Data: SQuAD file -> windows with labels, tokenised once and cached as ``.npz`` int
   arrays (``load_train_features``); per-epoch batch order grouped by length
   (``batch_order``); numpy padding to the longest window of a micro-batch (``collate``).
3. Optimizer (AdamW, fused on CUDA) and the linear warmup/decay schedule.
4. Checkpoints: written into a temp dir, then renamed, so a killed run never leaves a
   half-written one; they hold everything ``--resume`` needs to continue bit-for-bit.
5. ``evaluate``: dev-set scores through the same ``QuestionAnswerer`` users run.
6. ``train``: the loop. forward, loss, backward, step, log, save, evaluate.

Batch size: ``batch_size`` is the *global* batch, windows per optimizer step. Processes
(``torchrun --nproc-per-node N``) and ``grad_accum`` only split it into micro-batches to
fit memory, so a recipe means the same experiment on 1 or 8 GPUs (as nanoGPT's total
batch size). Data order depends only on the seed and the epoch, never on the world size.

The data pieces and checkpoint functions are public: the distillation loop reuses them.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pocketqa.inference.backends import model_input_names
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.recipes.configs import TrainConfig
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.training.losses import span_loss

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CHECKPOINTS_DIR = "checkpoints"
LOG_FILE = "log.jsonl"
# Bump when the cached array layout or the labelling rules change: old caches are then ignored.
CACHE_VERSION = 1


# -- 2. data -----------------------------------------------------------------------------


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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    return Path(os.environ.get("POCKETQA_CACHE") or Path.home() / ".cache" / "pocketqa")


def load_train_features(
    path: str | os.PathLike,
    tokenizer,
    window: WindowConfig,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    chunk_size: int = 1000,
    workers: int | None = None,
) -> TrainData:
    """Windows and labels of a SQuAD file, tokenised once and then read from the cache.

    Args:
        path: SQuAD 1.1/2.0 JSON or .json.gz.
        tokenizer: A fast tokenizer.
        window: Window sizes.
        cache_dir: Where ``train-<key>.npz`` files live (default: ``default_cache_dir()``).
            The key covers tokenizer, data checksum and window settings, so a stale
            cache is never read. Files are plain numpy arrays, loaded without pickle.
        progress: Show a tqdm bar while tokenising.
        chunk_size: Examples per ``make_features`` call.
        workers: Processes that tokenise chunks in parallel (None: up to 8 for big files;
            transformers turns encodings into Python lists on one core, so this pays).
    """
    data_sha = file_sha256(path)
    key = feature_cache_key(tokenizer, data_sha, window)
    cache_path = Path(cache_dir or default_cache_dir()).expanduser() / f"train-{key[:32]}.npz"
    cached = _read_cache(cache_path, key, data_sha)
    if cached is not None:
        return cached
    data = _tokenise(path, tokenizer, window, data_sha, progress, chunk_size, workers)
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


def _tokenise(path, tokenizer, window, data_sha, progress, chunk_size, workers) -> TrainData:
    global _FORK_JOB
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from pocketqa.data.squad import load_squad

    examples = load_squad(path)
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


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's batch order (a pure function, so a resumed run recomputes it)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def batch_order(lengths: np.ndarray, batch_size: int, seed: int, chunk_batches: int = 64) -> list[np.ndarray]:
    """One epoch of global batches, each of windows of similar length.

    Windows are shuffled, cut into chunks of ``chunk_batches`` batches, sorted by length
    inside each chunk and cut into batches; then the batches are shuffled. Padding per
    batch stays small while the order stays random. The last batch is filled up with
    windows from the start of the shuffled order (as torch's DistributedSampler pads),
    so every optimizer step sees exactly ``batch_size`` windows.

    Returns:
        ceil(len(lengths) / batch_size) int64 index arrays of ``batch_size`` windows each.
    """
    rng = np.random.default_rng(seed)
    n = len(lengths)
    perm = rng.permutation(n)
    short = -n % batch_size
    if short:
        perm = np.concatenate([perm, np.resize(perm, short)])
    chunk = batch_size * chunk_batches
    batches = []
    for first in range(0, len(perm), chunk):
        part = perm[first : first + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def split_batch(batch: np.ndarray, rank: int = 0, world_size: int = 1, grad_accum: int = 1) -> list[np.ndarray]:
    """This process's ``grad_accum`` micro-batches of a global batch (disjoint across ranks).

    Parts are interleaved (micro-step i of rank r is part ``i * world_size + r``) so that
    ranks work on windows of similar length at the same time and wait less for each other.
    """
    parts = np.array_split(batch, world_size * grad_accum)
    return [parts[i * world_size + rank] for i in range(grad_accum)]


def collate(
    data: TrainData, indices: np.ndarray, pad_id: int, input_names: Sequence[str], pad_to_multiple_of: int = 8
) -> dict[str, np.ndarray]:
    """Pads the windows ``indices`` to their longest one, with numpy (no per-row Python).

    The width is rounded up to a multiple of ``pad_to_multiple_of`` (tensor cores like
    it, and torch.compile sees fewer shapes) but never past the longest window overall.

    Returns:
        int64 arrays: input_ids, attention_mask [, token_type_ids] of [n, width] and
        start_positions, end_positions of [n].
    """
    idx = np.asarray(indices)
    lens = data.lengths[idx].astype(np.int64)
    longest = int(lens.max())
    width = min(-(-longest // pad_to_multiple_of) * pad_to_multiple_of, max(longest, int(data.lengths.max())))
    cols = np.arange(width)
    mask = cols[None, :] < lens[:, None]
    # Flat positions of every cell; cells past a row's end read its last token, then get masked.
    pos = data.row_starts[idx][:, None] + np.minimum(cols[None, :], lens[:, None] - 1)
    batch = {
        "input_ids": np.where(mask, data.input_ids[pos], pad_id).astype(np.int64),
        "attention_mask": mask.astype(np.int64),
    }
    if "token_type_ids" in input_names:
        types = data.token_type_ids[pos] if data.token_type_ids is not None else np.zeros_like(pos)
        batch["token_type_ids"] = np.where(mask, types, 0).astype(np.int64)
    batch["start_positions"] = data.start_positions[idx].astype(np.int64)
    batch["end_positions"] = data.end_positions[idx].astype(np.int64)
    return batch


def iterate_batches(
    data: TrainData,
    batches: Sequence[np.ndarray],
    pad_id: int,
    input_names: Sequence[str],
    rank: int = 0,
    world_size: int = 1,
    grad_accum: int = 1,
    start: int = 0,
) -> Iterator[tuple[int, list[dict[str, np.ndarray]]]]:
    """Yields (index of the global batch in the epoch, this rank's collated micro-batches).

    ``start`` skips the batches a resumed run has already trained on.
    """
    for b in range(start, len(batches)):
        parts = split_batch(batches[b], rank, world_size, grad_accum)
        yield b, [collate(data, part, pad_id, input_names) for part in parts]


def build_optimizer(model, lr: float, weight_decay: float, extra_params=None, eps: float = 1e-8, fused: bool | None = None):
    """AdamW without weight decay on biases and norm weights (every parameter with ndim < 2).

    Args:
        model: The module to train.
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay for matrices.
        extra_params: More parameters to train with the model (e.g. distillation
            projections); the same decay rule applies.
        eps: Adam epsilon.
        fused: Use torch's fused AdamW kernel; None = when every parameter is on CUDA, or
            on the CPU with torch >= 2.4 (6.5x faster a step than torch's default loop for a
            17M-parameter student on 2 cores: bench/optimizer_cpu.py).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    seen = {id(p) for p in params}
    params += [p for p in (extra_params or []) if p.requires_grad and id(p) not in seen]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    if fused is None:
        fused = bool(params) and (all(p.is_cuda for p in params) or
                                  (all(p.device.type == "cpu" for p in params) and _torch_at_least(2, 4)))
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, eps=eps, fused=fused or None)


def _torch_at_least(major: int, minor: int) -> bool:
    import torch

    version = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    return version >= (major, minor)


def warmup_steps_for(warmup: float, total_steps: int) -> int:
    """``warmup`` < 1 is a fraction of the run, otherwise a number of steps."""
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


def build_scheduler(optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup from 0 to the peak over ``warmup_steps``, then linear decay to 0 (run_squad)."""
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)  # never exactly 0: the first step already learns
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- 4. checkpoints ---------------------------------------------------------------------


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _barrier() -> None:
    if (d := _dist()) is not None:
        d.barrier()


def _rank() -> int:
    return d.get_rank() if (d := _dist()) is not None else 0


def save_checkpoint(path, model, optimizer, scheduler, state: dict, tokenizer=None, scaler=None, meta: dict | None = None) -> Path:
    """Writes a resumable checkpoint at ``path`` atomically (temp dir, then rename).

    Call it on every rank under DDP: each rank stores its own RNG state; rank 0 writes
    the rest. Contents: model.safetensors + config.json (+ tokenizer + pocketqa.json,
    so a checkpoint is also a usable model), trainer_state.pt (optimizer, scheduler,
    grad-scaler state: tensors and plain containers only), rng-<rank>.pt, state.json.

    Args:
        path: The final checkpoint dir, e.g. ``OUT/checkpoints/step-1000``.
        state: JSON-able position and settings (step, epoch, step_in_epoch, ...).
    """
    import torch

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    rank = _rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, tmp / f"rng-{rank}.pt")
    _barrier()
    if rank == 0:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if meta:
            (tmp / "pocketqa.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / "trainer_state.pt",
        )
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if path.exists():  # only when re-running over an old checkpoint of the same step
            shutil.rmtree(path)
        os.replace(tmp, path)
    _barrier()
    return path


def load_checkpoint(path, model, optimizer=None, scheduler=None, scaler=None) -> dict:
    """Restores a checkpoint written by ``save_checkpoint`` and returns its state.json.

    Weights come from safetensors; the rest is read with ``torch.load(weights_only=True)``
    (no arbitrary unpickling). The RNG state is this rank's (or rank 0's when the run
    had fewer processes).
    """
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise PocketQAError(f"{path}: not a pocketqa checkpoint (no state.json)")
    device = next(model.parameters()).device
    weights = {}
    for f in sorted(path.glob("*.safetensors")):
        weights.update(load_file(f, device=str(device)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # save_pretrained drops tied copies of a weight; those are restored through their twin.
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in weights if k in own}
    missing = [k for k in missing if own[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise PocketQAError(
            f"{path}: checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "resume with the same --model"
        )
    if optimizer is not None or scheduler is not None or scaler is not None:
        trainer = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
        if optimizer is not None:
            optimizer.load_state_dict(trainer["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(trainer["scheduler"])
        if scaler is not None and trainer["scaler"] is not None:
            scaler.load_state_dict(trainer["scaler"])
    rank = _rank()
    rng_file = path / f"rng-{rank}.pt"
    if not rng_file.is_file():
        rng_file = path / "rng-0.pt"
    rng = torch.load(rng_file, map_location="cpu", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return json.loads(state_file.read_text(encoding="utf-8"))


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out_dir/checkpoints``, oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    found = []
    for p in root.glob("step-*") if root.is_dir() else []:
        m = re.fullmatch(r"step-(\d+)", p.name)
        if m and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def prune_checkpoints(out_dir: str | os.PathLike, keep: int | None) -> None:
    """Deletes all but the newest ``keep`` checkpoints (0 or None keeps all)."""
    if not keep:
        return
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# -- 5. evaluation ----------------------------------------------------------------------


def evaluate(model, tokenizer, window: WindowConfig, examples, features=None, device="cpu", batch_size: int = 64) -> dict:
    """Official SQuAD 2.0 scores (at threshold 0) plus best_* thresholds on ``examples``.

    Runs through ``QuestionAnswerer``, the inference path users run, so the scores are
    the ones ``pocketqa evaluate`` will report. Pass precomputed ``features`` (from
    ``make_features(examples, tokenizer, window)``) to skip re-windowing on every call.
    Leaves the model in eval mode.
    """
    from pocketqa.inference.answerer import QuestionAnswerer
    from pocketqa.inference.backends import TorchBackend
    from pocketqa.inference.decode import decode_features
    from pocketqa.evaluation.scoring import score_decoded

    qa = QuestionAnswerer(TorchBackend(model, device=str(device)), tokenizer, window, batch_size=batch_size)
    if features is None:
        decoded = qa.decode_examples(examples, progress=True)
    else:
        starts, ends = qa.logits(features, progress=True)
        decoded = decode_features(
            examples, features, starts, ends, n_best=qa.n_best, max_answer_length=qa.max_answer_length
        )
    return score_decoded(examples, decoded, threshold=0.0)


# -- 6. the loop ------------------------------------------------------------------------


def train(config: TrainConfig) -> dict:
    """Fine-tunes ``config.model`` on ``config.train`` and writes the model to ``config.out``.

    Works as one process or under ``torchrun`` (DistributedDataParallel; rank 0 logs,
    saves and evaluates). Returns {"out", "steps", "metrics", "threshold", "rank"}
    (metrics and threshold only on rank 0, and only with a dev file).
    """
    import torch

    from pocketqa.models import load_qa_model, load_tokenizer, resolve_model
    from pocketqa.modeldir import META_FILE
    from pocketqa.data.squad import load_squad

    rank, world, device, owns_group = _init_distributed(config.device)
    is_main = rank == 0
    try:
        out = Path(config.out)
        resume_from = _check_paths(config, out)
        if config.batch_size % (world * config.grad_accum):
            raise ConfigError(
                f"batch_size ({config.batch_size}) must be divisible by processes x grad_accum "
                f"({world} x {config.grad_accum}): it is the global batch they split"
            )
        precision = _resolve_precision(config.precision, device)

        # Data: rank 0 tokenises and fills the cache, the others then read it.
        model_path = resolve_model(config.model)
        tokenizer = load_tokenizer(model_path)
        window = config.window
        dev_examples = load_squad(config.dev) if config.dev and is_main else None
        data = None
        if is_main:
            data = load_train_features(config.train, tokenizer, window, config.cache_dir)
        _barrier()
        if data is None:
            data = load_train_features(config.train, tokenizer, window, config.cache_dir, progress=False)
        dev_features = make_features(dev_examples, tokenizer, window) if dev_examples else None

        # Model, optimizer, schedule. The seed makes a fresh QA head identical across runs and ranks.
        torch.manual_seed(config.seed)
        # float32 master weights whatever the checkpoint holds (transformers 5 loads a saved
        # dtype, e.g. fp16, by default); autocast does the low-precision math.
        model = load_qa_model(model_path, device=str(device), dtype=torch.float32)
        model.train()
        # Only now, with model and data loaded, is an earlier run replaced: bad input leaves it intact.
        if is_main:
            if config.overwrite:
                _clear_previous_run(out)
            out.mkdir(parents=True, exist_ok=True)
        _barrier()
        input_names = model_input_names(model, tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        steps_per_epoch = math.ceil(len(data) / config.batch_size)
        total_steps = config.max_steps or steps_per_epoch * config.epochs
        optimizer = build_optimizer(model, config.learning_rate, config.weight_decay, eps=config.adam_epsilon)
        scheduler = build_scheduler(optimizer, warmup_steps_for(config.warmup, total_steps), total_steps)
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

        step, epoch, start_batch = 0, 0, 0
        if resume_from is not None:
            state = load_checkpoint(resume_from, model, optimizer, scheduler, scaler)
            _check_resumable(state, resume_from, data, config, total_steps)
            step, epoch, start_batch = state["step"], state["epoch"], state["step_in_epoch"]
        else:
            torch.manual_seed(config.seed + rank)  # each rank its own dropout stream
        model_meta = {
            "name": config.name or out.name,
            "base_model": str(config.model),
            "recipe": config.to_dict(),
            "window": window.to_dict(),
            "data": {"train": {"path": str(config.train), "sha256": data.data_sha256}},
        }
        if config.dev:
            model_meta["data"]["dev"] = {"path": str(config.dev), "sha256": file_sha256(config.dev)}

        net = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        forward = torch.compile(net) if config.compile else net

        log = RunLog(out / LOG_FILE if is_main else None)
        dropped = log.forget_after(step) if resume_from is not None else 0
        if is_main:
            print(
                f"pocketqa train: {data.n_examples} examples -> {len(data)} windows "
                f"({int((data.start_positions != 0).sum())} with the answer inside); "
                f"{total_steps} steps of {config.batch_size} windows ({world} process(es) x {config.grad_accum} "
                f"micro-batch(es) of {config.batch_size // (world * config.grad_accum)}); precision {precision}; "
                f"device {device}" + (f"; resuming at step {step} from {resume_from}" if resume_from else ""),
                file=sys.stderr,
            )
            log.write({"event": "start", "step": step, "total_steps": total_steps, "world_size": world,
                       "precision": precision, "resumed_from": str(resume_from) if resume_from else None,
                       **({"dropped_records": dropped} if dropped else {})})
        bar = _progress(total_steps, step, enabled=is_main)
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        steps_since_log, windows_since_log, last_log = 0, 0, time.perf_counter()
        started = time.perf_counter()
        scale = world / config.batch_size  # per-window loss weight: DDP's gradient mean undoes `world`
        last_metrics = None

        while step < total_steps:
            seed_e = epoch_seed(config.seed, epoch)
            batches = batch_order(data.lengths, config.batch_size, seed_e)
            for b, micro_batches in iterate_batches(
                data, batches, pad_id, input_names, rank, world, config.grad_accum, start=start_batch
            ):
                if step >= total_steps:
                    break
                for i, micro in enumerate(micro_batches):
                    inputs = {k: to_device(v, device) for k, v in micro.items()}
                    starts, ends = inputs.pop("start_positions"), inputs.pop("end_positions")
                    # Gradients are all-reduced once per step, after the last micro-batch.
                    sync = world == 1 or i == len(micro_batches) - 1
                    with (nullcontext() if sync else net.no_sync()):
                        with torch.autocast(device.type, dtype=autocast) if autocast else nullcontext():
                            outputs = forward(**inputs)
                        loss = span_loss(outputs.start_logits, outputs.end_logits, starts, ends,
                                         mask=inputs["attention_mask"], reduction="sum") * scale
                        (scaler.scale(loss) if scaler else loss).backward()
                    loss_sum += loss.detach()
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                steps_since_log += 1
                windows_since_log += config.batch_size
                bar.update(1)

                saving = config.save_steps and step % config.save_steps == 0
                evaluating = config.eval_steps and step % config.eval_steps == 0 and step < total_steps
                if step % config.log_steps == 0 or step == total_steps or saving or evaluating:
                    mean_loss = _global_mean(loss_sum, steps_since_log * world)
                    if not math.isfinite(mean_loss):
                        raise PocketQAError(_nonfinite_message(f"training loss became {mean_loss}", step, precision, out))
                    now = time.perf_counter()
                    lr = scheduler.get_last_lr()[0]
                    record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": mean_loss, "lr": lr,
                              "ex_per_s": windows_since_log / (now - last_log), "elapsed_s": now - started}
                    log.write(record)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                    loss_sum.zero_()
                    steps_since_log, windows_since_log = 0, 0
                    last_log = time.perf_counter()
                if saving:
                    _check_finite_weights(model, step, precision, out)
                    position = {"step": step, "epoch": epoch, "step_in_epoch": b + 1, "epoch_seed": seed_e,
                                "total_steps": total_steps, "batch_size": config.batch_size, "world_size": world,
                                "data_sha256": data.data_sha256, "window": window.to_dict(), "config": config.to_dict()}
                    save_checkpoint(out / CHECKPOINTS_DIR / f"step-{step}", model, optimizer, scheduler, position,
                                    tokenizer=tokenizer, scaler=scaler, meta=model_meta)
                    if is_main:
                        prune_checkpoints(out, config.keep_checkpoints)
                if evaluating:
                    if is_main:
                        last_metrics = _evaluate_logged(model, tokenizer, window, dev_examples, dev_features,
                                                        device, autocast, config.eval_batch_size, step, log)
                    model.train()
                    _barrier()
                if saving or evaluating:
                    last_log = time.perf_counter()  # keeps save and eval time out of ex/s
            epoch += 1
            start_batch = 0
        bar.close()
        _check_finite_weights(model, step, precision, out)

        result = {"out": str(out), "steps": step, "metrics": None, "threshold": None, "rank": rank}
        if is_main:
            meta = dict(model_meta)
            meta["training"] = {"steps": step, "epochs": round(step / steps_per_epoch, 4), "world_size": world,
                                "global_batch_size": config.batch_size, "precision": precision,
                                "time_s": round(time.perf_counter() - started, 2), "torch": torch.__version__}
            if dev_examples is not None:
                last_metrics = _evaluate_logged(model, tokenizer, window, dev_examples, dev_features,
                                                device, autocast, config.eval_batch_size, step, log)
                meta["metrics"] = {"dev": last_metrics}
                meta["threshold"] = last_metrics["best_f1_thresh"]
                result.update(metrics=last_metrics, threshold=meta["threshold"])
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
            # pocketqa.json is written last: its presence marks a finished model directory.
            tmp = out / f".{META_FILE}.tmp"
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, out / META_FILE)
        _barrier()
        return result
    finally:
        if owns_group and (d := _dist()) is not None:
            d.destroy_process_group()


# -- helpers of the loop -----------------------------------------------------------------


def _init_distributed(device_arg: str | None):
    """(rank, world_size, device, owns_group) from torchrun's env vars; nccl on CUDA, gloo on CPU."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    wants_cuda = torch.cuda.is_available() and (device_arg is None or device_arg.startswith("cuda"))
    if world <= 1:
        return 0, 1, torch.device(device_arg or ("cuda" if wants_cuda else "cpu")), False
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    if wants_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if wants_cuda else "gloo")
    return rank, world, device, owns


def _check_paths(config: TrainConfig, out: Path) -> Path | None:
    """Fails early on missing inputs or an occupied out dir; returns the checkpoint to resume."""
    missing = [f"{name} file {p} does not exist" for name, p in (("train", config.train), ("dev", config.dev))
               if p and not Path(p).is_file()]
    if missing:
        raise PocketQAError("; ".join(missing))
    if config.resume:
        if config.resume != "latest":
            path = Path(config.resume)
            if not (path / "state.json").is_file():
                raise PocketQAError(f"--resume {path}: not a checkpoint dir (no state.json)")
            return path
        found = list_checkpoints(out)
        if not found:
            raise PocketQAError(
                f"--resume: no checkpoint under {out / CHECKPOINTS_DIR}; start again with --overwrite"
            )
        return found[-1]
    if out.exists() and not out.is_dir():
        raise PocketQAError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not config.overwrite:
        raise PocketQAError(
            f"output dir {out} exists and is not empty; pass --overwrite to replace it or --resume to continue it"
        )
    return None


def _clear_previous_run(out: Path) -> None:
    """Removes what an earlier run wrote (checkpoints, log, meta); other files stay."""
    from pocketqa.modeldir import META_FILE

    shutil.rmtree(out / CHECKPOINTS_DIR, ignore_errors=True)
    for name in (LOG_FILE, META_FILE):
        (out / name).unlink(missing_ok=True)


def _resolve_precision(precision: str, device) -> str:
    import torch

    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if precision == "fp16":
        print(
            "pocketqa train: warning: fp16 overflows in some encoders (MobileBERT gives NaN losses, "
            "transformers #11327); bf16 has the range of fp32",
            file=sys.stderr,
        )
    return precision


def _check_resumable(state: dict, path: Path, data: TrainData, config: TrainConfig, total_steps: int) -> None:
    problems = []
    if state.get("data_sha256") != data.data_sha256:
        problems.append("the training file changed")
    if state.get("batch_size") != config.batch_size:
        problems.append(f"batch_size was {state.get('batch_size')}, now {config.batch_size}")
    if state.get("window") != config.window.to_dict():
        problems.append(f"window settings were {state.get('window')}")
    if problems:
        raise PocketQAError(f"cannot resume from {path}: " + "; ".join(problems) + " (resume with the original settings)")
    if state.get("total_steps") != total_steps:
        print(
            f"pocketqa train: warning: the run now has {total_steps} steps, the checkpoint's had "
            f"{state.get('total_steps')}; the learning-rate schedule changes accordingly",
            file=sys.stderr,
        )


def to_device(value, device):
    """A numpy array or CPU tensor on ``device``; to CUDA through pinned memory, without blocking.

    A plain ``.to("cuda")`` from pageable memory waits for the GPU queue to drain: one sync
    per step in a training loop that otherwise reads the loss only at log steps.
    """
    import torch

    tensor = torch.from_numpy(value) if isinstance(value, np.ndarray) else value
    device = torch.device(device)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _global_mean(total, count: int) -> float:
    """Sum of a device scalar over ranks / count, as a Python float (one sync per log)."""
    value = total.detach().clone()
    if (d := _dist()) is not None:
        d.all_reduce(value)
    return value.item() / max(1, count)


def nonfinite_parameter(module) -> str | None:
    """Name of the first parameter of ``module`` holding nan or inf; None when all are finite.

    The loss checks see the loss *before* the last update, so an update that broke the
    weights (a huge learning rate) shows only here.
    """
    import torch

    return next((name for name, p in module.named_parameters() if not torch.isfinite(p).all()), None)


def _check_finite_weights(model, step: int, precision: str, out: Path) -> None:
    if (name := nonfinite_parameter(model)) is not None:
        raise PocketQAError(_nonfinite_message(f"weight {name} became nan or inf", step, precision, out))


def _nonfinite_message(what: str, step: int, precision: str, out: Path) -> str:
    found = list_checkpoints(out)
    last = f"; the last good checkpoint is {found[-1]} (--resume continues from it)" if found else ""
    hint = (
        "fp16 overflows in MobileBERT-like models (transformers #11327): use --precision bf16 or fp32"
        if precision == "fp16"
        else "lower --learning-rate or raise --warmup"
    )
    return f"{what} at step {step}; stopped before saving bad weights. {hint}{last}"


def _evaluate_logged(model, tokenizer, window, examples, features, device, autocast, batch_size, step, log) -> dict:
    import torch

    with torch.autocast(device.type, dtype=autocast) if autocast else nullcontext():
        scores = evaluate(model, tokenizer, window, examples, features, device=device, batch_size=batch_size)
    log.write({"step": step, "eval": scores})
    print(
        f"pocketqa train: step {step}: dev EM {scores['exact']:.2f} F1 {scores['f1']:.2f}; "
        f"best F1 {scores['best_f1']:.2f} at threshold {scores['best_f1_thresh']:.3f}",
        file=sys.stderr,
    )
    return scores


class RunLog:
    """Appends timed JSON lines to log.jsonl (rank 0 only; other ranks pass path=None); distill logs here too."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")

    def __call__(self, **record) -> None:
        self.write(record)

    def forget_after(self, step: int) -> int:
        """Drops the records of steps after ``step``, which a resumed run trains again.

        A run killed between checkpoints logged steps that the resumed run repeats from the
        checkpoint; left in, every such step would appear twice. Rewritten atomically.
        Returns how many records were dropped.
        """
        if self.path is None or not self.path.is_file():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and _logged_step(line) <= step]
        if len(kept) < len(lines):
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)
        return len(lines) - len(kept)


def _logged_step(line: str) -> float:
    """The step of one log.jsonl line; a line cut off by a kill counts as after every step."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)


def read_log(out_dir: str | os.PathLike) -> list[dict]:
    """The records of ``out_dir/log.jsonl`` (plain or gzip), in order."""
    path = Path(out_dir) / LOG_FILE
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
