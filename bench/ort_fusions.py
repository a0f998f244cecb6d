"""Is ONNX Runtime's fused CPU SkipLayerNormalization still slower than what it replaces?

pocketqa keeps residual adds out of SkipLayerNormalization (export.SLOW_CPU_FUSIONS)
because, measured with onnxruntime 1.32 on a 2-core AMD EPYC (Zen 4), the fused kernel
took 297-337 us on a [1, 170, 384] window against 42-88 us for Add + LayerNormalization
(3-8x, depending on threads and load). Run this
after upgrading onnxruntime: when the ratio drops below 1, drop the entry.

Both graphs compute LayerNorm(x + skip + bias) on the same inputs; the two sessions take
turns so that background load hits both alike. Prints microseconds per call and the ratio.

    python bench/ort_fusions.py --threads 2 --seq 170 --hidden 384
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _graphs(seq: int, hidden: int):
    from onnx import TensorProto, helper

    def model(nodes, inputs):
        graph = helper.make_graph(
            nodes, "g",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, seq, hidden]) for n in inputs],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=[
                helper.make_tensor(name, TensorProto.FLOAT, [hidden], values)
                for name, values in (("gamma", np.ones(hidden)), ("beta", np.zeros(hidden)), ("bias", np.full(hidden, 0.1)))
            ],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])

    fused = model(
        [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y"],
                          domain="com.microsoft", epsilon=1e-12)],
        ["x", "skip"],
    )
    plain = model(
        [helper.make_node("Add", ["x", "bias"], ["xb"]), helper.make_node("Add", ["xb", "skip"], ["s"]),
         helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], epsilon=1e-12, axis=-1)],
        ["x", "skip"],
    )
    return fused, plain


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=170, help="tokens in the window (SQuAD dev windows average ~170)")
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--calls", type=int, default=300, help="calls per timed pass")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((1, args.seq, args.hidden), np.float32),
            "skip": rng.standard_normal((1, args.seq, args.hidden), np.float32)}
    sessions = {}
    for name, graph in zip(("SkipLayerNormalization", "Add+LayerNormalization"), _graphs(args.seq, args.hidden)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.log_severity_level = 3
        # Keep ORT from fusing the plain graph back into SkipLayerNormalization.
        sessions[name] = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                              disabled_optimizers=["SkipLayerNormFusion"])
    outs = [s.run(None, feed)[0] for s in sessions.values()]
    print(f"onnxruntime {ort.__version__}, {args.threads} thread(s), [1, {args.seq}, {args.hidden}]; "
          f"max |difference| {np.abs(outs[0] - outs[1]).max():.2e}")
    times = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                session.run(None, feed)
            times[name].append((time.perf_counter() - start) / args.calls * 1e6)
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, us in med.items():
        print(f"  {name:24s} {us:8.1f} us per call (median of {args.rounds})")
    print(f"  fused / plain: {med['SkipLayerNormalization'] / med['Add+LayerNormalization']:.2f}x "
          "(> 1: the fusion is slower, keep it in SLOW_CPU_FUSIONS)")


if __name__ == "__main__":
    main()
