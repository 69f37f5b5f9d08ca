#!/usr/bin/env bash
# The few-label recipe's development protocol (docs/study.md, "The few-label recipe"): each candidate recipe at 100
# labels over dev-recipe's seeds, the labelled rows drawn outside study-lowlabel's student rows and scored on
# study-lowlabel's validation rows; then each recipe's mean and sd over the seeds.
#   bash scripts/dev-recipes.sh ROOT [student|teacher] [RECIPE...]
# ROOT: a folder outside the checkout; a stopped run resumes. RECIPE: run only these (the table shows every recipe
# with finished cells).
# student: the baseline student under each recipe (no teacher is trained). teacher: the fine-tuned teacher under
# each recipe, beside a kd student cut to a few steps on 500 rows, there only because a run needs a method.
set -euo pipefail
root=${1:?usage: bash scripts/dev-recipes.sh ROOT [student|teacher]}
role=${2:-student}
only=" ${*:3} "
kd=${KD:-.venv/bin/kd}
py=${PY:-.venv/bin/python}
[ -f "$root/data/test.csv" ] || $py scripts/development_split.py study-lowlabel "$root/data"
if [ "$role" = student ]; then
  # name | settings: the preset's recipe, then the few-sample fine-tuning literature's levers (Mosbach et al.
  # 2021: a smaller learning rate for longer, with warmup; Zhang et al. 2021: the top layer re-initialised), and
  # batches drawn at random: grouped by length, 100 rows make the same 4 batches every epoch (3 of 32, 1 of 4)
  s=student.train
  recipes=(
    "old|"
    "old-random|$s.group_by_length=false"
    "lr5e-5-200|$s.learning_rate=5e-5 $s.min_steps=200 $s.warmup=0.1"
    "lr5e-5-200-random|$s.learning_rate=5e-5 $s.min_steps=200 $s.warmup=0.1 $s.group_by_length=false"
    "lr5e-5-200-reinit1|$s.learning_rate=5e-5 $s.min_steps=200 $s.warmup=0.1 $s.reinit_layers=1"
  )
  common=()
  model=baseline
else
  t=teacher.train
  recipes=(
    "teacher-old|"
    "teacher-random|$t.group_by_length=false"
    "teacher-lr5e-5-120|$t.learning_rate=5e-5 $t.min_steps=120 $t.warmup=0.1"
  )
  common=(--set "methods=[kd]" --set student.train_rows=500 --set student.train.min_steps=1
          --set student.train.epochs=0.01)
  model=teacher
fi
for r in "${recipes[@]}"; do
  name=${r%%|*}; sets=()
  [ "$only" = "  " ] || [[ "$only" == *" $name "* ]] || continue
  for x in ${r#*|}; do sets+=(--set "$x"); done
  $kd study dev-recipe --data "$root/data" --run-dir "$root/$name" "${common[@]}" "${sets[@]}" > "$root/$name.log" 2>&1
done
$py - "$root" "$model" "${recipes[@]%%|*}" <<'PY'
# each recipe's mean and sd over the dev seeds, and its difference from the first recipe paired by seed (the same
# seed: the same labelled rows)
import json, os, statistics, sys
from kd.seeds import mean_interval
root, model, names = sys.argv[1], sys.argv[2], sys.argv[3:]
acc, secs = {}, {}
for name in list(names):
    if not os.path.isfile(f"{root}/{name}/study.json"):
        names.remove(name)
        continue
    cells = {c["seed"]: c for c in json.load(open(f"{root}/{name}/study.json"))["cells"] if c["state"] == "finished"}
    acc[name] = {s: 100 * c["scores"][model]["accuracy"] for s, c in cells.items()}
    times = [c["times"]["distilled" if model == "teacher" else model] for c in cells.values()]
    secs[name] = statistics.mean(t["teacher" if model == "teacher" else "student"] for t in times)
first = names[0]
print(f"| recipe | seeds | {model} validation accuracy (%), mean | sd (pt) | min | max | − {first} (pt), paired, "
      "95 % CI | train s per seed |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name in names:
    a = list(acc[name].values())
    both = sorted(set(acc[name]) & set(acc[first]))
    d = mean_interval([acc[name][s] - acc[first][s] for s in both]) if name != first and len(both) > 1 else None
    diff = f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" if d else "–"
    print(f"| {name} | {len(a)} | {statistics.mean(a):.2f} | {statistics.stdev(a):.2f} | {min(a):.2f} | {max(a):.2f} "
          f"| {diff} | {secs[name]:.0f} |")
PY
