#!/bin/bash
# cl_hpc run=r1 task=train guard: written by cl_hpc (cl_hpc/execute/slurm/sbatch.py)
#SBATCH --job-name=cl_hpc.r1.train.guard
#SBATCH --comment='cl_hpc run=r1 task=train guard'
#SBATCH --partition=gpu
#SBATCH --account=ml-team
#SBATCH --qos=high
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=1024M
#SBATCH --time=00:10:00
#SBATCH --dependency=afterany:123
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --output=/runs/r1/tasks/train/logs/%j_0_log.out
#SBATCH --error=/runs/r1/tasks/train/logs/%j_0_log.err
#SBATCH --open-mode=append
#SBATCH --signal=B:USR2@30

set -e
# setup (cluster.setup)
module load cuda/12.4
source /home/me/venv/bin/activate
exec env PYTHONUNBUFFERED=1 /venv/bin/python -m cl_hpc.execute.slurm.guard /runs/r1 train 2
