"""Pure parsers of Slurm command output (scontrol, sacct, squeue, sacctmgr); no subprocess here.

Each parser is tested with output pasted from a real Slurm 22.05 cluster (tests/unit/test_slurm_parse.py).
The commands themselves run through commands.py (timeouts, retries, errors); its callers stay a few lines long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from cl_hpc.states import AttemptState, TextEnum

# A new `Key=` starts after whitespace. Slurm's keys are CamelCase (`CPUs/Task`, `AllocNode:Sid`,
# `MCS_label`), so requiring a capital first letter keeps free text such as our own job comment
# `Comment=cl_hpc run=X task=Y` in one value; `OS=Linux 6.1 #1 SMP` has no `=` after its words.
_KEY_BOUNDARY = re.compile(r"(\s+)(?=[A-Z][A-Za-z0-9_/:]*=)")
_UNLIMITED = {"UNLIMITED", "INFINITE"}
_NULL = {"", "(null)", "N/A", "NONE"}


class SlurmState(TextEnum):
    """Slurm's job states, as sacct and squeue print them (Slurm 22.05, `man sacct` JOB STATE CODES).

    Slurm's vocabulary, not ours: what each means for an attempt record (AttemptState) or a unit
    (State) is decided here, in LIVE_STATES, SELF_REPORTING and unrecorded_end. A state this
    list lacks (a newer Slurm's) stays a plain string, which counts as an end.
    """

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    RESIZING = "RESIZING"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    COMPLETING = "COMPLETING"
    STAGE_OUT = "STAGE_OUT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # sacct: "CANCELLED by <uid>"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    PREEMPTED = "PREEMPTED"
    REVOKED = "REVOKED"


_S = SlurmState
# Job states in which a job has not ended (sacct may still show them a moment after the end).
LIVE_STATES = frozenset({_S.PENDING, _S.RUNNING, _S.REQUEUED, _S.REQUEUE_HOLD, _S.REQUEUE_FED, _S.RESV_DEL_HOLD,
                         _S.RESIZING, _S.SUSPENDED, _S.STOPPED, _S.SPECIAL_EXIT, _S.SIGNALING, _S.CONFIGURING,
                         _S.COMPLETING, _S.STAGE_OUT})
# States in which the job still writes its own attempt record (or already has).
SELF_REPORTING = LIVE_STATES | {_S.COMPLETED}


def slurm_state(text: str) -> str:
    """sacct's State column as one state: "CANCELLED by 0" -> SlurmState.CANCELLED; a state this
    Slurm version has and SlurmState lacks stays the plain word."""
    word = text.split(" ")[0]
    try:
        return SlurmState(word)
    except ValueError:
        return word


def unrecorded_end(state: str) -> AttemptState | None:
    """How an attempt ended that its job could not record, from the job's Slurm state: None while
    the job runs or once it completed (the job writes those records itself); FAILED for every
    other end (a time limit, a memory kill, a node failure, a preemption, scancel), which the
    retry guard retries. (A job cancelled before it started is no attempt: reconcile marks the
    unit CANCELLED instead.)"""
    return None if state in SELF_REPORTING else AttemptState.FAILED


_MEM_UNITS = {"B": 1 / 1024**2, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_scontrol_records(text: str) -> list[dict[str, str]]:
    """`scontrol show partition|node|job -o`: one record per line, `Key=Value` separated by spaces.

    Lines without `=` (e.g. "No partitions in the system") are skipped. A key seen twice in a line
    can only be free text (a comment that says `Partition=x`), so it is glued back onto the value
    before it. Not meant for `-d` job output, whose per-node `Nodes=` groups repeat keys.
    """
    return [_record(line) for line in text.splitlines() if "=" in line]


def _record(line: str) -> dict[str, str]:
    pieces = _KEY_BOUNDARY.split(line.strip())  # [chunk, sep, chunk, sep, chunk, ...]
    record: dict[str, str] = {}
    last = ""
    for i in range(0, len(pieces), 2):
        key, has_eq, value = pieces[i].partition("=")
        if last and (not has_eq or key in record):
            record[last] += pieces[i - 1] + pieces[i]  # keep the value's own spacing
        else:
            record[key], last = value, key
    return record


def parse_time_min(text: str) -> float | None:
    """Slurm time (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`) in minutes.

    `UNLIMITED`/`INFINITE` give None (no limit); anything else raises ValueError.
    """
    value = text.strip()
    if value.upper() in _UNLIMITED:
        return None
    days_text, dash, rest = value.partition("-")
    if not dash:
        days_text, rest = "0", value
    fields = [days_text, *rest.split(":")]
    if len(fields) > 4 or not all(f.isdigit() for f in fields):  # isdigit also refuses "" and "-1"
        raise ValueError(f"not a Slurm time: {text!r} (expected e.g. 30, 01:00:00, 2-00:00:00, UNLIMITED)")
    days, *parts = (int(f) for f in fields)
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS: after the day the first field is hours
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:  # MM or MM:SS
        hours, minutes, seconds = 0, parts[0], (parts + [0])[1]
    return days * 1440 + hours * 60 + minutes + seconds / 60


def parse_mem_mb(text: str, bare_unit: str = "M") -> float | None:
    """A memory size such as `123456K`, `1.5G`, `200M`, `4000Mn`, `1000Mc`, `0` in MiB; "" gives None.

    Slurm's K/M/G are powers of 1024. A trailing `n`/`c` (per node / per CPU, older sacct ReqMem)
    is dropped: the caller knows which it asked for. A bare number is in ``bare_unit``: M for
    --mem style values, B for `sacct --noconvert` MaxRSS.
    """
    value = text.strip()
    if not value:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([BKMGTP]?)[nc]?", value, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a Slurm memory size: {text!r} (expected e.g. 123456K, 1.5G, 4000Mn)")
    number, unit = match.groups()
    return float(number) * _MEM_UNITS[(unit or bare_unit).upper()]


def mem_mb_or_none(text: str, bare_unit: str = "M") -> float | None:
    """``parse_mem_mb`` for sacct's accounting fields, where odd values mean "not known yet".

    sacct prints such values for running or half-accounted jobs (seen: ReqMem "16?").
    """
    try:
        return parse_mem_mb(text or "", bare_unit=bare_unit)
    except ValueError:
        return None


def expand_hostlist(text: str) -> tuple[str, ...]:
    """`vm`, `node[01-03,05]`, `a[1-2]b[1-2],c` -> every host name, zero padding kept."""
    if text.strip() in _NULL:
        return ()
    items = re.split(r",(?![^\[]*\])", text.strip())  # commas outside brackets separate hosts
    return tuple(host for item in items for host in _expand_one(item))


def _expand_one(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    head, tail = item[: match.start()], _expand_one(item[match.end():])
    return [head + middle + rest for middle in _expand_ranges(match.group(1)) for rest in tail]


def _expand_ranges(spec: str) -> list[str]:
    out: list[str] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        width = len(low)  # node[01-10] pads to the width of the lower bound
        out += [f"{n:0{width}d}" for n in range(int(low), int(high or low) + 1)]
    return out


def parse_gres_gpus(text: str) -> dict[str, int]:
    """GPU counts per type from a node's `Gres=`: `gpu:fake:2`, `gpu:2`, `gpu:a100:4(S:0-1),gpu:v100:2`.

    Untyped GPUs count under "". Other gres (mps, shard, ...) are ignored.
    """
    counts: dict[str, int] = {}
    if text.strip() in _NULL:
        return counts
    for item in re.split(r",(?![^(]*\))", text.strip()):  # (S:0,1) socket lists hold commas
        name, *rest = item.split("(")[0].split(":")
        if name != "gpu":
            continue
        count = int(rest.pop()) if rest and rest[-1].isdigit() else 1  # `gpu:a100` means one
        gpu_type = ":".join(rest)
        counts[gpu_type] = counts.get(gpu_type, 0) + count
    return counts


@dataclass(frozen=True)
class PartitionInfo:
    name: str
    is_default: bool
    max_time_min: float | None  # None = UNLIMITED
    nodes: tuple[str, ...]
    allow_accounts: frozenset[str] | None  # None = ALL
    deny_accounts: frozenset[str]
    allow_qos: frozenset[str] | None  # None = ALL
    deny_qos: frozenset[str]
    max_nodes: int | None  # None = UNLIMITED
    max_cpus_per_node: int | None
    max_mem_per_node_mb: int | None
    def_mem_per_cpu_mb: int | None
    state: str = "UP"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    cpus: int  # CPUTot: what a job's cpus-per-task x tasks-per-node is compared with
    real_memory_mb: int
    gpus: int  # all GPUs, typed or not
    gpu_types: Mapping[str, int] = field(default_factory=dict, hash=False)  # "" = untyped
    features: frozenset[str] = frozenset()
    state: str = ""
    partitions: tuple[str, ...] = ()


def _limit(value: str | None) -> int | None:
    """An integer limit; UNLIMITED, absent or (null) gives None."""
    if value is None or value.strip().upper() in _UNLIMITED | _NULL:
        return None
    return int(value)


def _name_set(value: str | None) -> frozenset[str]:
    return frozenset() if value is None or value in _NULL else frozenset(value.split(","))


def _allow_set(value: str | None) -> frozenset[str] | None:
    return None if value is None or value == "ALL" else _name_set(value)


def partitions_from(records: Sequence[Mapping[str, str]]) -> list[PartitionInfo]:
    """`scontrol show partition -o` records as PartitionInfo."""
    return [
        PartitionInfo(
            name=r["PartitionName"], is_default=r.get("Default") == "YES",
            max_time_min=parse_time_min(r.get("MaxTime", "UNLIMITED")),
            nodes=expand_hostlist(r.get("Nodes", "")),
            allow_accounts=_allow_set(r.get("AllowAccounts")), deny_accounts=_name_set(r.get("DenyAccounts")),
            allow_qos=_allow_set(r.get("AllowQos")), deny_qos=_name_set(r.get("DenyQos")),
            max_nodes=_limit(r.get("MaxNodes")), max_cpus_per_node=_limit(r.get("MaxCPUsPerNode")),
            max_mem_per_node_mb=_limit(r.get("MaxMemPerNode")), def_mem_per_cpu_mb=_limit(r.get("DefMemPerCPU")),
            state=r.get("State", "UP"),
        )
        for r in records
    ]


def nodes_from(records: Sequence[Mapping[str, str]]) -> list[NodeInfo]:
    """`scontrol show node -o` records as NodeInfo."""
    nodes = []
    for r in records:
        gpu_types = parse_gres_gpus(r.get("Gres", ""))
        # A constraint may name an available feature the node can be rebooted into, not only active ones.
        features = _name_set(r.get("AvailableFeatures")) | _name_set(r.get("ActiveFeatures"))
        nodes.append(NodeInfo(
            name=r["NodeName"], cpus=int(r.get("CPUTot", "0")), real_memory_mb=int(r.get("RealMemory", "0")),
            gpus=sum(gpu_types.values()), gpu_types=gpu_types, features=features, state=r.get("State", ""),
            partitions=tuple(sorted(_name_set(r.get("Partitions")))),
        ))
    return nodes


def parse_sacct(text: str, fields: Sequence[str]) -> list[dict[str, str]]:
    """`sacct -n -P -o <fields>` rows as dicts keyed by ``fields``.

    A `|` inside a value cannot be told from the separator; the extra pieces are joined into the
    last field, so put a free-text field (Comment, JobName) last.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < len(fields):
            raise ValueError(f"sacct line has {len(parts)} fields, expected {len(fields)} "
                             f"({','.join(fields)}): {line!r}")
        parts[len(fields) - 1:] = ["|".join(parts[len(fields) - 1:])]
        rows.append(dict(zip(fields, parts)))
    return rows


def parse_job_id(stdout: str) -> str:
    """`sbatch --parsable`: ``<id>`` or ``<id>;<cluster>`` (a federation or multi-cluster setup)."""
    lines = stdout.strip().splitlines()
    job_id = lines[-1].split(";")[0].strip() if lines else ""  # a site's submit plugin may print lines before it
    if not job_id.isdigit():
        raise ValueError(f"sbatch --parsable printed {stdout.strip()!r}, not a job id (`<id>` or `<id>;<cluster>`)")
    return job_id


@dataclass(frozen=True)
class SqueueEntry:
    job_id: str  # as squeue prints it: `123`, `123_4`, `123_[5-9%2]`
    base_id: str  # the job (or array job) id: `123`
    array_task: str | None  # `4` or `[5-9%2]` (pending shards); None for a plain job
    state: str  # a SlurmState (PENDING, RUNNING, ...), or the word of a state it lacks
    reason: str  # None, Dependency, Resources, JobArrayTaskLimit, ...


def parse_squeue(text: str) -> list[SqueueEntry]:
    """`squeue -h -o '%i|%T|%r'`."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, state, reason = (line.split("|", 2) + ["", ""])[:3]
        base_id, sep, task = job_id.strip().partition("_")
        entries.append(SqueueEntry(job_id.strip(), base_id, task if sep else None, slurm_state(state.strip()),
                                   reason.strip()))
    return entries


def parse_scontrol_config(text: str) -> dict[str, str]:
    """`scontrol show config`: `Key   = Value` lines; headers and section titles are skipped."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


@dataclass(frozen=True)
class Association:
    account: str
    partition: str | None  # None = valid in every partition
    qos: frozenset[str]  # QOS the association may use; empty = not listed


def parse_associations(text: str) -> list[Association]:
    """`sacctmgr -n -P show assoc user=<u> format=account,partition,qos`."""
    out = []
    for line in text.splitlines():
        if line.strip():
            account, partition, qos = (line.split("|") + ["", ""])[:3]
            out.append(Association(account, partition or None, _name_set(qos)))
    return out


def parse_assoc_mgr(text: str, user: str) -> tuple[list[Association], str | None]:
    """`scontrol show assoc_mgr users=<u> flags=assoc`: the user's associations as slurmctld holds
    them, and the account of the one marked ``DefAssoc=Yes``. The controller's copy answers at once
    where sacctmgr asks slurmdbd (0.27 s on the test cluster); it lists no QOS, so the QOS check
    still needs sacctmgr where Slurm enforces QOS."""
    records: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("ClusterName="):
            records.append({})
        if records:
            records[-1].update(_record(line.strip()))
    mine = [r for r in records if r.get("UserName", "").split("(")[0] == user]
    assocs = [Association(r.get("Account", ""), r.get("Partition") or None, frozenset()) for r in mine]
    default = next((r.get("Account") for r in mine if r.get("DefAssoc") == "Yes"), None)
    return assocs, default
