"""Attention maps of any encoder, read from its per-layer query/key projections.

TinyBERT's stage 1 distils attention scores; transformers returns only post-softmax
attentions (and only under the eager implementation), so :class:`QueryKeyTap` recomputes
them from hooked projections, which works with SDPA as well.
"""

from __future__ import annotations

import math

from pocketqa.errors import PocketQAError

# Names of the per-layer query / key projections, tried in order (BERT, RoBERTa, ELECTRA,
# MiniLM, TinyBERT, MobileBERT use query/key; DistilBERT q_lin/k_lin; MPNet q/k).
_QK_NAMES = (("query", "key"), ("q_lin", "k_lin"), ("q", "k"))


def _unseen_attention_terms(model) -> str | None:
    """Names a relative-position term a model adds inside attention that no hook can see.

    MPNet's bias reaches each attention module as a ``position_bias`` argument, which
    :class:`QueryKeyTap` captures; these are computed inside the module from its weights.
    """
    config = model.config
    kind = getattr(config, "position_embedding_type", None)
    if kind not in (None, "absolute"):
        return f"position_embedding_type {kind!r}"
    if getattr(config, "relative_attention", False):
        return "relative_attention (DeBERTa-style disentangled attention)"
    return None


def _qk_modules(model) -> tuple[list, list] | None:
    """Each layer's query and key projections, in layer order, or None when not found."""
    named = list(model.named_modules())
    n = model.config.num_hidden_layers
    for q_name, k_name in _QK_NAMES:
        queries = [m for name, m in named if name.endswith("." + q_name)]
        keys = [m for name, m in named if name.endswith("." + k_name)]
        if len(queries) == n and len(keys) == n:
            return queries, keys
    return None


def tap_problem(model) -> str | None:
    """Why :class:`QueryKeyTap` cannot give ``model``'s real attention, or None when it can.

    Returns:
        A message that starts with the model's class name and ends with the fix
        (``--no-attention-loss``), for :func:`~pocketqa.training.pairing.check_pair` to report.
    """
    name = type(model).__name__
    if _qk_modules(model) is None:
        looked_for = ", ".join(q + "/" + k for q, k in _QK_NAMES)
        return f"{name}: no per-layer query/key projections found (looked for {looked_for}); pass --no-attention-loss"
    if unseen := _unseen_attention_terms(model):
        return (
            f"{name} adds relative-position terms inside its attention ({unseen}) that the query/key taps "
            "cannot see, so neither attention target would be its real attention; pass --no-attention-loss"
        )
    return None


class QueryKeyTap:
    """Captures each layer's query/key projections during a forward pass (forward hooks).

    transformers 5 returns only post-softmax attentions, and only under the eager
    implementation; recomputing ``Q Kᵀ / √d`` from the hooked projections gives the
    pre-softmax scores TinyBERT distils, works with SDPA, and yields the probabilities
    (before attention dropout) as well.

    A relative-position bias that the model hands to its attention modules as a
    ``position_bias`` argument (MPNet: ``MPNetAttention.attn`` receives the encoder's
    bucketed bias, [batch, heads, T, T]) is captured too and added, so MPNet's scores and
    probabilities are its real ones (tested against its ``output_attentions``). Terms
    computed inside the attention module itself (BERT's ``relative_key``, DeBERTa) cannot
    be seen here; :func:`tap_problem` names them, so such models are refused up front.
    """

    def __init__(self, model, heads: int):
        import inspect

        found = _qk_modules(model)
        if found is None:
            raise PocketQAError(f"{type(model).__name__}: no per-layer query/key projections to hook")
        self.heads = heads
        self._q: list = [None] * len(found[0])
        self._k: list = [None] * len(found[1])
        self._bias: list = [None] * len(found[0])
        self._handles = []
        parents = {id(child): module for module in model.modules() for child in module.children()}
        for i, (q, k) in enumerate(zip(*found)):
            self._handles.append(q.register_forward_hook(self._saver(self._q, i)))
            self._handles.append(k.register_forward_hook(self._saver(self._k, i)))
            attention = parents.get(id(q))
            if attention is not None and "position_bias" in inspect.signature(attention.forward).parameters:
                hook = self._bias_saver(self._bias, i, inspect.signature(attention.forward))
                self._handles.append(attention.register_forward_pre_hook(hook, with_kwargs=True))

    @staticmethod
    def _saver(store: list, i: int):
        def hook(module, args, output):
            store[i] = output

        return hook

    @staticmethod
    def _bias_saver(store: list, i: int, signature):
        def hook(module, args, kwargs):
            # positional in transformers 4.4x and 5 alike; binding finds it either way
            store[i] = signature.bind_partial(*args, **kwargs).arguments.get("position_bias")

        return hook

    def attention(self, layer: int, mask, target: str = "scores"):
        """Layer ``layer``'s (1-based) attention from the last forward pass.

        Args:
            layer: 1-based layer index.
            mask: [batch, seq_len] bool, True for real tokens.
            target: "scores" (pre-softmax, no mask added) or "probs" (softmax over real keys).

        Returns:
            [batch, heads, seq_len, seq_len] float tensor.
        """
        import torch

        q, k = self._q[layer - 1], self._k[layer - 1]
        b, length, width = q.shape
        d = width // self.heads
        q = q.view(b, length, self.heads, d).transpose(1, 2)
        k = k.view(b, length, self.heads, d).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(d)
        if self._bias[layer - 1] is not None:
            scores = scores + self._bias[layer - 1].float()
        if target == "scores":
            return scores
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(torch.float32).min)
        return torch.softmax(scores, dim=-1)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
