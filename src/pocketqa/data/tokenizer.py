"""The part of a fast tokenizer that windowing needs, on the ``tokenizers`` library alone.

Windows are cut by the Rust tokenizer under every transformers fast tokenizer
(``tokenizer.backend_tokenizer``): pair encoding with "only_second" truncation and a
stride, overflowing windows, offsets and sequence ids. ``WindowTokenizer`` holds that
backend plus the three facts windowing needs from the Python side (the CLS and padding
ids, and whether the model takes token type ids).

It is built from a transformers tokenizer (``as_window_tokenizer``) or straight from a
saved ``tokenizer.json`` (``WindowTokenizer.from_dir``). The second way imports neither
transformers nor torch, so an exported ONNX model loads in a fraction of a second (the
bundled model: 0.2 s instead of 2.4 s, nearly all of it transformers' import).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from pocketqa.errors import ConfigError, PocketQAError

TOKENIZER_FILE = "tokenizer.json"
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")


class WindowTokenizer:
    """A ``tokenizers.Tokenizer`` with the CLS / pad ids and model input names of its model.

    Attributes:
        backend: The Rust tokenizer (its truncation setting is set per call and restored).
        cls_token_id: Id of the "no answer" token, or None (then position 0 is used).
        pad_token_id: Id used to pad batches, or None.
        model_input_names: Inputs the model takes (token_type_ids only if listed).
    """

    is_fast = True

    def __init__(self, backend, cls_token_id: int | None, pad_token_id: int | None, model_input_names: Sequence[str]):
        self.backend = backend
        self.cls_token_id = cls_token_id
        self.pad_token_id = pad_token_id
        self.model_input_names = list(model_input_names)

    @classmethod
    def from_dir(cls, path: str | os.PathLike, model_input_names: Sequence[str] | None = None) -> WindowTokenizer:
        """Loads ``tokenizer.json`` and the special tokens of ``tokenizer_config.json``.

        Args:
            path: A saved tokenizer directory (what ``save_pretrained`` writes).
            model_input_names: The model's inputs (e.g. an ONNX graph's); default: the
                tokenizer config's ``model_input_names``, else input_ids, token_type_ids,
                attention_mask.
        """
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            backend = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise PocketQAError(f"{path / TOKENIZER_FILE}: cannot load the tokenizer ({str(e).splitlines()[0]})") from None
        config: dict = {}
        for name in reversed(_CONFIG_FILES):  # tokenizer_config.json wins over the older map
            f = path / name
            if f.is_file():
                try:
                    config.update(json.loads(f.read_text(encoding="utf-8")))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise PocketQAError(f"{f}: invalid JSON ({e})") from None
        names = model_input_names or config.get("model_input_names") or ["input_ids", "token_type_ids", "attention_mask"]
        return cls(backend, _token_id(backend, config.get("cls_token")), _token_id(backend, config.get("pad_token")), names)

    def encode(self, texts: Sequence, add_special_tokens: bool = True, max_length: int | None = None, stride: int = 0):
        """Encodes texts or (question, context) pairs, without padding.

        With ``max_length``, pairs are cut "only_second" into windows overlapping by
        ``stride`` tokens. Returns, per input, the list of its windows (``tokenizers.Encoding``).
        """
        backend = self.backend
        truncation, padding = backend.truncation, backend.padding
        try:
            if max_length is None:
                backend.no_truncation()
            else:
                backend.enable_truncation(max_length, stride=stride, strategy="only_second", direction="right")
            backend.no_padding()
            encodings = backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        except BaseException as e:  # noqa: BLE001 - e.g. a question too long to leave room for the context
            # A question that leaves room for the context but not for more than ``stride``
            # tokens makes the Rust truncation panic: pyo3's PanicException is a BaseException.
            if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
                raise
            raise ConfigError(f"tokenizer: {str(e).splitlines()[0]}{self._crowded(texts, max_length, stride)}") from None
        finally:
            _restore(backend, truncation, padding)
        return [[e, *e.overflowing] for e in encodings]

    def _crowded(self, texts: Sequence, max_length: int | None, stride: int) -> str:
        """Names the first pair whose question leaves at most ``stride`` context tokens, if any.

        Called while ``encode`` fails; its ``finally`` restores the truncation turned off here.
        """
        if max_length is None:
            return ""
        room = max_length - self.backend.num_special_tokens_to_add(True)
        self.backend.no_truncation()
        for i, text in enumerate(texts):
            if isinstance(text, (tuple, list)):
                n = len(self.backend.encode(text[0], add_special_tokens=False).ids)
                if room - n <= stride:
                    return (f"; input {i}: the question {text[0][:60]!r} takes {n} tokens, leaving {room - n} of the "
                            f"{max_length}-token window for the context, not more than doc_stride {stride}: "
                            "lower max_query_length or doc_stride, or raise max_seq_length")
        return ""


def as_window_tokenizer(tokenizer) -> WindowTokenizer:
    """A WindowTokenizer for a transformers fast tokenizer (or the argument, if it is one)."""
    if isinstance(tokenizer, WindowTokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; pocketqa needs character offsets "
            "(load it with use_fast=True or save a tokenizer.json)"
        )
    return WindowTokenizer(backend, tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.model_input_names)


def _token_id(backend, token) -> int | None:
    if isinstance(token, dict):  # a serialised AddedToken
        token = token.get("content")
    return backend.token_to_id(token) if isinstance(token, str) else None


def _restore(backend, truncation: dict | None, padding: dict | None) -> None:
    if truncation is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(**truncation)
    if padding is None:
        backend.no_padding()
    else:
        backend.enable_padding(**padding)
