"""Does an int8 attention core make pocketqa's int8 ONNX graph faster on CPU?

In the int8 graph pocketqa exports, the fused Attention node becomes QAttention: its
Q/K/V projection runs in int8, but the attention core (Q Kᵀ, softmax, A V) stays fp32
and took 28 % of a MiniLM-L6 window (docs/results.md, issue 6). onnxruntime's dynamic
quantizer can put that core in int8 too, with no custom kernel: leave attention unfused
and quantize activation-by-activation MatMuls (``MatMulConstBOnly=False``). This times
three int8 graphs of the same random-init model on one real-length window:

- ``fused``: what ``pocketqa export --int8`` writes (Attention fused -> QAttention);
- ``unfused``: attention left as MatMul/Softmax, weight MatMuls int8, core fp32;
- ``unfused+core``: as ``unfused``, and Q Kᵀ and A V quantized as well.

The graphs take turns in blocks (one session's spinning worker threads would otherwise
slow the next one's calls); prints ms per window, the ratio to ``fused`` and the largest
start-logit change that quantizing the core adds.

    PYTHONPATH=src python bench/int8_attention.py --threads 2 --seq 170
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {  # (hidden, layers, heads, intermediate)
    "minilm-L6": (384, 6, 12, 1536),
    "bert-6L-768": (768, 6, 12, 3072),
}


def build_graphs(name: str, root: Path) -> dict[str, Path]:
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions
    from transformers import BertConfig, BertForQuestionAnswering

    from pocketqa.export.exporter import DEFAULT_OPSET, export_graph
    from pocketqa.inference.onnx_backend import SLOW_CPU_FUSIONS

    hidden, layers, heads, intermediate = SHAPES[name]
    torch.manual_seed(0)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, attn_implementation="eager")
    model = BertForQuestionAnswering(config).eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    raw = root / f"{name}.onnx"
    export_graph(model, names, {n: np.ones((1, 16), np.int64) for n in names}, raw, DEFAULT_OPSET)
    graphs = {}
    for label, fuse_attention, core in (("fused", True, False), ("unfused", False, False), ("unfused+core", False, True)):
        options = FusionOptions("bert")
        options.enable_skip_layer_norm = "SkipLayerNormFusion" not in SLOW_CPU_FUSIONS
        options.enable_attention = fuse_attention
        optimized = optimizer.optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden,
                                             optimization_options=options)
        fp32 = root / f"{name}-{label}-fp32.onnx"
        optimized.save_model_to_file(str(fp32))
        graphs[label] = root / f"{name}-{label}-int8.onnx"
        quantize_dynamic(str(fp32), str(graphs[label]), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": not core})
    return graphs


def main() -> None:
    import onnxruntime as ort

    from pocketqa.inference.onnx_backend import SLOW_CPU_FUSIONS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="minilm-L6,bert-6L-768")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=170, help="tokens in the window (SQuAD dev windows average ~170)")
    p.add_argument("--calls", type=int, default=20, help="timed calls per block")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 30000, (1, args.seq), dtype=np.int64),
            "attention_mask": np.ones((1, args.seq), np.int64), "token_type_ids": np.zeros((1, args.seq), np.int64)}
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), one window of {args.seq} tokens")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            graphs = build_graphs(name, Path(tmp))
            sessions = {}
            for label, path in graphs.items():
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                options.log_severity_level = 3
                sessions[label] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                                       disabled_optimizers=list(SLOW_CPU_FUSIONS))
            starts = {label: s.run(None, feed)[0] for label, s in sessions.items()}
            times = {label: [] for label in sessions}
            for _ in range(args.rounds):
                for label, session in sessions.items():
                    for _ in range(3):  # let this session's threads take the cores back
                        session.run(None, feed)
                    for _ in range(args.calls):
                        t0 = time.perf_counter()
                        session.run(None, feed)
                        times[label].append(time.perf_counter() - t0)
        med = {label: 1000 * statistics.median(v) for label, v in times.items()}
        print(f"{name}:")
        for label, ms in med.items():
            print(f"  {label:13s} {ms:7.2f} ms per window   {med['fused'] / ms:5.2f}x vs fused")
        diff = np.abs(starts["unfused+core"] - starts["unfused"]).max()
        print(f"  start logits, unfused+core vs unfused: max |difference| {diff:.3f} "
              f"(logit range {np.ptp(starts['unfused']):.2f})")


if __name__ == "__main__":
    main()
