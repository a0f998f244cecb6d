#!/usr/bin/env bash
# Issue 9 at a scale a 2-core CPU manages (about two hours): the MPNet teacher, fine-tuned
# on a slice of ../shared/data train, and students distilled from it through the vocabulary
# bridge, each against the same student fine-tuned alone on the same slice and steps.
# The full-data GPU runs are in docs/teacher.md (sections 4 and 6).
#   (T)  all-mpnet-base-v2 fine-tuned on the slice                 (pocketqa train)
#   (M6) MiniLM-L6 fine-tuned alone                                 (pocketqa train)
#   (K6) MiniLM-L6, stage 2 from (T) through the bridge             (pocketqa distill --stage 2)
#   (M3) 3-layer MiniLM (layers 2, 4, 6 of the base) fine-tuned alone
#   (K3) the same 3-layer start, stage 2 from (T)
#   (S6) MiniLM-L6, stage 1 from (T), then (K6)'s stage 2 from there  (pocketqa distill --stage 1, --stage 2)
# Every run: one epoch over the slice, batch 16, bf16 autocast, the same seed; students start
# from the base MiniLM with a fresh QA head (as on the GPU). Dev: every 4th official dev
# question (2,969), as in bench/distill_cpu_small.sh.
#
#   PY=/path/to/python W=runs/cpu-t9 QUESTIONS=8000 bash bench/teacher_cpu_small.sh
# Needs runs/all-mpnet-base-v2 (pocketqa assemble-teacher). Results: $W/results.jsonl, $W/times.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
PY=${PY:-python}
W=${W:-runs/cpu-t9}
MPNET=${MPNET:-runs/all-mpnet-base-v2}
BASE=${BASE:-pip:all-MiniLM-L6-v2}
QUESTIONS=${QUESTIONS:-8000}
ONLY=${ONLY:-T M6 K6 M3 K3 S6}
DATA=${DATA:-../shared/data/squad2}
mkdir -p "$W"
touch "$W/times.txt"

t() { local n=$1; shift; local s=$(date +%s); "$@" > "$W/$n.log" 2>&1; local rc=$?
      echo "$n rc=$rc $(( $(date +%s) - s ))s" | tee -a "$W/times.txt"; return $rc; }
source bench/cpu_runs.sh  # ev, student3
want() { [[ " $ONLY " == *" $1 "* ]]; }

[ -f "$W/train.json" ] || t slice $PY bench/squad_slice.py --data "$DATA" --out "$W" --questions "$QUESTIONS"
C=(--train "$W/train.json" --batch-size 16 --warmup 0.1 --weight-decay 0.01 --cache-dir "$W/cache" --overwrite
   --device cpu --precision bf16 --seed 42 --log-steps 25)
D=(--stage2-epochs 1 --stage2-learning-rate 1e-4 --teacher-batch-size 32 --no-progress)

if want T; then
  t T $PY -m pocketqa train --model "$MPNET" --out "$W/T" "${C[@]}" --epochs 1 --learning-rate 4e-5 --save-steps 100 \
    --keep-checkpoints 1 && ev T "$W/T"
fi
if want M6; then
  t M6 $PY -m pocketqa train --model "$BASE" --out "$W/M6" "${C[@]}" --epochs 1 --learning-rate 1e-4 --save-steps 0 \
    && ev M6 "$W/M6"
fi
if want K6; then
  t K6 $PY -m pocketqa distill --teacher "$W/T" --student-base "$BASE" --stage 2 --out "$W/K6" "${C[@]}" "${D[@]}" \
    && ev K6 "$W/K6"
fi
if { want M3 || want K3; } && [ ! -d "$W/student3" ]; then
  t student3 student3 "$BASE" "$W/student3"
fi
if want M3; then
  t M3 $PY -m pocketqa train --model "$W/student3" --out "$W/M3" "${C[@]}" --epochs 1 --learning-rate 1e-4 \
    --save-steps 0 && ev M3 "$W/M3"
fi
if want K3; then
  t K3 $PY -m pocketqa distill --teacher "$W/T" --student "$W/student3" --stage 2 --out "$W/K3" "${C[@]}" "${D[@]}" \
    && ev K3 "$W/K3"
fi
if want S6; then  # stage 1 (STAGE1_STEPS caps it; 0 = one epoch), then the same stage 2 as (K6)
  cap=(); [ "${STAGE1_STEPS:-0}" -gt 0 ] && cap=(--max-steps "$STAGE1_STEPS")
  t S6-stage1 $PY -m pocketqa distill --teacher "$W/T" --student-base "$BASE" --stage 1 --out "$W/S6-stage1" \
    "${C[@]}" --stage1-epochs 1 --stage1-learning-rate 1e-4 --no-progress "${cap[@]}" \
  && t S6 $PY -m pocketqa distill --teacher "$W/T" --student "$W/S6-stage1" --stage 2 --out "$W/S6" "${C[@]}" "${D[@]}" \
  && ev S6 "$W/S6"
fi
cat "$W/times.txt" "$W/results.jsonl"
