#!/usr/bin/env bash
# Distillation and augmentation on real data at a scale a 2-core CPU manages (about an hour).
#
# The GPU version of these runs (full train set) is bench/gpu_distill.sh. This one answers
# the same questions on a slice, for sessions without a GPU:
#   (a) 3-layer student fine-tuned alone           (pocketqa train)
#   (b) stage 2 only: KD from the cached teacher   (pocketqa distill --stage 2)
#   (c) stage 1 + stage 2                          (pocketqa distill --stage both)
#   (d) stage 2 on the slice + its xFACTOR augmentation (pocketqa mlm-head, augment, distill)
#   (e) stage 2 on the slice alone for as many steps as (d): is it the data or the steps?
# Teacher: the fine-tuned MiniLM-L6 (runs/minilm-l6-squad2); student: embeddings + layers
# 2, 4, 6 of STUDENT_FROM: the base MiniLM with a fresh QA head (default, as on the GPU), or
# STUDENT_FROM=$TEACHER to start from the teacher's own layers and QA head, the only start
# from which a few hundred CPU steps learn spans at all. Train slice and dev subset: bench/squad_slice.py.
#
#   TEACHER=runs/minilm-l6-squad2 QUESTIONS=4000 bash bench/distill_cpu_small.sh
#   (AUG=0 stops after (c), for a larger slice in the same time)
# Results: $W/results.jsonl (one line per run) and $W/times.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
PY=${PY:-python}
W=${W:-runs/cpu-small}
TEACHER=${TEACHER:-runs/minilm-l6-squad2}
BASE=${BASE:-pip:all-MiniLM-L6-v2}
STUDENT_FROM=${STUDENT_FROM:-$BASE}
QUESTIONS=${QUESTIONS:-4000}
EPOCHS=${EPOCHS:-2}
FACTOR=${FACTOR:-4}
PRECISION=${PRECISION:-bf16}  # bf16 autocast: 1.4x faster than fp32 per training step on an AVX512-BF16 CPU
DATA=${DATA:-../shared/data/squad2}
mkdir -p "$W"
: > "$W/times.txt"

t() { local n=$1; shift; local s=$(date +%s); "$@" > "$W/$n.log" 2>&1; echo "$n rc=$? $(( $(date +%s) - s ))s" | tee -a "$W/times.txt"; }
source bench/cpu_runs.sh  # ev, student3

t slice $PY bench/squad_slice.py --data "$DATA" --out "$W" --questions "$QUESTIONS"

t build student3 "$STUDENT_FROM" "$W/student"

C=(--batch-size 32 --warmup 0.1 --weight-decay 0.01 --cache-dir "$W/cache" --overwrite --device cpu)
[ -f "$W/eval_teacher.json" ] || ev teacher "$TEACHER"
ev student "$W/student"  # the starting point, before any training
t a $PY -m pocketqa train --model "$W/student" --train "$W/train.json" --out "$W/a" "${C[@]}" --epochs "$EPOCHS" \
  --learning-rate 1e-4 --save-steps 0 --log-steps 50 --precision "$PRECISION"
ev a "$W/a"
t b $PY -m pocketqa distill --teacher "$TEACHER" --student "$W/student" --train "$W/train.json" --out "$W/b" "${C[@]}" \
  --stage 2 --stage2-epochs "$EPOCHS" --stage2-learning-rate 1e-4 --log-steps 50 --precision "$PRECISION" --no-progress
ev b "$W/b"
t c $PY -m pocketqa distill --teacher "$TEACHER" --student "$W/student" --train "$W/train.json" --out "$W/c" "${C[@]}" \
  --stage both --stage1-epochs "$EPOCHS" --stage1-learning-rate 1e-4 --stage2-epochs "$EPOCHS" \
  --stage2-learning-rate 1e-4 --log-steps 50 --precision "$PRECISION" --no-progress
ev c "$W/c"
if [ "${AUG:-1}" = 0 ]; then cat "$W/times.txt" "$W/results.jsonl"; exit 0; fi  # AUG=0: (a)-(c) only
[ -d "$W/mlm" ] || t mlm $PY -m pocketqa mlm-head --encoder "$BASE" --data "$W/train.json" --out "$W/mlm" --steps 200 --device cpu
t augment $PY -m pocketqa augment --data "$W/train.json" --out "$W/aug.json" --factor "$FACTOR" --mlm "$W/mlm" \
  --seed 1 --device cpu
# (d): the same stage 2 over the slice and its augmented copies, one epoch (FACTOR+1 times the windows).
t d $PY -m pocketqa distill --teacher "$TEACHER" --student "$W/student" --train "$W/train.json" "$W/aug.json" \
  --out "$W/d" "${C[@]}" --stage 2 --stage2-epochs 1 --stage2-learning-rate 1e-4 --log-steps 50 --precision "$PRECISION" --no-progress
ev d "$W/d"
# (e): control for (d): stage 2 on the slice alone for as many steps as (d) took.
t e $PY -m pocketqa distill --teacher "$TEACHER" --student "$W/student" --train "$W/train.json" --out "$W/e" "${C[@]}" \
  --stage 2 --stage2-epochs $((FACTOR + 1)) --stage2-learning-rate 1e-4 --log-steps 50 --precision "$PRECISION" --no-progress
ev e "$W/e"
cat "$W/times.txt" "$W/results.jsonl"
