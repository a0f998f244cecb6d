"""AdamW step time on the CPU: torch's default (per-tensor loop), foreach, fused.

pocketqa's ``build_optimizer`` picks the fused kernel on the CPU (torch >= 2.4). This
times one optimizer step of a 3-layer MiniLM student (17.2M parameters, most of them the
word embeddings, whose gradient is dense) for each implementation, taking turns, and prints
the ratio to torch's default, which is what an AdamW built without flags (the HF
Trainer's) runs on CPU tensors.

    PYTHONPATH=src python bench/optimizer_cpu.py [--model .carry/minilm] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pocketqa.models import build_student

REPO = Path(__file__).resolve().parent.parent
KINDS = {"default (loop)": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / ".carry/minilm"), help="base encoder (default: MiniLM-L6)")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    student, _ = build_student(args.model, layers=args.layers, seed=0)
    params = list(student.float().parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    print(f"{sum(p.numel() for p in params) / 1e6:.1f}M parameters, {args.threads} threads")
    best = {k: float("inf") for k in KINDS}
    for _ in range(args.rounds):
        for kind, flags in KINDS.items():
            opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, **flags)
            for _ in range(3):
                opt.step()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                opt.step()
            best[kind] = min(best[kind], (time.perf_counter() - t0) / args.steps * 1000)
    base = best["default (loop)"]
    for kind, ms in best.items():
        print(f"{kind:16} {ms:7.1f} ms/step   {base / ms:5.2f}x vs default")


if __name__ == "__main__":
    main()
