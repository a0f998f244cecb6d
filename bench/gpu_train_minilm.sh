#!/usr/bin/env bash
# Fine-tunes all-MiniLM-L6-v2 on SQuAD 2.0 on one GPU with recipes/minilm-l6-squad2.yaml
# (3 epochs, batch 32, lr 1e-4, bf16) and prints how long each part took and windows/s.
#
# Run from the repository root on the GPU machine:
#     bash bench/gpu_train_minilm.sh [extra pocketqa train flags, e.g. --max-steps 500]
# Reads .carry/minilm and .carry/data/{train,dev}-v2.0.json.gz; writes under $OUT
# (default runs/gpu). The feature cache goes to /tmp/pocketqa-cache.
#
# Budget: ~132k windows x 3 epochs = ~12.4k steps of 32; at 5-10k windows/s that is 1-2
# minutes, plus ~0.5 minute of tokenising (8 processes) and ~0.5 minute of dev evaluation.
#
# $OUT travels back in small files only: the weights and checkpoints are moved to
# /tmp/pocketqa-heavy at the end (pocketqa.json, log.jsonl and config.json stay).
set -euo pipefail

OUT=${OUT:-runs/gpu}
RUN="$OUT/minilm-squad2"
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'

start=$(date +%s.%N)
python3 -m pocketqa train \
    --recipe recipes/minilm-l6-squad2.yaml \
    --model .carry/minilm \
    --train .carry/data/train-v2.0.json.gz \
    --dev .carry/data/dev-v2.0.json.gz \
    --out "$RUN" \
    --cache-dir /tmp/pocketqa-cache \
    --overwrite \
    --log-steps 200 \
    "$@" 2>&1 | tee "$OUT/train.log"
end=$(date +%s.%N)

python3 - "$RUN" "$start" "$end" "$OUT/summary.json" <<'EOF'
import json, statistics, sys
from pathlib import Path

run, start, end, summary_path = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
started = next(r for r in records if r.get("event") == "start")
steps = [r for r in records if "loss" in r]
evals = [r for r in records if "eval" in r]
meta = json.loads((run / "pocketqa.json").read_text())
batch = meta["recipe"]["batch_size"]
train_s = steps[-1]["elapsed_s"]
rates = [r["ex_per_s"] for r in steps[1:]]  # the first interval includes CUDA warm-up
dev = meta["metrics"]["dev"]
summary = {
    "wall_s": round(end - start, 1),
    "setup_s (load, tokenise, dev windows)": round(started["time"] - start, 1),
    "train_loop_s": round(train_s, 1),
    "final_eval_and_save_s": round(end - started["time"] - train_s, 1),
    "steps": steps[-1]["step"],
    "windows_per_s_overall": round(steps[-1]["step"] * batch / train_s, 1),
    "windows_per_s_median_interval": round(statistics.median(rates), 1) if rates else None,
    "first_loss": steps[0]["loss"],
    "last_loss": steps[-1]["loss"],
    "dev": {k: round(dev[k], 3) for k in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh")},
    "precision": meta["training"]["precision"],
}
summary_path.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF

mkdir -p /tmp/pocketqa-heavy
mv "$RUN/checkpoints" "$RUN"/*.safetensors /tmp/pocketqa-heavy/ 2>/dev/null || true
rm -f "$RUN"/tokenizer* "$RUN"/special_tokens_map.json "$RUN"/vocab.txt
ls -la "$RUN" /tmp/pocketqa-heavy
