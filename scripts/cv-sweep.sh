#!/usr/bin/env bash
# Cross-validates one recipe and appends its line to benches/cv-recipes.tsv (a benchmark, not
# a test: a 5-fold cv of the googlenet recipe takes about 12 minutes on 2 cores).
#
#   scripts/cv-sweep.sh NAME [inception cv flags...]
#
# Writes runs/sweep/NAME/ (the cv folder) and runs/sweep/NAME.log. The line's last column is a
# digest of the folds: compare two rows by their means only when it is the same (otherwise
# `inception compare` pairs them image by image). Environment: INCEPTION (the
# binary, default target/release/inception), DATA (default data/monkeypox),
# NICE (niceness, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
bin=${INCEPTION:-target/release/inception}
data=${DATA:-data/monkeypox}
out=runs/sweep/$name
mkdir -p runs/sweep
if [ -e "$out/plan.json" ]; then
  cmd=("$bin" cv --resume "$out" --json)
else
  cmd=("$bin" cv --data "$data" --out "$out" --json "$@")
fi
start=$(date +%s)
nice -n "${NICE:-10}" "${cmd[@]}" > "$out.json" 2> "$out.log"
secs=$(( $(date +%s) - start ))
python3 - "$out.json" "$name" "$secs" "$*" "$out/oof.csv" >> benches/cv-recipes.tsv <<'PY'
import csv, json, sys, datetime, zlib
path, name, secs, flags, oof = sys.argv[1:]
# Which images each fold held: rows with the same digest were cut into the same folds.
folds = sorted((r["path"], r["fold"]) for r in csv.DictReader(open(oof, newline="")))
digest = "%08x" % zlib.crc32("".join(p + "\t" + f + "\n" for p, f in folds).encode())
r = json.load(open(path))
def m(a, key):
    s = next(x for x in a["summary"] if x["measure"] == key)
    return f'{s["mean"]:.3f} ± {s["std"]:.3f}'
def ci(a):
    s = a["summary"][0]
    return f'{s["ci95"][0]:.3f}–{s["ci95"][1]:.3f}'
mo, tta, best = r["model"], r["model_tta"], r["best"]
pooled = mo["pooled"]["accuracy"]
train_s = sum(r["train_seconds"])
print("\t".join([
    datetime.date.today().isoformat(), name, flags or "(recipe as is)", str(r["folds"]),
    m(mo, "accuracy"), ci(mo), m(mo, "macro_f1"), m(mo, "roc_auc"), m(mo, "sensitivity"),
    m(mo, "specificity"), f"{pooled:.3f}", m(tta, "accuracy"),
    m(best, "accuracy") if best else "-", f"{train_s/60:.1f}", digest,
]))
PY
tail -n 1 benches/cv-recipes.tsv
