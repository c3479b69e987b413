#!/bin/bash
# cl_hpc run=r1 task=ingest: written by cl_hpc (cl_hpc/execute/slurm/sbatch.py)
#SBATCH --job-name=cl_hpc.r1.ingest
#SBATCH --comment='cl_hpc run=r1 task=ingest'
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=2048M
#SBATCH --time=00:10:00
#SBATCH --output=/runs/r1/tasks/ingest/logs/%j_0_log.out
#SBATCH --error=/runs/r1/tasks/ingest/logs/%j_0_log.err
#SBATCH --open-mode=append
#SBATCH --signal=B:USR2@90

set -e
exec /venv/bin/python -u -m cl_hpc.execute.slurm.job /runs/r1 ingest 0 1
