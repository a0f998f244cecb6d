# Shared by bench/distill_cpu_small.sh, bench/augment_check_cpu.sh and bench/teacher_cpu_small.sh (sourced, not run).
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

student3() {  # from out: a 3-layer student (embeddings + layers 2, 4, 6 of from, fresh QA head unless from has one)
  $PY - "$1" "$2" <<'PYEOF'
import sys
from pocketqa.distill import build_student
from pocketqa.models import load_tokenizer, resolve_model, save_qa_model
path = resolve_model(sys.argv[1])
m, info = build_student(path, layers=3, seed=42)
save_qa_model(m, load_tokenizer(path), sys.argv[2], meta={"student": info})
print(info)
PYEOF
}
