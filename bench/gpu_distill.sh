#!/usr/bin/env bash
# Distillation on one GPU: a 3-layer MiniLM student (layers 2, 4, 6 of the base encoder) of a
# fine-tuned MiniLM-L6 teacher, three ways, each scored on the official dev set:
#   (a) the student fine-tuned alone        (pocketqa train)
#   (b) stage 2 only                        (pocketqa distill --stage 2)
#   (c) stage 1 + stage 2                   (pocketqa distill --stage both)
# plus the teacher itself. Reports EM/F1 at threshold 0 and at the best (calibrated)
# threshold, size, CPU questions/s, and how long each part took, in $OUT/distill_results.json.
#
# Run from the repository root on the GPU machine:
#     TEACHER=/path/to/finetuned-minilm-l6 bash bench/gpu_distill.sh
# Reads .carry/minilm (base encoder) and .carry/data/{train,dev}-v2.0.json.gz. Models stay in
# $WORK (default /tmp/pocketqa-distill); only small JSON files go to $OUT (default runs/gpu-distill).
#
# Budget (H100, <= 8 minutes): ~132k windows; (a) and (b) 2 epochs each of a 3-layer model,
# (c) 1 epoch of stage 1 (teacher + student encoders, attention matrices) + 2 of stage 2; the
# windows are tokenised once (feature cache) and the teacher logits computed once (cache).
# Knobs: EPOCHS (2), STAGE1_EPOCHS (1), LR (1e-4), BATCH (32), EXTRA (more flags for all three
# runs, e.g. "--max-steps 20" for a smoke test), TRAIN / DEV / BASE (other data or encoder),
# CACHE_BENCH=0 to skip bench/distill_cache_speed.py on the GPU (~1 minute).
set -euo pipefail

