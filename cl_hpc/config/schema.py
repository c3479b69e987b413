"""Typed schemas for the whole configuration tree, registered in Hydra's ConfigStore.

The values live in ``conf/*.yaml``; these dataclasses give every key a type, so a typo or a wrong
type is rejected when Hydra composes the config, before anything is planned or submitted.
Portable fields sit on the base classes; backend-only fields sit on the backend's subclass (the
shape of hydra-submitit-launcher's ``config.py``). The right-sizer speaks in ``Resources``, never
in scheduler strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cl_hpc.config.experiment import ExperimentConf
from cl_hpc.config.labels import LabelsConf
from cl_hpc.config.ml import DataConf, FitConf
from cl_hpc.config.resources import Resources
from cl_hpc.config.serving import ServeConf


@dataclass
class TaskConf:
    """One node of the pipeline DAG."""

    target: str = MISSING  # dotted path of the callable, e.g. cl_hpc.tasks.train.run
    params: Dict[str, Any] = field(default_factory=dict)  # keyword arguments for the callable
    depends_on: List[str] = field(default_factory=list)  # names of upstream tasks
    resources: Resources = field(default_factory=Resources)
    retries: int = 0  # extra attempts after a failure (0 = run once)
    # Fan-out: a list; one shard runs per element and gets it as ctx.item. Typed Any so that a
    # non-list gets cl_hpc's own error (which names the task) rather than a bare type error.
    foreach: Any = None


@dataclass
class PipelineConf:
    name: str = MISSING  # recorded with every run; keys the profile history
    tasks: Dict[str, TaskConf] = field(default_factory=dict)


@dataclass
class ClusterConf:
    """Where the tasks run. ``mode`` picks the executor backend."""

    mode: str = MISSING  # local | inprocess | slurm


@dataclass
class LocalClusterConf(ClusterConf):
    """One subprocess per task on this machine, admitted while the declared resources fit."""

    mode: str = "local"
    cpus: Optional[int] = None  # cores to hand out; None = the cores this process may use
    mem_gb: Optional[float] = None  # memory to hand out; None = 90% of the machine's RAM
    gpus: Optional[int] = None  # GPUs to hand out; None = what CUDA_VISIBLE_DEVICES/NVML show
    poll_s: float = 0.2  # how often the local scheduler looks for finished tasks


@dataclass
class InProcessClusterConf(LocalClusterConf):
    """Every task runs in the launcher's own process, one after another: use it with pdb."""

    mode: str = "inprocess"


@dataclass
class SlurmClusterConf(ClusterConf):
    """Hand the whole DAG to Slurm: one job per task, one array per fan-out, native dependencies."""

    mode: str = "slurm"
    partition: Optional[str] = None  # for tasks that name none; None = the cluster's default partition
    account: Optional[str] = None  # for tasks that name none; None = your default account
    qos: Optional[str] = None  # for tasks that name none
    # shell lines each job runs before its task, e.g. ["module load cuda/12.4", "source ~/venv/bin/activate"]
    setup: List[str] = field(default_factory=list)
    python: Optional[str] = None  # interpreter on the compute nodes; None = the launcher's own
    signal_delay_s: int = 90  # USR2 this long before the time limit: the window to checkpoint
    array_parallelism: Optional[int] = None  # at most this many shards of a fan-out at once; None = no cap
    submit_interval_s: float = 0.05  # pause between sbatch calls, to be gentle with slurmctld
    # Launch the task with srun (one process per task, each with its SLURM_PROCID). None = only when
    # the task runs more than one process (nodes x tasks_per_node > 1); a single process runs in the
    # batch step itself, which saves a job step (srun + slurmstepd) on every job.
    use_srun: Optional[bool] = None
    check_limits: bool = True  # check every request against `scontrol show partition/node` before submitting
    extra: Dict[str, Any] = field(default_factory=dict)  # sbatch options for every job, e.g. {mail-type: FAIL}


@dataclass
class LaunchConf:
    dry_run: bool = False  # print the plan (and a mermaid graph) and submit nothing
    # Wait and show live progress. None = yes on a terminal, and for local/inprocess runs
    # (their results are on this machine); a detached run goes on after the launcher exits.
    follow: Optional[bool] = None
    resume: Optional[str] = None  # a run id, or "latest": re-run only what failed or changed
    run_id: Optional[str] = None  # force a run id (default: a new, time-sortable one)
    reason: Optional[str] = None  # why this run was started (cl_hpc.watch names the trigger); kept in run.json


