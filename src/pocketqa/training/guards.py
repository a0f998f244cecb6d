"""Refusing to save broken weights: the non-finite check shared by the training loops.

A loop checks its logged loss, but that loss was computed *before* the last update; an update
that broke the weights (a huge learning rate, an fp16 overflow) shows only in the weights.
Call ``check_finite_weights`` before every save.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pocketqa.errors import PocketQAError


def nonfinite_parameter(module: torch.nn.Module) -> str | None:
    """Name of the first parameter of ``module`` holding nan or inf; None when all are finite."""
    return next((name for name, p in module.named_parameters() if not torch.isfinite(p).all()), None)


def check_finite_weights(modules: Mapping[str, torch.nn.Module | None], where: str, hint: str) -> None:
    """Raises when a parameter of any of ``modules`` holds nan or inf.

    Args:
        modules: The trained modules by name, as given to ``save_checkpoint``; the one named
            "model" is the main model (its parameters are named bare in the message), the
            others are prefixed with their name. None values are skipped.
        where: Where the loop is, for the message, e.g. "at step 120" or "in stage 1".
        hint: The likely fix, e.g. "lower --learning-rate or raise --warmup".

    Raises:
        PocketQAError: "weight NAME became nan or inf WHERE; stopped before saving bad
            weights. HINT" (with "projection weight NAME" for a module named "projection").
    """
    for key, module in modules.items():
        if module is not None and (name := nonfinite_parameter(module)) is not None:
            label = "weight" if key == "model" else f"{key} weight"
            raise PocketQAError(f"{label} {name} became nan or inf {where}; stopped before saving bad weights. {hint}")
