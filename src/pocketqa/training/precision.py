"""Numeric precision of a training run: what runs on a device, its autocast and its grad scaler.

Weights and optimizer state stay float32 in every precision; "bf16" and "fp16" only run the
forward pass (and so the backward's matmuls) under ``torch.autocast``. fp16 needs a
``GradScaler`` against underflowing gradients; bf16 has the range of fp32 and needs none.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from pocketqa.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
FP16_WARNING = (
    "fp16 overflows in some encoders (MobileBERT gives NaN losses, transformers #11327); "
    "bf16 has the range of fp32"
)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The precision that runs on ``device``: "bf16", "fp16" or "fp32".

    Args:
        precision: "auto" (bf16 on a CUDA device that supports it, else fp32), "bf16",
            "fp16" or "fp32". A recipe may offer fewer (distillation has no fp16).
        device: The training device.

    Raises:
        ConfigError: for an unknown precision, or fp16 off CUDA (torch's CPU autocast
            has no float16 kernels worth using).
    """
    kind = torch.device(device).type
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, found {precision!r}")
    if precision == "auto":
        return "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and kind != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return precision


def precision_warning(precision: str) -> str | None:
    """A warning to print for a resolved precision, or None (fp16's overflow risk)."""
    return FP16_WARNING if precision == "fp16" else None


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision; None for fp32 (no autocast)."""
    return _DTYPES.get(precision)


def autocast(device: str | torch.device, precision: str) -> AbstractContextManager:
    """``torch.autocast`` in ``precision`` on ``device``'s type; a no-op context for fp32."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler | None:
    """A ``GradScaler`` for fp16 (its gradients underflow without one); None otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