: "${TEACHER:?set TEACHER to the fine-tuned MiniLM-L6 QA model directory}"
OUT=${OUT:-runs/gpu-distill}
WORK=${WORK:-/tmp/pocketqa-distill}
BASE=${BASE:-.carry/minilm}
TRAIN=${TRAIN:-.carry/data/train-v2.0.json.gz}
DEV=${DEV:-.carry/data/dev-v2.0.json.gz}
EPOCHS=${EPOCHS:-2}
STAGE1_EPOCHS=${STAGE1_EPOCHS:-1}
LR=${LR:-1e-4}
BATCH=${BATCH:-32}
EXTRA=${EXTRA:-}
CPU_QUESTIONS=${CPU_QUESTIONS:-200}
PY=${PYTHON:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 POCKETQA_CACHE="$WORK/cache"
mkdir -p "$OUT/logs" "$WORK"
rm -rf "$WORK/student-l3" "$WORK/a-finetune" "$WORK/b-stage2" "$WORK/c-stage1-stage2"
TIMES="$OUT/logs/times.tsv"
: > "$TIMES"

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'

timed() {  # timed NAME command...: runs it with its output in $OUT/logs/NAME.log, records seconds
    local name=$1; shift
    local start seconds
    start=$(date +%s%N)
    if ! "$@" > "$OUT/logs/$name.log" 2>&1; then
        echo "FAILED: $name (last lines of $OUT/logs/$name.log):"; tail -20 "$OUT/logs/$name.log"; exit 1
    fi
    local ms=$(( ($(date +%s%N) - start) / 1000000 ))
    seconds=$(( ms / 1000 )).$(printf '%03d' $(( ms % 1000 )))
    printf '%s\t%s\n' "$name" "$seconds" >> "$TIMES"
    echo "$name: $seconds s"
}

# The student: embeddings + layers 2, 4, 6 (uniform map targets) of the base encoder, fresh QA head.
timed build_student $PY - "$BASE" "$WORK/student-l3" <<'EOF'
import sys
from pocketqa.distill import build_student
from pocketqa.models import load_tokenizer, resolve_model, save_qa_model
model, info = build_student(sys.argv[1], layers=3, seed=42)
save_qa_model(model, load_tokenizer(resolve_model(sys.argv[1])), sys.argv[2], meta={"student": info})
print(info)
EOF

COMMON=(--train "$TRAIN" --batch-size "$BATCH" --warmup 0.1 --weight-decay 0.01 --cache-dir "$WORK/cache" --overwrite)
# shellcheck disable=SC2086
timed a_finetune $PY -m pocketqa train --model "$WORK/student-l3" --out "$WORK/a-finetune" "${COMMON[@]}" \
    --epochs "$EPOCHS" --learning-rate "$LR" --save-steps 0 --log-steps 200 $EXTRA
# shellcheck disable=SC2086
timed b_stage2 $PY -m pocketqa distill --teacher "$TEACHER" --student "$WORK/student-l3" --out "$WORK/b-stage2" \
    "${COMMON[@]}" --stage 2 --stage2-epochs "$EPOCHS" --stage2-lr "$LR" --log-steps 200 --no-progress $EXTRA
# shellcheck disable=SC2086
timed c_stage1_stage2 $PY -m pocketqa distill --teacher "$TEACHER" --student "$WORK/student-l3" \
    --out "$WORK/c-stage1-stage2" "${COMMON[@]}" --stage both --stage1-epochs "$STAGE1_EPOCHS" --stage1-lr "$LR" \
    --stage2-epochs "$EPOCHS" --stage2-lr "$LR" --log-steps 200 --no-progress $EXTRA

for run in teacher:"$TEACHER" a_finetune:"$WORK/a-finetune" b_stage2:"$WORK/b-stage2" c_stage1_stage2:"$WORK/c-stage1-stage2"; do
    name=${run%%:*}; dir=${run#*:}
    timed "eval_$name" $PY -m pocketqa evaluate --model "$dir" --data "$DEV" --null-threshold 0 --batch-size 256 \
        --out "$OUT/logs/eval_$name.json"
done

if [ "${CACHE_BENCH:-1}" = 1 ]; then  # stage-2 step time: cached teacher logits vs the teacher every step
    timed cache_bench $PY bench/distill_cache_speed.py --teacher "$TEACHER" --device cuda --examples 3000 \
        --steps 60 --repeats 2 --batch-size "$BATCH" --out "$OUT/distill_cache_speed.json"
    tail -4 "$OUT/logs/cache_bench.log"
fi

$PY - "$OUT" "$WORK" "$TEACHER" "$DEV" "$CPU_QUESTIONS" "$EPOCHS" "$STAGE1_EPOCHS" "$LR" "$BATCH" <<'EOF'
import json, sys, time
from pathlib import Path

import torch

from pocketqa.answerer import QuestionAnswerer
from pocketqa.models import dir_size_mb, read_meta
from pocketqa.squad import load_squad

out, work, teacher, dev, n_cpu, epochs, stage1_epochs, lr, batch = sys.argv[1:]
out, work = Path(out), Path(work)
dirs = {
    "teacher": Path(teacher),
    "a_finetune": work / "a-finetune",
    "b_stage2": work / "b-stage2",
    "c_stage1_stage2": work / "c-stage1-stage2",
}
times = dict(line.split("\t") for line in (out / "logs/times.tsv").read_text().splitlines())
questions = load_squad(dev)[: int(n_cpu)]
torch.set_num_threads(4)
results = {"setup": {"epochs": int(epochs), "stage1_epochs": int(stage1_epochs), "lr": float(lr), "batch": int(batch),
                     "cpu_threads_for_qps": 4, "cpu_questions": len(questions)}, "models": {}}
for name, path in dirs.items():
    scores = json.loads((out / f"logs/eval_{name}.json").read_text())
    qa = QuestionAnswerer.from_pretrained(path, device="cpu", threshold=0.0, batch_size=32)
    qa.predict(questions[:16])  # warm-up
    t0 = time.perf_counter()
    qa.predict(questions)
    qps = len(questions) / (time.perf_counter() - t0)
    meta = read_meta(path)
    row = {
        "em@0": round(scores["exact"], 2), "f1@0": round(scores["f1"], 2),
        "best_em": round(scores["best_exact"], 2), "best_f1": round(scores["best_f1"], 2),
        "best_f1_thresh": round(scores["best_f1_thresh"], 3),
        "HasAns_f1@0": round(scores.get("HasAns_f1", float("nan")), 2), "NoAns_f1@0": round(scores.get("NoAns_f1", float("nan")), 2),
        "size_mb": round(dir_size_mb(path), 1), "params_m": round(sum(p.numel() for p in qa.backend.model.parameters()) / 1e6, 2),
        "cpu_qps": round(qps, 1), "seconds": round(float(times.get(name, "nan")), 1),
    }
    if "distill" in meta:
        d = meta["distill"]
        row["stages"] = {k: d[k] for k in ("stage1", "stage2") if k in d}
    results["models"][name] = row
m = results["models"]
results["targets"] = {
    "c_vs_teacher_f1 (>= 0.95)": round(m["c_stage1_stage2"]["f1@0"] / m["teacher"]["f1@0"], 3),
    "c_minus_a_f1 (>= 3)": round(m["c_stage1_stage2"]["f1@0"] - m["a_finetune"]["f1@0"], 2),
    "c_vs_teacher_best_f1": round(m["c_stage1_stage2"]["best_f1"] / m["teacher"]["best_f1"], 3),
    "c_minus_a_best_f1": round(m["c_stage1_stage2"]["best_f1"] - m["a_finetune"]["best_f1"], 2),
}
results["seconds"] = {k: round(float(v), 1) for k, v in times.items()}
results["seconds"]["total"] = round(sum(float(v) for v in times.values()), 1)
(out / "distill_results.json").write_text(json.dumps(results, indent=2) + "\n")
print(f"{'model':<18}{'EM@0':>7}{'F1@0':>7}{'bestF1':>8}{'MB':>7}{'CPU q/s':>9}{'s':>7}")
for name, r in m.items():
    print(f"{name:<18}{r['em@0']:>7.2f}{r['f1@0']:>7.2f}{r['best_f1']:>8.2f}{r['size_mb']:>7.1f}{r['cpu_qps']:>9.1f}{r['seconds']:>7.1f}")
print(json.dumps(results["targets"]), "total", results["seconds"]["total"], "s")
EOF
for run in b-stage2 c-stage1-stage2; do  # small run records next to the results
    mkdir -p "$OUT/runs/$run"; cp "$WORK/$run/pocketqa.json" "$WORK/$run/log.jsonl" "$OUT/runs/$run/"
done
mkdir -p "$OUT/runs/a-finetune"; cp "$WORK/a-finetune/pocketqa.json" "$WORK/a-finetune/log.jsonl" "$OUT/runs/a-finetune/" 2>/dev/null || true
