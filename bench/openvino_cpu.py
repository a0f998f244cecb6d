"""Would OpenVINO run pocketqa's exported graphs faster than ONNX Runtime on this CPU?

Times one window (batch 1, ``--seq`` tokens) of the same exported graphs on ONNX Runtime
(pocketqa's own session settings) and on OpenVINO's CPU plugin with the f32 and bf16
precision hints, all taking turns round after round, and prints each one's ms per window
and its ratio to ONNX Runtime fp32. OpenVINO is not a pocketqa dependency: install it
into the venv first (``pip install openvino``). It reads plain ONNX graphs; the fused int8
graph ``export --int8`` writes uses onnxruntime's own operators (QAttention,
DynamicQuantizeMatMul), which OpenVINO reports as unconvertible.

    PYTHONPATH=src python bench/openvino_cpu.py --fp32 runs/x-onnx --int8 runs/x-int8 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def window(names_types, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for name, type_ in names_types:
        dtype = np.int32 if "int32" in type_ else np.int64
        if name == "input_ids":
            feed[name] = rng.integers(1000, 2000, (1, seq)).astype(dtype)
        elif "mask" in name:
            feed[name] = np.ones((1, seq), dtype)
        else:
            feed[name] = np.zeros((1, seq), dtype)
    return feed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp32", type=Path, required=True, help="an exported fp32 directory (pocketqa export)")
    p.add_argument("--int8", type=Path, help="an exported int8 directory (pocketqa export --int8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=170, help="tokens in the window")
    p.add_argument("--calls", type=int, default=30, help="timed calls per runner per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    import openvino

    from pocketqa.inference.onnx_backend import MODEL_FILE, open_session

    runners = {}
    session = open_session(args.fp32 / MODEL_FILE, threads=args.threads)
    feed = window([(i.name, i.type) for i in session.get_inputs()], args.seq)
    runners["onnxruntime fp32"] = lambda: session.run(None, feed)
    core = openvino.Core()
    for hint in ("f32", "bf16"):
        compiled = core.compile_model(str(args.fp32 / MODEL_FILE), "CPU", {
            "INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        runners[f"openvino {hint}"] = lambda request=request: request.infer(feed)
    if args.int8:
        int8 = open_session(args.int8 / MODEL_FILE, threads=args.threads)
        int8_feed = window([(i.name, i.type) for i in int8.get_inputs()], args.seq)
        runners["onnxruntime int8"] = lambda: int8.run(None, int8_feed)

    times = {name: [] for name in runners}
    for r in range(args.rounds):
        for name, run in runners.items():
            for _ in range(5):
                run()
            t0 = time.perf_counter()
            for _ in range(args.calls):
                run()
            times[name].append((time.perf_counter() - t0) / args.calls * 1e3)
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f} ms" for n, t in times.items()))
    base = statistics.median(times["onnxruntime fp32"])
    print(f"| runtime | ms per {args.seq}-token window (median of {args.rounds} rounds) | vs onnxruntime fp32 |")
    print("|---|---:|---:|")
    for name, t in times.items():
        ms = statistics.median(t)
        print(f"| {name} | {ms:.2f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
