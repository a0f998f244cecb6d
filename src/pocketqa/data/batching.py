"""Batches of training windows: a seeded per-epoch order, splits across processes, collation.

Batch size is the *global* batch, windows per optimizer step. Processes and gradient
accumulation only split it into micro-batches (``split_batch``), so the order depends only
on the seed and the epoch, never on the world size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from pocketqa.data.cache import TrainData


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
