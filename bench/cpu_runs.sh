# Shared by bench/distill_cpu_small.sh and bench/augment_check_cpu.sh (sourced, not run).
# Needs $PY, $W and a function t (name command...) that runs a command into $W/name.log.

ev() {  # name model_dir: scores the model on $W/dev.json, appends one line to $W/results.jsonl
  t "eval_$1" $PY -m pocketqa evaluate --model "$2" --data "$W/dev.json" --threads 2 --out "$W/eval_$1.json"
  $PY - "$1" "$W/eval_$1.json" >> "$W/results.jsonl" <<'PYEOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
r = r.get("scores", r)
print(json.dumps({"run": name, **{k: r[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh", "total")}}))
PYEOF
}
