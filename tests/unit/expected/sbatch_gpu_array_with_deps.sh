#!/bin/bash
# cl_hpc run=r1 task=train: written by cl_hpc (cl_hpc/execute/slurm/sbatch.py)
#SBATCH --job-name=cl_hpc.r1.train
#SBATCH --comment='cl_hpc run=r1 task=train'
#SBATCH --partition=gpu
#SBATCH --account=ml-team
#SBATCH --qos=high
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=8
#SBATCH --mem=65536M
#SBATCH --time=1-01:00:00
#SBATCH --gres=gpu:a100:2
#SBATCH --constraint='a100|h100'
#SBATCH --exclusive
#SBATCH --mail-type=FAIL
#SBATCH --array=0,1,2,3%2
#SBATCH --dependency=afterok:101,aftercorr:102
#SBATCH --kill-on-invalid-dep=yes
#SBATCH --output=/runs/r1/tasks/train/logs/%A_%a_0_log.out
#SBATCH --error=/runs/r1/tasks/train/logs/%A_%a_0_log.err
#SBATCH --open-mode=append
#SBATCH --signal=USR2@120
#SBATCH --mail-user=me@example.org

set -e
# setup (cluster.setup)
module load cuda/12.4
source /home/me/venv/bin/activate
srun --unbuffered --output /runs/r1/tasks/train/logs/%A_%a_%t_log.out --error /runs/r1/tasks/train/logs/%A_%a_%t_log.err /venv/bin/python -u -m cl_hpc.execute.slurm.job /runs/r1 train 0 0:1,1:1,2:1,3:2
