"""TinyBERT layer maps: which student hidden state learns from which teacher hidden state."""

from __future__ import annotations

import re

from pocketqa.errors import ConfigError


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """TinyBERT's uniform map over hidden-state indices: 0 <-> 0 (embeddings), m <-> m*N/M.

    Indices are 1-based for layers (hidden_states[m] is layer m's output), so a 3-layer
    student of a 6-layer teacher maps 1->2, 2->4, 3->6. Needs N to be a multiple of M.
    """
    step = teacher_layers // student_layers
    return [(m, m * step) for m in range(student_layers + 1)]


def parse_layer_map(text: str) -> list[tuple[int, int]]:
    """Parses ``"0:0,1:2,2:4"`` into [(0, 0), (1, 2), (2, 4)] (student:teacher)."""
    pairs = []
    for item in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", item)
        if not m:
            raise ConfigError(
                f"layer_map {text!r}: expected student:teacher pairs like '0:0,1:2,2:4', found {item.strip()!r}"
            )
        pairs.append((int(m.group(1)), int(m.group(2))))
    return pairs

