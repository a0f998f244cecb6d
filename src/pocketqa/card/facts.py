"""What a model directory says about its model: parameters, backend, architecture, stored metrics.

Everything is read from the directory itself (config.json, safetensors headers, ONNX graphs,
pocketqa.json read tolerantly: any key may be missing); no weights are loaded.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from pocketqa.errors import PocketQAError
from pocketqa.modeldir import SCORE_KEYS, read_json_file

# The scores a card shows: (label in the results table, key in the scores dict).
SCORE_ROWS = tuple(zip(("EM", "F1", "HasAns EM", "HasAns F1", "NoAns EM", "NoAns F1"), SCORE_KEYS))

# Operators that only a quantized ONNX graph holds (onnxruntime.quantization output).
_INT8_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "ConvInteger"}


def read_config(model_dir: Path) -> dict:
    """config.json of the model ({} when absent: an ONNX-only directory may lack it)."""
    return json_object(read_json_file(model_dir / "config.json"), model_dir / "config.json")


def json_object(value, path: Path) -> dict:
    """``value`` (a parsed JSON file of the model dir) when it is an object, else one clear error.

    Args:
        value: The parsed file.
        path: Where it came from (named in the error).
    """
    if not isinstance(value, dict):
        raise PocketQAError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (u64 little-endian length, then JSON)."""
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > path.stat().st_size - 8:
                raise ValueError(f"header length {size} is past the end of the file")
            header = json.loads(fh.read(size))
    except (struct.error, ValueError) as e:  # truncated, or not safetensors at all
        raise PocketQAError(f"{path}: not a readable safetensors file ({e}); copy or save it again") from None
    if not isinstance(header, dict):
        raise PocketQAError(f"{path}: not a readable safetensors file (header is not a JSON object)")
    return header


def count_parameters(model_dir: Path, meta: dict) -> tuple[int, bool] | None:
    """Parameter count, and whether it is approximate; None when nothing tells.

    Exact from the safetensors headers (no weights are loaded), else from a
    ``parameters`` entry of pocketqa.json (top level or its "export" section), else
    approximate from the initializers of an ONNX graph (when onnx is installed: an int8
    graph also holds per-channel scales, a few parameters more than the model).
    """
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        total = 0
        for f in files:
            header = _safetensors_header(f)
            total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
        return total, False
    export = meta.get("export") if isinstance(meta.get("export"), dict) else {}
    for section in (meta, export):
        value = section.get("parameters")
        if isinstance(value, int) and not isinstance(value, bool):
            return value, False
    onnx_files = sorted(model_dir.glob("*.onnx"))
    if onnx_files:
        try:
            import onnx

            graph = onnx.load(str(onnx_files[0]), load_external_data=False).graph
        except Exception:  # no onnx package, or a graph only the runtime can judge
            return None
        total = sum(math.prod(t.dims) for t in graph.initializer if len(t.dims) >= 1 and math.prod(t.dims) > 1)
        return total, True
    return None


def describe_backend(model_dir: Path, meta: dict) -> str:
    """"PyTorch (safetensors)", "ONNX Runtime, int8" or "ONNX Runtime, fp32".

    A directory with a ``*.onnx`` file runs on ONNX Runtime (as QuestionAnswerer decides).
    The precision comes from pocketqa.json's "export" section when it says, else from the
    graph's operators (when the onnx package is installed), else it is left unnamed.
    """
    onnx_files = sorted(model_dir.glob("*.onnx"))
    if not onnx_files:
        return "PyTorch (safetensors)" if any(model_dir.glob("*.safetensors")) else "PyTorch"
    export = meta.get("export") if isinstance(meta.get("export"), dict) else {}
    precision = _precision_from_export(export)
    if precision is None:
        precision = _precision_from_graph(onnx_files[0])
    return f"ONNX Runtime, {precision}" if precision else "ONNX Runtime"


def _precision_from_export(export: dict) -> str | None:
    for key in ("precision", "dtype", "quantization", "quantize", "int8"):
        if key not in export:
            continue
        value = export[key]
        if isinstance(value, bool):
            return "int8" if value else "fp32"
        if isinstance(value, str) and value:
            return "int8" if "int8" in value.lower() or "dynamic" in value.lower() else value.lower()
        if isinstance(value, dict):  # e.g. {"mode": "dynamic", "weight_type": "int8"}
            return "int8"
    return None


def _precision_from_graph(path: Path) -> str | None:
    try:
        import onnx
    except ImportError:
        return None
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # an unreadable graph is reported by the runtime, not by the card
        return None
    return "int8" if any(node.op_type in _INT8_OPS for node in graph.node) else "fp32"


def describe_architecture(config: dict, parameters: tuple[int, bool] | None) -> str:
    """One line: "bert, 6 layers, hidden 384, 12 heads, 22.7M parameters"."""
    parts = [str(config.get("model_type", "unknown architecture"))]
    for key, label in (
        ("num_hidden_layers", "layers"),
        ("hidden_size", "hidden"),
        ("num_attention_heads", "heads"),
        ("intermediate_size", "intermediate"),
    ):
        if key in config:
            value = config[key]
            parts.append(f"{value} {label}" if label == "layers" else f"{label} {value}")
    if parameters is not None:
        count, approximate = parameters
        parts.append(f"{'about ' if approximate else ''}{format_count(count)} parameters")
    return ", ".join(parts)


def format_count(n: int) -> str:
    """1234 -> "1.2k", 22_713_216 -> "22.7M"."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)
