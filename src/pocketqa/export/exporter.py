"""ONNX export and int8 quantization (the parity check is parity.py, the runtime inference/onnx_backend.py).

``export_model`` turns a PyTorch QA checkpoint into a directory that
``QuestionAnswerer.from_pretrained`` loads onto ONNX Runtime: one graph ``model.onnx``
(fp32, or int8 with ``int8=True``), the tokenizer, ``config.json``, ``pocketqa.json``
(window and threshold copied from the source) and ``export.json`` (sizes, settings,
parity results).

The graph comes from the TorchScript exporter (``torch.onnx.export(dynamo=False)``),
which traces BERT-style encoders reliably; the batch and sequence axes stay dynamic.
Optional offline fusion uses ``onnxruntime.transformers.optimizer`` where it has rules
for the model type (BERT: fused Attention, EmbedLayerNorm, BiasGelu, LayerNormalization);
other types (MobileBERT) are left to ONNX Runtime's own session-time optimisation.
Residual adds are deliberately *not* fused into SkipLayerNormalization, offline or at
session time (see ``SLOW_CPU_FUSIONS``).
Every graph is checked against PyTorch before it is kept (``parity.compare_answerers``):
fp32 must reproduce the logits within ``FP32_TOLERANCE`` and give identical answers; for
int8 the share of identical answers and the EM/F1 change are measured and stored.

optimum could do the export, but it pins transformers < 4.58 and pocketqa supports 5.x.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pocketqa import __version__
from pocketqa.data.features import WindowConfig, make_features
from pocketqa.data.model_inputs import pad_batch
from pocketqa.data.squad import Example, write_json_atomic
from pocketqa.errors import PocketQAError, missing_extra
from pocketqa.export.parity import FP32_TOLERANCE, SAMPLE_EXAMPLES, compare_answerers, fp32_ok
from pocketqa.inference.answerer import QuestionAnswerer
from pocketqa.inference.backends import TorchBackend, model_input_names
from pocketqa.inference.onnx_backend import MODEL_FILE, OUTPUT_NAMES, SLOW_CPU_FUSIONS, OnnxBackend, _ort
from pocketqa.modeldir import meta_threshold, meta_window, read_meta, write_meta
from pocketqa.models import dir_size_mb, load_qa_model, load_tokenizer, resolve_model

FP32_FILE = "model_fp32.onnx"
EXPORT_FILE = "export.json"
DEFAULT_OPSET = 17  # first opset with LayerNormalization; onnxruntime >= 1.14 runs it
MIN_OPSET = 11  # below it the exporter cannot express BERT's dynamic slices

# int8 defaults, chosen by measurement (bench/int8_accuracy.py --sweep; pretrained MiniLM-L6
# encoder, 150 SQuAD 2.0 dev questions, answers identical to PyTorch): per-channel scales
# 64% vs 39% per-tensor; 7-bit reduce_range lowered it (58% / 19%) and only helps old
# AVX2-only CPUs where u8s8 products can saturate; keeping the QA head MatMul (hidden x 2
# weights: no size or speed cost) in fp32 raised it to 69%. Re-check on each fine-tuned model.
INT8_PER_CHANNEL = True
INT8_REDUCE_RANGE = False
INT8_KEEP_HEAD_FP32 = True

# -- export -----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet():
    """Silences the exporter's and optimizer's expected chatter (tracer warnings, fusion logs).

    The tracer warns about Python bools taken from shapes (transformers' mask helpers);
    they are harmless here because every graph is checked against PyTorch afterwards.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _graph_module(model, input_names: list[str]):
    """Wraps the HF model as positional inputs -> (start_logits, end_logits) for tracing."""
    import torch

    class QAGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            out = self.model(**dict(zip(input_names, inputs)), return_dict=True)
            return out.start_logits, out.end_logits

    return QAGraph().eval()


def export_graph(model, input_names: list[str], dummy: dict[str, np.ndarray], path: Path, opset: int) -> str:
    """Writes the fp32 ONNX graph with dynamic batch and sequence axes.

    Tries the TorchScript exporter first (robust for BERT/MobileBERT, needs no extra
    packages), then the torch.export-based one. Returns the exporter used.
    """
    import torch

    module = _graph_module(model, input_names)
    args = tuple(torch.from_numpy(dummy[n]) for n in input_names)
    axes = {n: {0: "batch", 1: "sequence"} for n in (*input_names, *OUTPUT_NAMES)}
    common = dict(input_names=input_names, output_names=list(OUTPUT_NAMES), dynamic_axes=axes, opset_version=opset)
    has_dynamo_flag = "dynamo" in inspect.signature(torch.onnx.export).parameters
    errors = []
    for exporter, extra in (("torchscript", {"dynamo": False} if has_dynamo_flag else {}), ("dynamo", {"dynamo": True})):
        if exporter == "dynamo" and not has_dynamo_flag:
            continue
        try:
            with _quiet(), torch.no_grad():
                torch.onnx.export(module, args, str(path), **common, **extra)
            return exporter
        except Exception as e:  # noqa: BLE001 - any exporter failure: try the next, report all
            errors.append(f"{exporter}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    raise PocketQAError(f"ONNX export of {type(model).__name__} failed ({'; '.join(errors)})")


def optimize_graph(src: Path, dst: Path, config) -> dict:
    """Fuses transformer subgraphs with onnxruntime.transformers.optimizer where it has rules.

    Returns {"applied": bool, "fused": {op: count} | "reason": why not}. ``dst`` is
    written only when something was fused.
    """
    try:
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions
    except ImportError as e:
        return {"applied": False, "reason": f"onnxruntime.transformers unavailable ({e})"}
    model_type = getattr(config, "model_type", "")
    # Ask the optimizer which architectures it knows; MobileBERT (bottlenecks, NoNorm) is not one.
    if model_type not in optimizer.MODEL_TYPES:
        return {"applied": False, "reason": f"onnxruntime.transformers has no fusion rules for model_type {model_type!r}"}
    options = FusionOptions(model_type)
    options.enable_skip_layer_norm = "SkipLayerNormFusion" not in SLOW_CPU_FUSIONS
    try:
        with _quiet():
            optimized = optimizer.optimize_model(
                str(src), model_type=model_type, num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
                hidden_size=int(getattr(config, "hidden_size", 0) or 0), optimization_options=options,
            )
            fused = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
            if not fused:
                return {"applied": False, "reason": "no fusable subgraph found"}
            optimized.save_model_to_file(str(dst))
    except Exception as e:  # noqa: BLE001 - fusion is an optional speed-up; the plain graph still works
        return {"applied": False, "reason": f"optimizer failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    return {"applied": True, "fused": fused}


def quantize_graph(
    src: Path,
    dst: Path,
    per_channel: bool = INT8_PER_CHANNEL,
    reduce_range: bool = INT8_REDUCE_RANGE,
    nodes_to_exclude: Sequence[str] = (),
) -> dict:
    """Dynamic int8 quantization: int8 weights, activations quantized per batch at run time.

    Returns the settings used (stored in export.json).
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise missing_extra("onnxruntime", "onnx") from None
    try:
        with _quiet():
            quantize_dynamic(
                str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
                nodes_to_exclude=list(nodes_to_exclude) or None,
                # ONNX shape inference cannot type the outputs of fused contrib ops (Attention,
                # SkipLayerNormalization); they are all float32 here.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as e:  # noqa: BLE001 - report any quantizer failure as one line naming the graph
        raise PocketQAError(f"{src}: int8 quantization failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return {"weight_type": "int8", "per_channel": per_channel, "reduce_range": reduce_range,
            "nodes_to_exclude": list(nodes_to_exclude)}


def qa_head_nodes(path: Path) -> list[str]:
    """The MatMul that computes the start/end logits (the QA head), found walking back from the outputs."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    frontier = [o.name for o in graph.output]
    seen = set()
    while frontier:
        node = producer.get(frontier.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "MatMul":
            return [node.name]
        frontier.extend(node.input)
    return []


def _size_mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 3)


def export_model(
    model_dir: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    int8: bool = False,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
    keep_fp32: bool = False,
    check_examples: Sequence[Example] | None = None,
    per_channel: bool = INT8_PER_CHANNEL,
    reduce_range: bool = INT8_REDUCE_RANGE,
    nodes_to_exclude: Sequence[str] = (),
    keep_head_fp32: bool = INT8_KEEP_HEAD_FP32,
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Exports a PyTorch QA checkpoint to an ONNX directory and checks it against PyTorch.

    Args:
        model_dir: Model directory, hub id or pip:NAME (None: the bundled model).
        out_dir: Directory to write (created; must differ from the model directory).
        int8: Write the dynamically quantized int8 graph as model.onnx.
        opset: ONNX opset.
        optimize: Fuse transformer subgraphs offline where onnxruntime has rules.
        keep_fp32: With int8, also keep the fp32 graph as model_fp32.onnx.
        check_examples: Questions for the parity check (default: built-in samples).
        per_channel / reduce_range / nodes_to_exclude: int8 quantizer settings.
        keep_head_fp32: With int8, leave the QA head MatMul in fp32.
        threads: CPU threads for the parity runs.
        progress: Show progress bars during the parity runs.

    Returns:
        The export report (also written to ``out_dir/export.json``).

    Raises:
        PocketQAError: bad paths, export failure, or an fp32 graph that fails parity
            (the files are kept for inspection and export.json says why).
    """
    _ort()
    src = resolve_model(model_dir)
    out = Path(out_dir)
    problems = []
    if Path(src).is_dir():
        if any(Path(src).glob("*.onnx")):
            problems.append(f"{src}: already an ONNX export; pass the PyTorch model directory to --model")
        if out.resolve() == Path(src).resolve():
            problems.append(f"--out {out} is the model directory; choose a new directory for the export")
    if out.exists() and not out.is_dir():
        problems.append(f"--out {out}: exists and is not a directory")
    max_opset = _max_opset()
    if not MIN_OPSET <= opset <= max_opset:
        problems.append(f"--opset must be between {MIN_OPSET} and {max_opset} (the installed onnx), found {opset}")
    if keep_fp32 and not int8:
        problems.append("--keep-fp32 needs --int8 (without it model.onnx is the fp32 graph)")
    if problems:
        raise PocketQAError("; ".join(problems))

    tokenizer = load_tokenizer(src)
    # Eager attention traces into the MatMul/Softmax pattern that onnxruntime's fusions
    # recognise; the SDPA trace exports fine but is never fused into Attention.
    model = load_qa_model(src, device="cpu", attn_implementation="eager")
    meta = read_meta(src) if Path(src).is_dir() else {}
    window = WindowConfig(**meta_window(src, meta))  # checked as from_pretrained checks them
    threshold = meta_threshold(src, meta, "logits")
    names = model_input_names(model, tokenizer)

    out.mkdir(parents=True, exist_ok=True)
    for stale in (MODEL_FILE, FP32_FILE):
        (out / stale).unlink(missing_ok=True)
    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)  # config.json only: the weights live in the graph

    reference = QuestionAnswerer(TorchBackend(model, device="cpu", threads=threads), tokenizer, window=window,
                                 threshold=threshold, meta=meta)
    samples = list(SAMPLE_EXAMPLES)
    checks = list(check_examples) if check_examples else samples
    feats = make_features(samples[:3], tokenizer, window)
    # Two windows of different length: the trace sees real padding, so no mask branch is folded away.
    dummy = pad_batch(feats, [0, len(feats) - 1], tokenizer.pad_token_id or 0, names)

    fp32_path = out / (FP32_FILE if int8 else MODEL_FILE)
    raw_path = out / ".model.raw.onnx"
    fused_path = out / ".model.fused.onnx"
    report: dict = {"source": str(src), "opset": opset, "int8": int8, "input_names": names,
                    "output_names": list(OUTPUT_NAMES), "check_data_examples": len(checks),
                    "versions": _versions()}
    try:
        report["exporter"] = export_graph(model, names, dummy, raw_path, opset)
        optimization = {"applied": False, "reason": "disabled (--no-optimize)"}
        if optimize:
            optimization = optimize_graph(raw_path, fused_path, model.config)
            if optimization["applied"]:
                fused_qa = reference.with_backend(OnnxBackend.from_file(fused_path, threads))
                fused = compare_answerers(reference, {"fused": fused_qa}, samples)["fused"]
                if fp32_ok(fused):
                    os.replace(fused_path, raw_path)
                else:  # keep the plain graph: a fusion that changes answers is no optimisation
                    optimization = {"applied": False, "reason": f"fused graph failed parity "
                                    f"(max |diff| {fused['max_abs_diff']:.2e}); kept the unfused graph"}
        report["optimization"] = optimization
        os.replace(raw_path, fp32_path)
    finally:
        raw_path.unlink(missing_ok=True)
        fused_path.unlink(missing_ok=True)

    sizes = {"pytorch": round(dir_size_mb(src), 3) if Path(src).is_dir() else None, "fp32_onnx": _size_mb(fp32_path)}
    candidates = {"fp32": reference.with_backend(OnnxBackend.from_file(fp32_path, threads))}
    if int8:
        exclude = list(nodes_to_exclude) + (qa_head_nodes(fp32_path) if keep_head_fp32 else [])
        report["quantization"] = quantize_graph(fp32_path, out / MODEL_FILE, per_channel, reduce_range, exclude)
        sizes["int8_onnx"] = _size_mb(out / MODEL_FILE)
        candidates["int8"] = reference.with_backend(OnnxBackend.from_file(out / MODEL_FILE, threads))
    parity = compare_answerers(reference, candidates, checks, progress=progress)
    parity["fp32"]["passed"] = passed = fp32_ok(parity["fp32"])
    if int8 and passed and not keep_fp32:
        fp32_path.unlink()
    report["sizes_mb"] = sizes
    report["parity"] = parity
    exported_meta = {**meta, "export": {"format": "onnx", "int8": int8, "opset": opset, "source": str(src),
                                        "parity_passed": passed}}
    write_meta(out, exported_meta)
    report["files"] = {p.name: _size_mb(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != EXPORT_FILE}
    write_json_atomic(report, out / EXPORT_FILE, indent=2)
    if not passed:
        p = parity["fp32"]
        raise PocketQAError(
            f"{fp32_path}: fp32 graph does not match PyTorch (max |logit diff| {p['max_abs_diff']:.2e}, limit "
            f"{FP32_TOLERANCE:g}; answers differ on {p['n_differing']} question(s) {p['differing_ids'][:3]}); "
            f"files kept for inspection, see {out / EXPORT_FILE}; try another --opset or --no-optimize"
        )
    return report


def _max_opset() -> int:
    try:
        import onnx
    except ImportError:
        raise missing_extra("onnx", "onnx") from None
    return int(onnx.defs.onnx_opset_version())


def _versions() -> dict:
    import torch

    ort = _ort()
    return {"pocketqa": __version__, "torch": torch.__version__, "onnxruntime": ort.__version__}


def format_report(report: dict) -> str:
    """A few lines for the terminal: files, sizes, parity."""
    sizes = report["sizes_mb"]
    opt = report["optimization"]
    lines = [
        f"exported {report['source']} with the {report['exporter']} exporter (opset {report['opset']}); "
        + ("fused " + ", ".join(f"{k} x{v}" for k, v in opt["fused"].items()) if opt["applied"] else f"not fused: {opt['reason']}"),
        "sizes (MB): " + ", ".join(f"{k} {v:.2f}" for k, v in sizes.items() if v is not None),
    ]
    for kind, p in report["parity"].items():
        line = (f"parity {kind} on {p['examples']} questions ({p['windows']} windows): max |logit diff| "
                f"{p['max_abs_diff']:.2e}, identical answers {100 * p['answers_identical']:.1f}%, "
                f"EM {p['candidate']['exact']:.2f} ({p['delta_exact']:+.2f}), F1 {p['candidate']['f1']:.2f} "
                f"({p['delta_f1']:+.2f}) vs PyTorch")
        if kind == "fp32":
            line += " -> " + ("PASS" if p["passed"] else "FAIL")
        lines.append(line)
    return "\n".join(lines)


def load_report(out_dir: str | os.PathLike) -> dict:
    """Reads export.json of an exported directory."""
    path = Path(out_dir) / EXPORT_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PocketQAError(f"{path}: not found; is {out_dir} a pocketqa export?") from None
    except json.JSONDecodeError as e:
        raise PocketQAError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
