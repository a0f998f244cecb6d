"""QuestionAnswerer: the one inference API used by the CLI, evaluation and the server.

Questions are cut into windows, the windows of many questions are sorted by length and
run in padded-per-batch groups through a backend (PyTorch, or ONNX Runtime for an
exported directory), and the logits are decoded per question (see decode.py).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketqa.inference.answers import finite, format_decoded, format_response
from pocketqa.inference.decode import check_align_to_words, check_scoring, decode_features
from pocketqa.inference.spans import Decoded
from pocketqa.errors import PocketQAError
from pocketqa.data.features import Features, WindowConfig, make_features
from pocketqa.data.model_inputs import length_sorted_batches, pad_batch
from pocketqa.inference.backends import Backend, TorchBackend
from pocketqa.inference.onnx_backend import OnnxBackend  # imports onnxruntime only when a graph is opened
from pocketqa.modeldir import domain_threshold, meta_threshold, meta_window, read_meta
from pocketqa.models import load_qa_model, load_tokenizer, new_head_weights, resolve_model
from pocketqa.data.squad import Example, unencodable_at
from pocketqa.data.tokenizer import TOKENIZER_FILE, WindowTokenizer

OVERLAP_CHUNK = 512  # examples per chunk when windowing and decoding overlap the model


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class QuestionAnswerer:
    """Extractive QA with abstention over any QA checkpoint.

    Example:
        >>> qa = QuestionAnswerer.from_pretrained("path/to/model")
        >>> qa("Who wrote it?", "It was written by Ann.")
        {'answer': 'Ann', 'start': 18, 'end': 21, 'score': 0.93, 'null_odds': -4.1}
    """

    def __init__(
        self,
        backend: Backend,
        tokenizer,
        window: WindowConfig = WindowConfig(),
        threshold: float = 0.0,
        n_best: int = 20,
        max_answer_length: int = 30,
        batch_size: int = 32,
        name: str = "",
        meta: dict | None = None,
        scoring: str = "logits",
        align_to_words: bool = False,
    ):
        _check_settings(threshold=threshold, n_best=n_best, max_answer_length=max_answer_length, batch_size=batch_size)
        self.backend = backend
        self.tokenizer = tokenizer
        self.window = window
        self.threshold = float(threshold)
        self.n_best = n_best
        self.max_answer_length = max_answer_length
        self.batch_size = batch_size
        self.name = name
        self.meta = meta or {}
        self.scoring = check_scoring(scoring)
        self.align_to_words = check_align_to_words(scoring, align_to_words)
        self.overlap: bool | None = None  # None: overlap windowing/decoding with the model on CUDA

    def with_backend(self, backend: Backend) -> QuestionAnswerer:
        """The same answerer on another backend: every tokenizer, window and decoding setting kept.

        What the parity check of ``pocketqa export`` compares: the PyTorch model and its ONNX
        graph must differ in the backend only, or the comparison measures the settings.

        Args:
            backend: The backend to run instead of ``self.backend``.

        Returns:
            A new QuestionAnswerer; ``self`` is unchanged.
        """
        other = type(self)(
            backend, self.tokenizer, window=self.window, threshold=self.threshold, n_best=self.n_best,
            max_answer_length=self.max_answer_length, batch_size=self.batch_size, name=self.name, meta=self.meta,
            scoring=self.scoring, align_to_words=self.align_to_words,
        )
        other.overlap = self.overlap
        return other

    def decoding_settings(self) -> dict:
        """The settings that turn logits into answers (two answerers with equal ones decode alike)."""
        return {"window": self.window, "scoring": self.scoring, "align_to_words": self.align_to_words,
                "n_best": self.n_best, "max_answer_length": self.max_answer_length}

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        device: str | None = None,
        threads: int | None = None,
        threshold: float | None = None,
        batch_size: int | None = None,
        scoring: str = "logits",
        n_best: int = 20,
        align_to_words: bool = False,
        max_answer_length: int = 30,
        allow_untrained_head: bool = False,
        domain: str | None = None,
        **window,
    ) -> QuestionAnswerer:
        """Loads a model directory, hub id, pip model or (None) the bundled default model.

        A directory holding ``model.onnx`` (from ``pocketqa export``) runs on ONNX Runtime;
        otherwise PyTorch. The no-answer threshold comes from ``threshold``, else the
        value calibrated for this scoring in ``pocketqa.json`` (for ``domain`` when given),
        else 0.0.

        Args:
            name_or_path: Model directory, hub id, ``pip:NAME``, or None for the default.
            device: "cpu", "cuda", "cuda:1"... (default: cuda when available). PyTorch only.
            threads: Intra-op CPU threads (PyTorch or ONNX Runtime).
            threshold: Abstain when null_odds > threshold.
            batch_size: Windows per forward pass (default: 64 on a GPU, 4 on a CPU, where
                padding windows of different lengths to one width costs more than the
                larger batch saves: 72 vs 41 questions/s for 4 vs 32 on 2 cores). int8
                ONNX graphs always run one window per call (``Backend.batch_invariant``).
            scoring: "logits" (utils_qa's rule, the default) or "pipeline" (the rule of
                transformers' removed QA pipeline; see decode.py).
            n_best: Candidates kept (per window and in all); with scoring="pipeline",
                n_best=1 gives the pipeline's top_k=1 answers.
            align_to_words: Widen answers to whole words, as the pipeline's default
                ``align_to_words=True``; only with scoring="pipeline".
            max_answer_length: Longest answer in tokens (utils_qa's 30; the pipeline's
                default max_answer_len was 15).
            allow_untrained_head: Answer even when the checkpoint has no QA head (a base
                encoder: transformers initialises the head at random, so the answers are
                noise); otherwise such a model is refused with a PocketQAError.
            domain: Use the threshold calibrated for this domain (``pocketqa calibrate --save
                --domain NAME``) instead of the default one; an unknown name raises a
                PocketQAError listing the known ones.
            **window: max_seq_length / doc_stride / max_query_length overrides.
        """
        check_align_to_words(check_scoring(scoring), align_to_words)  # before the slow model load
        _check_settings(threshold=threshold, n_best=n_best, max_answer_length=max_answer_length, batch_size=batch_size,
                        threads=threads)
        path = resolve_model(name_or_path)
        meta = read_meta(path) if Path(path).is_dir() else {}
        if threshold is not None and domain is not None:
            raise PocketQAError(f"threshold={threshold} and domain={domain!r} both set the no-answer threshold; give one")
        if threshold is None:  # before the slow model load: a bad entry or unknown domain fails fast
            threshold = (meta_threshold(path, meta, scoring) if domain is None
                         else domain_threshold(path, meta, domain, scoring))
        window_config = WindowConfig(**{**meta_window(path, meta), **window})
        if Path(path).is_dir() and any(Path(path).glob("*.onnx")):
            backend = OnnxBackend.from_dir(path, threads=threads)
            # tokenizers alone (no transformers, no torch): loads in 0.2 s instead of 2.4 s
            if (Path(path) / TOKENIZER_FILE).is_file():
                tokenizer = WindowTokenizer.from_dir(path, model_input_names=backend.input_names)
            else:
                tokenizer = load_tokenizer(path)
        else:
            tokenizer = load_tokenizer(path)
            device = device or _auto_device()
            model = load_qa_model(path, device=device)
            untrained = new_head_weights(model)
            if untrained and not allow_untrained_head:
                raise PocketQAError(
                    f"{path}: its QA head is untrained (weights newly initialised: {', '.join(untrained)}): "
                    "fine-tune it with pocketqa train, or pass --allow-untrained-head"
                )
            backend = TorchBackend(model, device=device, threads=threads)
        if batch_size is None:
            on_gpu = isinstance(backend, TorchBackend) and backend.device.type != "cpu"
            batch_size = 64 if on_gpu else 4
        return cls(
            backend,
            tokenizer,
            window=window_config,
            threshold=threshold,
            batch_size=batch_size,
            name=meta.get("name", Path(path).name if Path(path).is_dir() else path),
            meta=meta,
            scoring=scoring,
            n_best=n_best,
            align_to_words=align_to_words,
            max_answer_length=max_answer_length,
        )

    # -- core -------------------------------------------------------------------------

    def logits(self, features: Features, progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Runs every window through the backend in length-sorted, per-batch-padded batches.

        Returns per-window start and end logits (each trimmed to the window's length),
        in the order of ``features``.
        """
        starts: list[np.ndarray | None] = [None] * len(features)
        ends: list[np.ndarray | None] = [None] * len(features)
        invariant = getattr(self.backend, "batch_invariant", True)  # optional for backends users write
        batches = length_sorted_batches(features.lengths, self.batch_size if invariant else 1)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        bar = None
        if progress:  # counts windows (what the model runs on), not batches of uneven size
            from tqdm.auto import tqdm

            bar = tqdm(total=len(features), desc="predict", unit="window")
        for idx in batches:
            batch = pad_batch(features, idx, pad_id, self.backend.input_names)
            s, e = self.backend(batch)
            lengths = features.lengths[idx]
            # NaN would decode to an arbitrary span with NaN null odds (or fail in pipeline scoring).
            inside = np.arange(s.shape[1])[None, :] < lengths[:, None]
            bad = (np.isnan(s) | np.isnan(e)) & inside
            if bad.any():
                n = int(lengths[np.flatnonzero(bad.any(axis=1))[0]])
                raise PocketQAError(
                    f"{self.name or 'model'}: the model gave NaN logits for a window of {n} tokens; its weights "
                    "hold NaN or a half-precision run overflowed (load it in float32)"
                )
            for row, (w, n) in enumerate(zip(idx.tolist(), lengths.tolist())):
                starts[w] = s[row, :n]
                ends[w] = e[row, :n]
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return starts, ends

    def decode_examples(self, examples: Sequence[Example], progress: bool = False) -> list[Decoded]:
        """Windows, runs and decodes many examples at once (the batched path).

        Three steps, each public: ``windows``, ``logits`` and ``decode``. On a GPU
        (``overlap``), more than ``OVERLAP_CHUNK`` examples go in chunks: a helper thread
        windows the next chunk and decodes the previous one while the model runs on this
        one, so CPU work no longer adds to the GPU's (the answers are the same).
        """
        if not examples:
            return []
        if self.overlaps() and len(examples) > OVERLAP_CHUNK:
            return self._decode_overlapped(examples, progress)
        features = self.windows(examples)
        starts, ends = self.logits(features, progress=progress)
        return self.decode(examples, features, starts, ends)

    def overlaps(self) -> bool:
        """Whether windowing and decoding overlap the model: ``overlap``, or by default on CUDA."""
        if self.overlap is not None:
            return self.overlap
        device = getattr(self.backend, "device", None)
        return getattr(device, "type", "cpu") == "cuda"

    def windows(self, examples: Sequence[Example]) -> Features:
        """The model inputs of ``examples``: their windows under this answerer's tokenizer and window."""
        return make_features(examples, self.tokenizer, self.window, word_ids=self.align_to_words)

    def decode(
        self, examples: Sequence[Example], features: Features, starts: list[np.ndarray], ends: list[np.ndarray]
    ) -> list[Decoded]:
        """Per-question answers from the windows' logits, with this answerer's decoding settings.

        Args:
            examples: The questions ``features`` were made from (by ``windows``).
            features: Their windows.
            starts: Start logits per window, as ``logits`` returns them.
            ends: End logits per window.

        Returns:
            One decoding per example, in order.
        """
        return decode_features(
            examples, features, starts, ends, n_best=self.n_best, max_answer_length=self.max_answer_length,
            scoring=self.scoring, align_to_words=self.align_to_words,
        )

    def _decode_overlapped(self, examples: Sequence[Example], progress: bool) -> list[Decoded]:
        from concurrent.futures import ThreadPoolExecutor

        chunks = [examples[i : i + OVERLAP_CHUNK] for i in range(0, len(examples), OVERLAP_CHUNK)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(examples), desc="predict", unit="q")
        # One helper thread, first in first out: it windows chunk i + 1 before it decodes
        # chunk i - 1, while this thread runs chunk i (CUDA and the Rust tokenizer release
        # the GIL while they work).
        with ThreadPoolExecutor(1, thread_name_prefix="pocketqa-cpu") as helper:
            windowing = helper.submit(self.windows, chunks[0])
            decoding = []
            for i, chunk in enumerate(chunks):
                features = windowing.result()
                if i + 1 < len(chunks):
                    windowing = helper.submit(self.windows, chunks[i + 1])
                starts, ends = self.logits(features)
                decoding.append(helper.submit(self.decode, chunk, features, starts, ends))
                if bar is not None:
                    bar.update(len(chunk))
            out = [d for future in decoding for d in future.result()]
        if bar is not None:
            bar.close()
        return out

    def predict(
        self, examples: Sequence[Example], threshold: float | None = None, progress: bool = False
    ) -> tuple[dict[str, str], dict[str, float]]:
        """Predictions and null odds in the official formats ({qid: text}, {qid: na_prob})."""
        _check_settings(threshold=threshold)
        threshold = self.threshold if threshold is None else threshold
        decoded = self.decode_examples(examples, progress=progress)
        preds = {ex.id: d.answer(threshold) for ex, d in zip(examples, decoded)}
        odds = {ex.id: finite(d.null_odds) for ex, d in zip(examples, decoded)}
        return preds, odds

    # -- friendly call ----------------------------------------------------------------

    def __call__(
        self,
        question: str | Sequence[str],
        context: str | Sequence[str],
        top_k: int = 1,
        abstain: bool = True,
        threshold: float | None = None,
    ):
        """Answers one question (strings) or many (lists of equal length).

        Returns, per question, a dict ``{"answer", "start", "end", "score", "null_odds",
        "answerability"}`` (character offsets into the context; score is a softmax weight
        over the n-best, or with scoring="pipeline" the pipeline's span probability) or,
        with ``top_k > 1``, a list of up to top_k such dicts. ``answerability`` is the
        question's: at least 0.5 exactly when null_odds <= threshold. When ``abstain`` is
        true and null_odds > threshold, the first answer is the abstention: answer "" with
        start = end = None and score = 1 - answerability (above 0.5).
        """
        single = isinstance(question, str)
        questions = [question] if single else list(question)
        contexts = [context] * len(questions) if isinstance(context, str) else list(context)
        _check_settings(top_k=top_k, threshold=threshold)
        examples = _examples(questions, contexts)
        threshold = self.threshold if threshold is None else threshold
        results = [self.format_decoded(d, top_k, abstain, threshold) for d in self.decode_examples(examples)]
        return results[0] if single else results

    def respond(self, question: str, context: str, top_k: int = 1, abstain: bool = True,
                threshold: float | None = None) -> dict:
        """One question answered in the shape of the HTTP API's response (``format_response``)."""
        _check_settings(top_k=top_k, threshold=threshold)
        threshold = self.threshold if threshold is None else threshold
        (d,) = self.decode_examples(_examples([question], [context]))
        return self.format_response(d, top_k, abstain, threshold)

    # The formatting every surface shares (pocketqa.inference.answers), reachable from the class.
    format_response = staticmethod(format_response)
    format_decoded = staticmethod(format_decoded)

    def records(self, examples: Sequence[Example], decoded: Sequence[Decoded], threshold: float | None = None) -> list[dict]:
        """One row per question, as ``predict`` writes JSON Lines and Parquet.

        Args:
            examples: The questions.
            decoded: Their decodings (``decode_examples``), in the same order.
            threshold: The no-answer threshold (default: this answerer's).

        Returns:
            Dicts with ``id, answer, start, end, score, null_odds, answerability, abstained``:
            the decision (answer "" and start = end = None when it abstains) with the
            fields of ``format_decoded``.
        """
        _check_settings(threshold=threshold)
        threshold = self.threshold if threshold is None else threshold
        rows = []
        for ex, d in zip(examples, decoded, strict=True):
            best = self.format_decoded(d, 1, True, threshold)
            rows.append({"id": ex.id, **best, "abstained": best["start"] is None})
        return rows


def _examples(questions: Sequence[str], contexts: Sequence[str]) -> list[Example]:
    """Questions and their passages as examples (ids "0", "1", ...), refusing empty or invalid text."""
    if len(questions) != len(contexts):
        raise PocketQAError(f"got {len(questions)} questions but {len(contexts)} contexts")
    for i, (q, c) in enumerate(zip(questions, contexts)):
        if not isinstance(q, str) or not q.strip():
            raise PocketQAError(f"question {i}: empty question")
        if not isinstance(c, str) or not c.strip():
            raise PocketQAError(f"question {i}: empty context")
        for field, text in (("question", q), ("context", c)):
            if (bad := unencodable_at(text)) is not None:
                raise PocketQAError(f"question {i}: the {field} holds a lone surrogate at char {bad} (not valid text)")
    return [Example(id=str(i), title="", context=c, question=q) for i, (q, c) in enumerate(zip(questions, contexts))]


def _check_settings(threshold: float | None = None, **counts) -> None:
    """Raises one PocketQAError naming every bad setting: ``threshold`` must be a finite number
    and each of ``counts`` a whole number >= 1 (None: not given, nothing to check).

    n_best=0 would silently abstain on every question, and a non-number fails deep in decoding.
    """
    problems = [f"{name} must be a whole number >= 1, found {value!r}" for name, value in counts.items()
                if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1)]
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
                                  or not math.isfinite(threshold)):
        problems.append(f"threshold must be a finite number, found {threshold!r}")
    if problems:
        raise PocketQAError("; ".join(problems))
