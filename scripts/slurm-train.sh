#!/usr/bin/env bash
#SBATCH --job-name=inception-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
# Data-parallel training over a Slurm allocation: one process per GPU, given torchrun's
# variables from Slurm's (RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, WORLD_SIZE; MASTER_ADDR is the
# first node).
#
#   sbatch scripts/slurm-train.sh --data /shared/monkeypox --out /shared/runs/ddp [train flags]
#
# Every node needs the dataset (and, for --resume, the run folder) at the same path; rank 0
# writes the run folder. Not run here (no Slurm on the development machine): adapt the
# #SBATCH lines to your cluster.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_ADDR
export MASTER_PORT=${MASTER_PORT:-29500}
export WORLD_SIZE=$SLURM_NTASKS
export LOCAL_WORLD_SIZE=${SLURM_NTASKS_PER_NODE:-1}
srun bash -c 'RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID exec target/release/inception train "$@"' \
  inception "$@"
