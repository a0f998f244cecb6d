"""Masked language models for augmentation: loading them, candidate words.

- ``load_masked_lm`` loads any HF masked-LM directory or hub id (AutoModelForMaskedLM)
  and says so when its LM head is missing (randomly initialised).
- ``MaskedLMCandidates`` answers ``pocketqa.augment.edits`` candidate requests in batches: one
  row per masked word, many rows per forward pass, the vocabulary projection applied
  only at the masked positions. Words of several WordPieces get nearest neighbours in
  word vectors instead (``WordVectors``, GloVe text format) or, without a vector file,
  in the MLM's own input embeddings averaged over the word's pieces.

A masked LM for an encoder that ships without its head is fitted by
``pocketqa.recipes.mlm_head.fit_mlm_head`` (``pocketqa mlm-head``).
"""

from __future__ import annotations

import os
import time
import warnings
from bisect import bisect_left
from collections.abc import Sequence
from pathlib import Path

from pocketqa.augment.edits import STOP_WORDS
from pocketqa.errors import ConfigError, PocketQAError
from pocketqa.models import check_device, load_kwargs, load_tokenizer, resolve_model
from pocketqa.augment.runner import select_paragraphs, write_augmented

Span = tuple[int, int]


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def head_module(model):
    """The LM head as one module applied to hidden states, or None when the model has no single one.

    BertForMaskedLM has ``bert`` + ``cls``; RobertaForMaskedLM ``roberta`` + ``lm_head``.
    Asking the model for its children avoids a table of architecture names.
    """
    others = [m for _, m in model.named_children() if m is not model.base_model]
    return others[0] if len(others) == 1 else None


