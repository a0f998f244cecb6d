#!/usr/bin/env bash
# Does augmented data help stage 2? A CPU-scale check on a finished distill_cpu_small.sh run.
#
# Both arms start from the same stage-1 student ($W/c/stage1) and take the same number of
# stage-2 steps; they differ only in what those steps see:
#   (d) one epoch over the slice + FACTOR augmented copies of it  (FACTOR+1 passes' worth of windows)
#   (e) FACTOR+1 epochs over the slice alone                       (the steps-matched control)
# so any gap is the augmented data, not extra training.
#
#   W=runs/cpu-12k FACTOR=1 bash bench/augment_check_cpu.sh
# Needs $W/train.json, $W/dev.json, $W/c/stage1 (from distill_cpu_small.sh) and an MLM
# ($MLM, default: fitted here with `pocketqa mlm-head` on the slice). Results: $W/results.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
PY=${PY:-python}
W=${W:-runs/cpu-12k}
TEACHER=${TEACHER:-runs/minilm-l6-squad2}
BASE=${BASE:-pip:all-MiniLM-L6-v2}
FACTOR=${FACTOR:-1}
PRECISION=${PRECISION:-bf16}
MLM=${MLM:-$W/mlm}

t() {  # name command...: runs it into $W/name.log, records rc and seconds, stops the script on failure
  local n=$1; shift; local s=$(date +%s) rc=0
  "$@" > "$W/$n.log" 2>&1 || rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s" | tee -a "$W/times.txt"
  [ "$rc" = 0 ] || { echo "$n failed; see $W/$n.log" >&2; exit 1; }
}
source bench/cpu_runs.sh  # ev

[ -d "$MLM" ] || t mlm $PY -m pocketqa mlm-head --encoder "$BASE" --data "$W/train.json" --out "$MLM" --steps 200 --device cpu
t augment $PY -m pocketqa augment --data "$W/train.json" --out "$W/aug$FACTOR.json" --factor "$FACTOR" --mlm "$MLM" \
  --seed 1 --device cpu
C=(--teacher "$TEACHER" --student "$W/c/stage1" --batch-size 32 --warmup 0.1 --weight-decay 0.01 --cache-dir "$W/cache"
   --overwrite --device cpu --stage 2 --stage2-learning-rate 1e-4 --log-steps 50 --precision "$PRECISION" --no-progress)
t d$FACTOR $PY -m pocketqa distill --train "$W/train.json" "$W/aug$FACTOR.json" --out "$W/d$FACTOR" "${C[@]}" --stage2-epochs 1
ev "c1+d$FACTOR" "$W/d$FACTOR"
t e$FACTOR $PY -m pocketqa distill --train "$W/train.json" --out "$W/e$FACTOR" "${C[@]}" --stage2-epochs $((FACTOR + 1))
ev "c1+e$FACTOR" "$W/e$FACTOR"
cat "$W/times.txt" "$W/results.jsonl"
