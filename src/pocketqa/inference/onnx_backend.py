"""The ONNX Runtime backend: runs an exported QA graph on the CPU.

``QuestionAnswerer.from_pretrained`` picks it for a directory holding a ``.onnx`` graph
(``pocketqa export`` writes one). onnxruntime is imported only when a graph is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pocketqa.errors import PocketQAError, missing_extra

MODEL_FILE = "model.onnx"
QUANTIZER_PRODUCER = "onnx.quantize"  # the producer_name onnxruntime.quantization writes into a graph
OUTPUT_NAMES = ("start_logits", "end_logits")

# Fusions left out on the CPU because the fused kernel is slower than the ops it replaces.
# onnxruntime 1.32's CPU SkipLayerNormalization is 3-8x slower than the Add + Add +
# LayerNormalization it stands for on a [1, 170, 384] window (e.g. 334 vs 65 us on one
# thread, 297 vs 88 us on two; docs/benchmarks.md): its 12 nodes took 14-19 % of a MiniLM-L6
# int8 forward.
SLOW_CPU_FUSIONS = ("SkipLayerNormFusion",)

_ORT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise missing_extra("onnxruntime", "onnx") from None
    return onnxruntime


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's load/run exceptions (InvalidProtobuf, Fail, NoSuchFile...), which are not RuntimeErrors."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("InvalidProtobuf", "Fail", "NoSuchFile", "InvalidGraph", "InvalidArgument", "RuntimeException",
             "NotImplemented")
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) + (RuntimeError,)


def open_session(path: Path, threads: int | None = None, save_optimized: Path | None = None):
    """An ONNX Runtime CPU session for ``path``; a missing or unreadable file raises PocketQAError.

    ``save_optimized`` writes the graph as the session runs it (after its own fusions).
    """
    ort = _ort()
    if not path.is_file():
        raise PocketQAError(f"{path}: no such ONNX file; export one with: pocketqa export --model DIR --out DIR")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0 = onnxruntime's default (all physical cores)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are about graph internals, not user input
    if save_optimized is not None:
        options.optimized_model_filepath = str(save_optimized)
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"],
            disabled_optimizers=list(SLOW_CPU_FUSIONS),
        )
    except _ort_errors() as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PocketQAError(
            f"{path}: not a loadable ONNX model ({type(e).__name__}: {first}); "
            "the file is corrupt or incomplete, re-export it with pocketqa export"
        ) from None


class OnnxBackend:
    """Runs an exported QA graph on ONNX Runtime (the ``Backend`` protocol of backends.py).

    Attributes:
        input_names: The inputs the graph declares (only these are fed).
        path: The .onnx file.
        batch_invariant: False for a quantized graph, which then runs one window per call.
    """

    def __init__(self, session, path: Path):
        self.session = session
        self.path = path
        # onnxruntime.quantization names itself the producer. Its dynamic int8 graphs take
        # one activation scale per call, over every row and the padding, so a window's
        # answer would change with its neighbours (6.7 % of 600 dev answers differed
        # between batches of 32 and of 1 on the bundled model, at the same speed).
        self.batch_invariant = session.get_modelmeta().producer_name != QUANTIZER_PRODUCER
        inputs = session.get_inputs()
        self.input_names = [i.name for i in inputs]
        # Fused graphs may declare int32 ids; pad_batch produces int64.
        self._dtypes = {i.name: _ORT_DTYPES.get(i.type, np.int64) for i in inputs}
        outputs = {o.name for o in session.get_outputs()}
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise PocketQAError(
                f"{path}: graph has no output(s) {', '.join(missing)} (found {', '.join(sorted(outputs))}); "
                "re-export it with pocketqa export"
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int | None = None) -> OnnxBackend:
        """Opens one .onnx file; a missing or unreadable file raises PocketQAError naming it."""
        path = Path(path)
        return cls(open_session(path, threads), path)

    @classmethod
    def from_dir(cls, path: str | os.PathLike, threads: int | None = None) -> OnnxBackend:
        """Opens the graph of an exported directory: ``model.onnx``, else its only *.onnx file."""
        path = Path(path)
        graph = path / MODEL_FILE
        if not graph.is_file():
            found = sorted(p.name for p in path.glob("*.onnx"))
            if len(found) != 1:
                listed = ", ".join(found) if found else "none"
                raise PocketQAError(f"{path}: no {MODEL_FILE} (other .onnx files: {listed}); re-export with pocketqa export")
            graph = path / found[0]
        return cls.from_file(graph, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise PocketQAError(f"{self.path}: graph needs input(s) {', '.join(missing)} that the tokenizer did not produce")
        feed = {n: np.ascontiguousarray(batch[n], dtype=self._dtypes[n]) for n in self.input_names}
        try:
            start, end = self.session.run(list(OUTPUT_NAMES), feed)
        except _ort_errors() as e:
            shape = feed[self.input_names[0]].shape
            raise PocketQAError(f"{self.path}: onnxruntime failed on a batch of shape {shape}: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)
