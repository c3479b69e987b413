#!/bin/bash
# cl_hpc run=r1 task=a b;c: written by cl_hpc (cl_hpc/execute/slurm/sbatch.py)
#SBATCH --job-name='cl_hpc.r1.it'"'"'s $(rm -rf ~)'
#SBATCH --comment='cl_hpc run=r1 task=a b;c'
#SBATCH --account='a'"'"'b'
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --time=00:01:00
#SBATCH --chdir='/tmp/with space'
#SBATCH --output='/runs/r 1/logs/%j_0_log.out'
#SBATCH --error='/runs/r 1/logs/%j_0_log.err'
#SBATCH --open-mode=append
#SBATCH --signal=B:USR2@90

set -e
exec /venv/bin/python -u -m cl_hpc.execute.slurm.job /runs/r1 train 0 0:1,1:1,2:1,3:2