def load_masked_lm(name_or_path: str, device: str | None = None, dtype=None):
    """Loads a masked LM and its fast tokenizer, in eval mode, on ``device``.

    Args:
        name_or_path: A model directory, hub id or ``pip:NAME`` (see ``models.resolve_model``).
        device: ``cpu``, ``cuda`` ... (default: cuda when available).
        dtype: Optional torch dtype for the weights (e.g. torch.float16 on a GPU).

    Returns:
        ``(model, tokenizer, head_was_missing)``. A checkpoint without MLM head weights
        (a plain encoder) loads with a random head; this is warned about, since its
        candidates are then noise (fit one with ``pocketqa mlm-head``).

    Raises:
        PocketQAError: When nothing loadable is found at ``name_or_path``.
    """
    import torch
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging


    path = resolve_model(name_or_path)
    kwargs = {"output_loading_info": True, **load_kwargs(dtype)}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the missing-head report is ours to make, in one line
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise PocketQAError(
            f"cannot load a masked LM from {name_or_path!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
            "pass a masked-LM directory or hub id (e.g. bert-base-uncased) or fit one with `pocketqa mlm-head`"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = load_tokenizer(path)
    prefix = model.base_model_prefix + "."
    # Head weights outside the encoder that the checkpoint lacked; the decoder is tied to the
    # input embeddings (and its bias aliased), so its keys may be reported missing harmlessly.
    head_missing = any(
        not k.startswith((prefix, "embeddings.", "encoder.")) and ".decoder." not in k for k in info["missing_keys"]
    )
    if head_missing:
        warnings.warn(
            f"{name_or_path}: the checkpoint has no masked-LM head weights, so a random head was built and its "
            f"candidates are noise; fit one with `pocketqa mlm-head --encoder {name_or_path} --data train.json --out DIR`",
            stacklevel=2,
        )
    device = device or default_device()
    check_device(device)
    model.to(torch.device(device))
    model.eval()
    return model, tokenizer, head_missing


def special_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sentence ([CLS] / [SEP] for BERT)."""
    if tokenizer.mask_token_id is None:
        raise PocketQAError(f"{tokenizer.name_or_path}: the tokenizer has no mask token; a masked LM is needed")
    template = tokenizer(tokenizer.mask_token, add_special_tokens=True)["input_ids"]
    at = template.index(tokenizer.mask_token_id)
    return template[:at], template[at + 1 :]


def _whole_word_mask(tokenizer, size: int):
    """Bool tensor over the output vocabulary: True for alphabetic whole-word tokens.

    Excludes subword pieces (``##ing``), special tokens, numbers, punctuation, single
    letters and stop words (see ``is_candidate_word``).
    """
    import torch

    tokens = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    special = set(tokenizer.all_special_ids)
    mask = torch.zeros(size, dtype=torch.bool)
    for i, tok in enumerate(tokens):
        if tok is not None and i not in special and is_candidate_word(tok):
            mask[i] = True
    return mask


def is_candidate_word(word: str) -> bool:
    """Whether a vocabulary entry may replace a word: alphabetic, two letters or more, not a stop word.

    Single letters ("h", "q") are whole-word tokens too, and a weak MLM ranks frequent words
    ("the", "and") high everywhere; a content word replaced by either is noise, not a paraphrase.
    """
    return len(word) > 1 and word.isalpha() and word.lower() not in STOP_WORDS


class WordVectors:
    """Word vectors (GloVe text format: ``word v1 v2 ...`` per line) for nearest-neighbour candidates.

    Every word can be looked up; only ``is_candidate_word`` words are offered as candidates.
    """

    def __init__(self, words: list[str], vectors, device: str = "cpu"):
        import torch

        vectors = torch.as_tensor(vectors, dtype=torch.float32)
        self.index = {w: i for i, w in enumerate(words)}
        self.words = words
        self.unit = torch.nn.functional.normalize(vectors, dim=1).to(device)
        self.candidate_ids = torch.tensor([i for i, w in enumerate(words) if is_candidate_word(w)], dtype=torch.long, device=device)

    @classmethod
    def load(cls, path: str | os.PathLike, max_words: int | None = None, device: str = "cpu") -> WordVectors:
        """Reads a GloVe (or header-led word2vec) text file; ``max_words`` keeps the first (most frequent) ones.

        Raises:
            PocketQAError: When the file is missing or a line does not parse, naming the line.
        """
        import numpy as np

        path = Path(path)
        if not path.is_file():
            raise PocketQAError(f"{path}: no such word-vector file (expected GloVe text: 'word v1 v2 ...' per line)")
        words: list[str] = []
        rows: list = []
        dim = None
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                parts = line.rstrip("\n").rstrip().split(" ")
                if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec text header "count dim"
                if len(parts) < 2:
                    continue
                try:
                    row = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise PocketQAError(f"{path}, line {n}: expected 'word v1 v2 ...' with numbers") from None
                if dim is None:
                    dim = len(row)
                elif len(row) != dim:
                    raise PocketQAError(f"{path}, line {n}: {len(row)} numbers, expected {dim} as on the first line")
                words.append(parts[0])
                rows.append(row)
                if max_words is not None and len(words) >= max_words:
                    break
        if not words:
            raise PocketQAError(f"{path}: no word vectors found")
        return cls(words, np.stack(rows), device=device)

    def neighbours(self, words: Sequence[str], k: int) -> list[list[str]]:
        """Top-k cosine neighbours of each word among alphabetic words, excluding the word itself.

        Words not in the vectors get no candidates.
        """
        import torch

        result: list[list[str]] = [[] for _ in words]
        found = [(n, self.index.get(w, self.index.get(w.lower()))) for n, w in enumerate(words)]
        found = [(n, i) for n, i in found if i is not None]
        if not found:
            return result
        queries = self.unit[torch.tensor([i for _, i in found], device=self.unit.device)]
        sims = queries @ self.unit[self.candidate_ids].T
        top = sims.topk(min(k + 1, sims.shape[1]), dim=1).indices.cpu().tolist()
        for (n, _), ids in zip(found, top):
            cands = [self.words[self.candidate_ids[j]] for j in ids]
            result[n] = sorted(c for c in cands if c.lower() != words[n].lower())[:k]
        return result


class MaskedLMCandidates:
    """Candidate replacement words from a masked LM, batched over many words and paragraphs.

    For a word that is one WordPiece: mask it in a window of ``max_length`` tokens
    around it and take the top-k whole-word predictions (TinyBERT's ``_word_augment``).
    For a word of several pieces: top-k nearest neighbours in ``word_vectors`` when given,
    else in the MLM's input embeddings, the word represented by the mean of its pieces'
    embeddings and compared by cosine with whole-word vocabulary entries (context-free,
    so cached per word). Candidate lists are sorted alphabetically: sampling then depends
    only on the top-k set, not on tiny numerical differences between batch shapes.
    """

    def __init__(
        self,
        model,
        tokenizer,
        top_k: int = 15,
        batch_size: int = 256,
        max_length: int = 128,
        word_vectors: WordVectors | None = None,
    ):
        import torch

        if max_length < 8:
            raise ConfigError(f"max_length must be >= 8 tokens, found {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.batch_size = batch_size
        self.max_length = max_length
        self.word_vectors = word_vectors
        self.device = next(model.parameters()).device
        self._head = head_module(model)
        vocab_size = model.get_output_embeddings().weight.shape[0]
        allowed = _whole_word_mask(tokenizer, vocab_size)
        self._penalty = torch.where(allowed, 0.0, float("-inf")).to(self.device)
        self._tokens = tokenizer.convert_ids_to_tokens(list(range(min(vocab_size, len(tokenizer)))))
        self._allowed_ids = allowed.nonzero().squeeze(1).to(self.device)
        # The tokenizer's own special-token template around a single sentence ([CLS] x [SEP]).
        self._prefix, self._suffix = special_template(tokenizer)
        self._token_types = "token_type_ids" in tokenizer.model_input_names
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._unit_embeddings = None
        self._nn_cache: dict[tuple[int, ...], list[str]] = {}
        self.stats = {"mlm_rows": 0, "mlm_batches": 0, "nn_words": 0, "mlm_seconds": 0.0}

    def candidates_many(self, requests: Sequence[tuple[str, Sequence[Span]]]) -> list[list[list[str]]]:
        """One candidate list per span of each ``(text, spans)`` request (see class doc)."""
        results: list[list[list[str]]] = [[[] for _ in spans] for _, spans in requests]
        if not requests:
            return results
        enc = self.tokenizer(
            [text for text, _ in requests], add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )  # verbose=False: long paragraphs are windowed below, the "longer than maximum" warning is moot
        rows = []  # (request, span, ids, mask position, masked token id)
        multi = []  # (request, span, piece ids, word)
        budget = self.max_length - len(self._prefix) - len(self._suffix)
        for r, (text, spans) in enumerate(requests):
            ids = enc["input_ids"][r]
            offsets = enc["offset_mapping"][r]
            starts = [o[0] for o in offsets]
            for s, (ws, we) in enumerate(spans):
                first = bisect_left(starts, ws)
                last = first
                while last < len(ids) and offsets[last][0] < we:
                    last += 1
                pieces = ids[first:last]
                if not pieces:
                    continue
                if len(pieces) == 1 and tuple(offsets[first]) == (ws, we):
                    # Centre a window of `budget` tokens on the word; long paragraphs are cut.
                    lo = max(0, min(first - budget // 2, len(ids) - budget))
                    window = list(ids[lo : lo + budget])
                    window[first - lo] = self.tokenizer.mask_token_id
                    rows.append((r, s, self._prefix + window + self._suffix, len(self._prefix) + first - lo, pieces[0]))
                else:
                    multi.append((r, s, tuple(pieces), text[ws:we]))
        self._predict_rows(rows, requests, results)
        self._neighbour_words(multi, results)
        return results

    def _predict_rows(self, rows, requests, results) -> None:
        import torch

        start_time = time.perf_counter()
        rows = sorted(rows, key=lambda row: len(row[2]))  # similar lengths per batch: little padding
        k = self.top_k
        with torch.inference_mode():
            for b in range(0, len(rows), self.batch_size):
                batch = rows[b : b + self.batch_size]
                width = max(len(row[2]) for row in batch)
                input_ids = torch.full((len(batch), width), self._pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for i, row in enumerate(batch):
                    input_ids[i, : len(row[2])] = torch.tensor(row[2])
                    attention[i, : len(row[2])] = 1
                inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention.to(self.device)}
                if self._token_types:
                    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
                positions = torch.tensor([row[3] for row in batch], device=self.device)
                arange = torch.arange(len(batch), device=self.device)
                if self._head is not None:
                    hidden = self.model.base_model(**inputs)[0]
                    logits = self._head(hidden[arange, positions])
                else:
                    logits = self.model(**inputs).logits[arange, positions]
                logits = logits.float() + self._penalty
                top = logits.topk(min(k + 1, logits.shape[1]), dim=1).indices.cpu().tolist()
                for row, ids in zip(batch, top):
                    r, s = row[0], row[1]
                    text, spans = requests[r]
                    word = text[spans[s][0] : spans[s][1]].lower()
                    cands = [self._tokens[i] for i in ids if i != row[4] and i < len(self._tokens)]
                    results[r][s] = sorted(c for c in cands if c.lower() != word)[:k]
                self.stats["mlm_batches"] += 1
        self.stats["mlm_rows"] += len(rows)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats["mlm_seconds"] += time.perf_counter() - start_time

    def _neighbour_words(self, multi, results) -> None:
        if not multi:
            return
        self.stats["nn_words"] += len(multi)
        if self.word_vectors is not None:
            words = [m[3] for m in multi]
            for (r, s, _, _), cands in zip(multi, self.word_vectors.neighbours(words, self.top_k)):
                results[r][s] = cands
            return
        todo = list({m[2]: m[3] for m in multi if m[2] not in self._nn_cache}.items())
        if todo:
            for (pieces, word), cands in zip(todo, self._embedding_neighbours(todo)):
                self._nn_cache[pieces] = cands
        for r, s, pieces, word in multi:
            results[r][s] = [c for c in self._nn_cache[pieces] if c.lower() != word.lower()]

    def _embedding_neighbours(self, todo: list[tuple[tuple[int, ...], str]]) -> list[list[str]]:
        import torch

        embeddings = self.model.get_input_embeddings().weight
        if self._unit_embeddings is None:
            self._unit_embeddings = torch.nn.functional.normalize(embeddings[self._allowed_ids].float(), dim=1)
        with torch.inference_mode():
            queries = torch.stack(
                [embeddings[torch.tensor(pieces, device=embeddings.device)].float().mean(0) for pieces, _ in todo]
            )
            sims = torch.nn.functional.normalize(queries, dim=1) @ self._unit_embeddings.T
            top = sims.topk(min(self.top_k + 1, sims.shape[1]), dim=1).indices
            ids = self._allowed_ids[top].cpu().tolist()
        out = []
        for (_, word), row in zip(todo, ids):
            cands = [self._tokens[i] for i in row]
            out.append(sorted(c for c in cands if c.lower() != word.lower())[: self.top_k])
        return out


def augment_with_mlm(
    data: str | os.PathLike,
    out: str | os.PathLike,
    mlm: str,
    config,
    word_vectors: str | os.PathLike | None = None,
    device: str | None = None,
    batch_size: int = 256,
    max_length: int = 128,
    progress: bool = True,
) -> dict:
    """``pocketqa augment``: validates the data, loads the MLM (fp16 on a GPU), writes the copies.

    Args:
        data: SQuAD JSON to augment.
        out: Output SQuAD JSON (.json / .json.gz).
        mlm: Masked-LM directory, hub id or ``pip:NAME``.
        config: An ``augment.AugmentConfig``.
        word_vectors: Optional GloVe text file for words of several WordPieces.
        device: cpu / cuda (default: cuda when available).
        batch_size: Masked rows per forward pass.
        max_length: Tokens of context around each masked word.

    Returns:
        The counts of ``augment.write_augmented`` plus MLM statistics and timings.
    """
    import torch


    problems = []
    if batch_size < 1:
        problems.append(f"--batch-size must be >= 1, found {batch_size}")
    if max_length < 8:
        problems.append(f"--max-length must be >= 8, found {max_length}")
    if problems:
        raise ConfigError("; ".join(problems))
    start = time.perf_counter()
    paragraphs = select_paragraphs(data, config)  # a malformed file fails before the model loads
    device = device or default_device()
    check_device(device)  # before the word vectors go to it, not only when the MLM loads
    vectors = WordVectors.load(word_vectors, device=device) if word_vectors else None
    dtype = torch.float16 if torch.device(device).type == "cuda" else None
    model, tokenizer, _ = load_masked_lm(mlm, device=device, dtype=dtype)
    source = MaskedLMCandidates(
        model, tokenizer, top_k=config.candidates, batch_size=batch_size, max_length=max_length, word_vectors=vectors
    )
    meta = {"source": Path(data).name, "mlm": str(mlm), "word_vectors": Path(word_vectors).name if word_vectors else None}
    stats = write_augmented(paragraphs, out, source, config, progress=progress, meta=meta)
    stats.update(source.stats, seconds=round(time.perf_counter() - start, 1))
    return stats
