#!/usr/bin/env bash
# Cross-validation as a Slurm job array: one fold per task, each on its own GPU; the task that
# finishes last writes the summary (cv.json, oof.csv) into the cv folder. Submit from the
# repository root, with --array matching the number of folds (FOLDS, default 5):
#
#   sbatch --array=0-4 scripts/slurm-cv.sh data/monkeypox runs/cv-slurm [inception cv flags...]
#
# A task that was cut short resumes its fold when run again (its last.pt is kept);
# `inception cv --collect runs/cv-slurm` rebuilds the summary at any time once all folds are done.
#SBATCH --job-name=inception-cv
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --output=%x-%A_%a.out
set -euo pipefail
if [ $# -lt 2 ] || [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  echo "usage: sbatch --array=0-4 $0 DATA CV_DIR [inception cv flags...]" >&2
  exit 2
fi
data=$1
out=$2
shift 2
exec "${INCEPTION:-target/release/inception}" cv --data "$data" --out "$out" \
  --folds "${FOLDS:-5}" --only-fold "$SLURM_ARRAY_TASK_ID" "$@"
