"""Windows as model inputs: length-sorted batches and per-batch padding (inference and export).

Training orders its batches by seed and epoch instead (``pocketqa.data.batching``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pocketqa.data.features import Features


def pad_batch(
    features: Features, indices: Sequence[int], pad_id: int, input_names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Pads the windows at ``indices`` to their longest one (per-batch padding).

    Returns int64 arrays keyed by model input name (input_ids, attention_mask and,
    when asked for and available, token_type_ids).
    """
    indices = np.asarray(indices, dtype=np.int64)
    lengths = features.lengths[indices]
    width = int(lengths.max())
    attention = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    input_ids = np.where(attention == 1, features.ids[indices, :width], pad_id).astype(np.int64)
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if "token_type_ids" in input_names:
        types = features.types[indices, :width] * attention if features.types is not None else np.zeros_like(attention)
        batch["token_type_ids"] = types
    return batch


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches of windows of similar length, longest first, so padding stays small."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
