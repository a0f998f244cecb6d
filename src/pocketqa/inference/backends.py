"""Model backends: the protocol QuestionAnswerer runs windows through, and the PyTorch one.

``model_input_names`` is the one rule for which inputs a QA model takes; training,
distillation, export and inference all ask it.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import numpy as np

from pocketqa.errors import PocketQAError

# What pocketqa's windows carry; a tokenizer may produce fewer (RoBERTa: no token types).
WINDOW_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model, tokenizer=None) -> list[str]:
    """The inputs to feed ``model``: those the tokenizer produces that its forward accepts.

    Asks the objects rather than the model type (DistilBERT and RoBERTa-style models take
    no token types). ``attention_mask`` is always fed when the model accepts it, since
    pocketqa pads batches.

    Args:
        model: A PyTorch QA model.
        tokenizer: Its tokenizer; None means every input pocketqa's windows carry.

    Raises:
        PocketQAError: when the model takes no ``input_ids``.
    """
    params = inspect.signature(model.forward).parameters
    produced = list(tokenizer.model_input_names) if tokenizer is not None else list(WINDOW_INPUTS)
    names = [n for n in produced if n in params]
    if "attention_mask" in params and "attention_mask" not in names:
        names.append("attention_mask")
    if "input_ids" not in names:
        raise PocketQAError(
            f"{type(model).__name__}.forward does not take input_ids from the tokenizer "
            f"(tokenizer gives {produced}); pocketqa runs token-id QA models only"
        )
    return names


class Backend(Protocol):
    """Runs a QA model on a padded batch; PyTorch and ONNX Runtime implement it.

    Attributes:
        input_names: The inputs the model takes.
        batch_invariant: Whether a window's logits are independent of the windows batched
            with it. Dynamically quantized (int8) graphs are not: each call quantizes its
            activations with one scale over the whole batch, padding included, so they
            run one window per call.
    """

    input_names: list[str]
    batch_invariant: bool  # optional: True when absent

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Returns float32 (start_logits, end_logits), each of shape [batch, seq_len]."""
        ...


class TorchBackend:
    """Runs an ``AutoModelForQuestionAnswering`` under ``torch.inference_mode``."""

    batch_invariant = True  # up to float rounding

    def __init__(self, model, device: str = "cpu", threads: int | None = None, tokenizer=None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.input_names = model_input_names(model, tokenizer)

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items() if k in self.input_names}
        with torch.inference_mode():
            out = self.model(**inputs)
        return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