@dataclass
class StoreConf:
    root: str = "store"  # folder of the SQLite index (cl_hpc.db); relative = to the launch dir
    # SQLite journal mode: "delete" (rollback journal) is safe on network filesystems; use "wal"
    # only on a local disk.
    journal_mode: str = "delete"
    busy_timeout_s: float = 60.0  # how long a writer waits for the lock before retrying


@dataclass
class ProfileConf:
    """The profiler every task attempt runs under (cl_hpc/profile/); its record feeds the right-sizer."""

    enabled: bool = True  # write profile.json for every task attempt
    interval_s: float = 1.0  # sampling period of CPU, memory and (where present) NVML
    warmup_steps: int = 5  # training steps left out of the steady-state figures (stall, p95 step)
    max_points: int = 4000  # samples kept per attempt; past it the series halves its resolution
    ceiling: bool = True  # measure the matmul ceiling of the device (cached) for MFU
    flush_s: float = 30.0  # rewrite profile.json this often, so a killed attempt leaves its measurements


@dataclass
class RightsizeConf:
    """Size each task's next run from its profile history (cl_hpc/rightsize/)."""

    # off: the declared resources, no history read; suggest: print what would change and why;
    # auto: replace the declared resources with the recommendation (the plan shows each change).
    mode: str = "suggest"
    mem_margin: float = 1.2  # x the measured peak memory
    time_margin: float = 1.25  # x the predicted run time
    max_shrink: float = 0.3  # the most a sampled (inexact) memory peak may cut a request in one run


@dataclass
class Config:
    pipeline: PipelineConf = MISSING
    # Typed Any so each backend's own schema (its group option's defaults entry) validates it.
    cluster: Any = MISSING
    data: DataConf = MISSING
    # The workload: `_target_` configs of a LightningModule and a LightningDataModule meeting the model
    # contract (cl_hpc/learn/contract.py), with their init arguments; conf/model/*.yaml sets both.
    model: Dict[str, Any] = field(default_factory=dict)
    datamodule: Dict[str, Any] = field(default_factory=dict)
    fit: FitConf = field(default_factory=FitConf)
    launch: LaunchConf = field(default_factory=LaunchConf)
    store: StoreConf = field(default_factory=StoreConf)
    profile: ProfileConf = field(default_factory=ProfileConf)
    rightsize: RightsizeConf = field(default_factory=RightsizeConf)
    # Retraining triggers read by `python -m cl_hpc.watch` (cl_hpc/learn/triggers.py TriggerConf:
    # time / volume / performance / drift, e.g. trigger.volume.min_new_fraction=0.2) and the drift
    # statistics (cl_hpc/learn/drift.py DriftConf); validated there, empty = their defaults.
    trigger: Dict[str, Any] = field(default_factory=dict)
    drift: Dict[str, Any] = field(default_factory=dict)
    # The label join (`python -m cl_hpc.labels join`, pipeline=labels): prediction log -> labelled landing zone
    labels: LabelsConf = field(default_factory=LabelsConf)
    run_root: str = "runs"  # where run directories go; relative = to the launch dir
    serve: ServeConf = field(default_factory=ServeConf)  # python -m cl_hpc.serve (conf/serve/default.yaml)
    # an experiment to start (python -m cl_hpc.experiment; conf/experiment/<kind>.yaml picks the kind)
    experiment: ExperimentConf = field(default_factory=ExperimentConf)


def register() -> None:
    """Register the schemas; conf/*.yaml name them in their defaults lists.

    They are stored at the root, not in the groups a user chooses from (cluster, data, model,
    pipeline): in a group, Hydra's --help offers them as options (``cluster=slurm_schema``) and
    composing one gives a config with no values. A group's yaml pulls its schema in with
    ``- /schema_<group>_<name>@_here_``.
    """
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="schema_pipeline", node=PipelineConf)
    cs.store(name="schema_cluster_local", node=LocalClusterConf)
    cs.store(name="schema_cluster_inprocess", node=InProcessClusterConf)
    cs.store(name="schema_cluster_slurm", node=SlurmClusterConf)
    cs.store(name="schema_data", node=DataConf)
    cs.store(name="schema_fit", node=FitConf)
    cs.store(name="schema_serve", node=ServeConf)
    cs.store(name="schema_experiment", node=ExperimentConf)
