"""Pure parsers of Slurm output and the pure pre-submit check, on tables of cases.

The string constants below are real output of the local Slurm 22.05 cluster
(scripts/slurm-local-up.sh: node `vm`, 8 CPUs, 20000 MB, Gres=gpu:fake:2, partitions debug
and long), pasted byte for byte; the hand-written records after them cover what that cluster
cannot show (hostlists, UNLIMITED, several GPU types, features, account limits).
"""

from __future__ import annotations

import pytest

from cl_hpc.config.resources import Resources
from cl_hpc.execute.slurm.cluster import ClusterInfo, resource_problems
from cl_hpc.execute.slurm.parse import (
    LIVE_STATES,
    Association,
    SlurmState,
    SqueueEntry,
    expand_hostlist,
    nodes_from,
    parse_assoc_mgr,
    parse_associations,
    parse_gres_gpus,
    parse_mem_mb,
    parse_sacct,
    parse_scontrol_config,
    parse_scontrol_records,
    parse_squeue,
    parse_time_min,
    partitions_from,
    slurm_state,
    unrecorded_end,
)
from cl_hpc.execute.slurm.reconcile import parse_sacct_states
from cl_hpc.states import AttemptState

# ---------------------------------------------------------------- real output (Slurm 22.05.8)

# scontrol show partition -o
PARTITIONS = (
    'PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=01:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=8 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=8,mem=20000M,node=1,billing=8,gres/gpu=2\n'  # noqa: E501  (one record per line, as scontrol -o prints it)
    'PartitionName=long AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=NO QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED MaxTime=2-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=8 TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED TRES=cpu=8,mem=20000M,node=1,billing=8,gres/gpu=2\n'  # noqa: E501  (one record per line, as scontrol -o prints it)
)

# scontrol show node -o (note the double spaces, and OS= holding spaces and '#')
NODES = (
    'NodeName=vm Arch=x86_64 CoresPerSocket=8  CPUAlloc=0 CPUEfctv=8 CPUTot=8 CPULoad=0.80 AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:fake:2 NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v669 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=20000 AllocMem=0 FreeMem=23114 Sockets=1 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,long  BootTime=2026-11-26T22:39:22 SlurmdStartTime=2026-11-26T23:08:10 LastBusyTime=2026-11-26T23:09:44 CfgTRES=cpu=8,mem=20000M,billing=8,gres/gpu=2 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n'  # noqa: E501  (one record per line, as scontrol -o prints it)
)

# scontrol show job -o: a running gres job with our --comment (lowercase `run=X`)
JOB_RUNNING = (
    'JobId=249 JobName=probe UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901599 Nice=0 Account=default QOS=normal JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:02 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-26T23:10:52 EligibleTime=2026-11-26T23:10:52 AccrueTime=2026-11-26T23:10:52 StartTime=2026-11-26T23:10:52 EndTime=2026-11-26T23:15:52 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-26T23:10:52 Scheduler=Main Partition=debug AllocNode:Sid=localhost:32240 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=200M,node=1,billing=1,gres/gpu=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=200M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/cap Comment=cl_hpc run=X task=Y  StdErr=/tmp/cap/249.out StdIn=/dev/null StdOut=/tmp/cap/249.out Power= TresPerNode=gres:gpu:fake:1 \n'  # noqa: E501  (one record per line, as scontrol -o prints it)
)

# scontrol show job -o: a job pending on afterok
JOB_DEPENDENT = (
    'JobId=251 JobName=held UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901597 Nice=0 Account=default QOS=normal JobState=PENDING Reason=Dependency Dependency=afterok:249(unfulfilled) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-26T23:10:52 EligibleTime=Unknown AccrueTime=Unknown StartTime=Unknown EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-26T23:10:52 Scheduler=Main Partition=debug AllocNode:Sid=localhost:32240 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=100M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/cap StdErr=/tmp/cap/251.out StdIn=/dev/null StdOut=/tmp/cap/251.out Power= \n'  # noqa: E501  (one record per line, as scontrol -o prints it)
)

# scontrol show job -o <array id>: the pending remainder, then one record per started shard
JOB_ARRAY = (
    'JobId=250 ArrayJobId=250 ArrayTaskId=2-5%2 ArrayTaskThrottle=2 JobName=arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901598 Nice=0 Account=default QOS=normal JobState=PENDING Reason=JobArrayTaskLimit Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-26T23:10:52 EligibleTime=Unknown AccrueTime=2026-11-26T23:10:52 StartTime=Unknown EndTime=Unknown Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-26T23:10:52 Scheduler=Main Partition=debug AllocNode:Sid=localhost:32240 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=100M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/cap StdErr=/tmp/cap/250_4294967294.out StdIn=/dev/null StdOut=/tmp/cap/250_4294967294.out Power= \n'  # noqa: E501  (one record per line, as scontrol -o prints it)
    'JobId=253 ArrayJobId=250 ArrayTaskId=1 ArrayTaskThrottle=2 JobName=arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901598 Nice=0 Account=default QOS=normal JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:02 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-26T23:10:52 EligibleTime=2026-11-26T23:10:52 AccrueTime=2026-11-26T23:10:52 StartTime=2026-11-26T23:10:52 EndTime=2026-11-26T23:15:52 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-26T23:10:52 Scheduler=Main Partition=debug AllocNode:Sid=localhost:32240 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=100M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/cap StdErr=/tmp/cap/250_1.out StdIn=/dev/null StdOut=/tmp/cap/250_1.out Power= \n'  # noqa: E501  (one record per line, as scontrol -o prints it)
    'JobId=252 ArrayJobId=250 ArrayTaskId=0 ArrayTaskThrottle=2 JobName=arr UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901598 Nice=0 Account=default QOS=normal JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:02 TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-26T23:10:52 EligibleTime=2026-11-26T23:10:52 AccrueTime=2026-11-26T23:10:52 StartTime=2026-11-26T23:10:52 EndTime=2026-11-26T23:15:52 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-26T23:10:52 Scheduler=Main Partition=debug AllocNode:Sid=localhost:32240 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,mem=100M,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=100M MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/cap StdErr=/tmp/cap/250_0.out StdIn=/dev/null StdOut=/tmp/cap/250_0.out Power= \n'  # noqa: E501  (one record per line, as scontrol -o prints it)
)

# squeue -h -o '%i|%T|%r' (the three jobs above, 2 s after submit)
SQUEUE = (
    '250_[2-5%2]|PENDING|JobArrayTaskLimit\n'
    '251|PENDING|Dependency\n'
    '249|RUNNING|None\n'
    '250_0|RUNNING|None\n'
    '250_1|RUNNING|None\n'
)

# sacct -n -P -o JobID,JobName,State,ExitCode,Elapsed,MaxRSS,ReqMem,AllocTRES,Comment
SACCT = (
    '249|probe|COMPLETED|0:0|00:00:15||200M|billing=1,cpu=1,gres/gpu=1,mem=200M,node=1|cl_hpc run=X task=Y\n'
    '249.batch|batch|COMPLETED|0:0|00:00:15|3084K||cpu=1,gres/gpu=1,mem=200M,node=1|\n'
    '251|held|COMPLETED|0:0|00:00:00||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '251.batch|batch|COMPLETED|0:0|00:00:00|||cpu=1,mem=100M,node=1|\n'
    '250_0|arr|COMPLETED|0:0|00:00:15||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '250_0.batch|batch|COMPLETED|0:0|00:00:15|3240K||cpu=1,mem=100M,node=1|\n'
    '250_1|arr|COMPLETED|0:0|00:00:15||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '250_1.batch|batch|COMPLETED|0:0|00:00:15|3276K||cpu=1,mem=100M,node=1|\n'
    '250_2|arr|COMPLETED|0:0|00:00:15||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '250_2.batch|batch|COMPLETED|0:0|00:00:15|3100K||cpu=1,mem=100M,node=1|\n'
    '250_3|arr|COMPLETED|0:0|00:00:15||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '250_3.batch|batch|COMPLETED|0:0|00:00:15|3248K||cpu=1,mem=100M,node=1|\n'
    '250_4|arr|COMPLETED|0:0|00:00:15||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '250_4.batch|batch|COMPLETED|0:0|00:00:15|3180K||cpu=1,mem=100M,node=1|\n'
    '250_5|arr|COMPLETED|0:0|00:00:15||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '250_5.batch|batch|COMPLETED|0:0|00:00:15|3236K||cpu=1,mem=100M,node=1|\n'
)

# same sacct fields: exit 3, scancel, killed over --mem=50M (no cgroups: FAILED 0:9)
SACCT_FAILED = (
    '259|fail|FAILED|3:0|00:00:00||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '259.batch|batch|FAILED|3:0|00:00:00|||cpu=1,mem=100M,node=1|\n'
    '260|canc|CANCELLED by 0|0:0|00:00:04||100M|billing=1,cpu=1,mem=100M,node=1|\n'
    '260.batch|batch|CANCELLED|0:15|00:00:04|3260K||cpu=1,mem=100M,node=1|\n'
    '261|oom|FAILED|0:9|00:00:01||50M|billing=1,cpu=1,mem=50M,node=1|\n'
    '261.batch|batch|CANCELLED by 0|0:9|00:00:01|322264K||cpu=1,mem=50M,node=1|\n'
)

# sacctmgr -n -P show assoc user=root cluster=local format=account,partition,qos
ASSOCS = (
    'research||normal\n'
    'default||normal\n'
    'root||normal\n'
)

# scontrol show config: its header and a few lines
CONFIG = (
    'Configuration data as of 2026-11-26T23:11:45\n'
    'AccountingStorageBackupHost = (null)\n'
    'AccountingStorageEnforce = associations\n'
    'AccountingStorageHost   = localhost\n'
    'AccountingStorageEnforce = associations\n'
    'ClusterName             = local\n'
    'DefMemPerCPU            = 1024\n'
    'EnforcePartLimits       = ALL\n'
)

SACCT_FIELDS = ["JobID", "JobName", "State", "ExitCode", "Elapsed", "MaxRSS", "ReqMem", "AllocTRES", "Comment"]

# ---------------------------------------------------------------- hand-written records

# A bigger, mixed cluster, in the same one-line format: what the local cluster cannot show.
BIG_PARTITIONS = (
    "PartitionName=cpu AllowAccounts=ALL AllowQos=ALL Default=YES MaxNodes=UNLIMITED MaxTime=UNLIMITED "
    "Nodes=cn[01-04] State=UP MaxMemPerNode=UNLIMITED DefMemPerCPU=2000\n"
    "PartitionName=gpu AllowAccounts=ml,vision AllowQos=normal,high Default=NO MaxNodes=2 MaxTime=1-00:00:00 "
    "Nodes=gn[1-2],big MaxCPUsPerNode=64 State=UP MaxMemPerNode=256000\n"
    "PartitionName=scratch AllowAccounts=ALL DenyAccounts=guest AllowQos=ALL DenyQos=low Default=NO "
    "MaxTime=30 Nodes=(null) State=INACTIVE\n"
)
BIG_NODES = (
    "NodeName=cn01 CPUTot=32 RealMemory=128000 Gres=(null) AvailableFeatures=(null) ActiveFeatures=(null) "
    "State=IDLE Partitions=cpu\n"
    "NodeName=cn02 CPUTot=32 RealMemory=128000 Gres=(null) AvailableFeatures=(null) ActiveFeatures=(null) "
    "State=DOWN+DRAIN Reason=Not responding [slurm@2026-11-26T22:39:22] Partitions=cpu\n"
    "NodeName=cn03 CPUTot=32 RealMemory=128000 Gres=(null) State=IDLE Partitions=cpu\n"
    "NodeName=cn04 CPUTot=32 RealMemory=128000 Gres=(null) State=IDLE Partitions=cpu\n"
    "NodeName=gn1 CPUTot=64 RealMemory=512000 Gres=gpu:a100:4(S:0-1) AvailableFeatures=a100,ib "
    "ActiveFeatures=a100,ib State=MIXED Partitions=gpu\n"
    "NodeName=gn2 CPUTot=16 RealMemory=192000 Gres=gpu:v100:2,gpu:t4:1 AvailableFeatures=v100,ib "
    "ActiveFeatures=v100 State=IDLE Partitions=gpu\n"
    "NodeName=big CPUTot=128 RealMemory=1024000 Gres=(null) AvailableFeatures=bigmem ActiveFeatures=bigmem "
    "State=IDLE Partitions=gpu\n"
)


# ---------------------------------------------------------------- scontrol records

@pytest.mark.parametrize("text, index, key, value", [
    (PARTITIONS, 0, "PartitionName", "debug"),
    (PARTITIONS, 0, "MaxTime", "01:00:00"),
    (PARTITIONS, 1, "MaxTime", "2-00:00:00"),
    (PARTITIONS, 0, "TRES", "cpu=8,mem=20000M,node=1,billing=8,gres/gpu=2"),  # '=' inside a value
    (PARTITIONS, 0, "JobDefaults", "(null)"),
    (NODES, 0, "OS", "Linux 6.18.44-fc-v669 #1 SMP PREEMPT_DYNAMIC @0"),  # spaces inside a value
    (NODES, 0, "CoresPerSocket", "8"),  # followed by two spaces
    (NODES, 0, "Partitions", "debug,long"),
    (NODES, 0, "MCS_label", "N/A"),  # a key with '_' and lower case
    (NODES, 0, "AllocTRES", ""),  # an empty value
    (NODES, 0, "Gres", "gpu:fake:2"),
    (JOB_RUNNING, 0, "Comment", "cl_hpc run=X task=Y"),  # lower-case `key=` in free text stays
    (JOB_RUNNING, 0, "AllocNode:Sid", "localhost:32240"),
    (JOB_RUNNING, 0, "CPUs/Task", "1"),
    (JOB_RUNNING, 0, "ReqB:S:C:T", "0:0:*:*"),
    (JOB_RUNNING, 0, "TresPerNode", "gres:gpu:fake:1"),
    (JOB_RUNNING, 0, "Power", ""),  # last on the line, followed by a space
    (JOB_DEPENDENT, 0, "Dependency", "afterok:249(unfulfilled)"),
    (JOB_DEPENDENT, 0, "Reason", "Dependency"),
    (JOB_ARRAY, 0, "ArrayTaskId", "2-5%2"),
    (JOB_ARRAY, 1, "ArrayTaskId", "1"),
    (JOB_ARRAY, 0, "StdOut", "/tmp/cap/250_4294967294.out"),  # %a of the pending remainder: NO_VAL
    (BIG_NODES, 1, "Reason", "Not responding [slurm@2026-11-26T22:39:22]"),
])
def test_scontrol_record_values(text: str, index: int, key: str, value: str) -> None:
    assert parse_scontrol_records(text)[index][key] == value


def test_scontrol_record_counts_and_key_order() -> None:
    assert len(parse_scontrol_records(PARTITIONS)) == 2
    assert len(parse_scontrol_records(JOB_ARRAY)) == 3
    node = parse_scontrol_records(NODES)[0]
    assert list(node)[:3] == ["NodeName", "Arch", "CoresPerSocket"]
    assert "SMP" not in node and "run" not in parse_scontrol_records(JOB_RUNNING)[0]


@pytest.mark.parametrize("line, key, value", [
    # A capitalised key in free text that repeats a real key is glued back onto the value.
    ("JobId=1 Partition=debug Comment=moved from Partition=long  StdErr=/x", "Comment", "moved from Partition=long"),
    ("JobId=1 Partition=debug Comment=moved from Partition=long  StdErr=/x", "Partition", "debug"),
    ("NodeName=n1 Reason=disk  full (df=100%) [root@2026-01-01T00:00:00] State=DRAIN", "Reason",
     "disk  full (df=100%) [root@2026-01-01T00:00:00]"),
    ("PartitionName=p Nodes=a[1-3] ", "Nodes", "a[1-3]"),
])
def test_scontrol_free_text(line: str, key: str, value: str) -> None:
    assert parse_scontrol_records(line)[0][key] == value


@pytest.mark.parametrize("text", ["", "\n", "No partitions in the system\n"])
def test_scontrol_nothing(text: str) -> None:
    assert parse_scontrol_records(text) == []


# ---------------------------------------------------------------- partitions and nodes

def test_partitions_from_real_output() -> None:
    debug, long = partitions_from(parse_scontrol_records(PARTITIONS))
    assert (debug.name, debug.is_default, debug.max_time_min, debug.nodes) == ("debug", True, 60.0, ("vm",))
    assert (long.name, long.is_default, long.max_time_min) == ("long", False, 2880.0)
    assert debug.allow_accounts is None and debug.allow_qos is None and debug.deny_accounts == frozenset()
    assert (debug.max_nodes, debug.max_mem_per_node_mb, debug.max_cpus_per_node) == (None, None, None)


def test_partitions_from_hand_written() -> None:
    cpu, gpu, scratch = partitions_from(parse_scontrol_records(BIG_PARTITIONS))
    assert (cpu.max_time_min, cpu.nodes, cpu.def_mem_per_cpu_mb) == (None, ("cn01", "cn02", "cn03", "cn04"), 2000)
    assert gpu.nodes == ("gn1", "gn2", "big")
    assert (gpu.max_time_min, gpu.max_nodes, gpu.max_cpus_per_node, gpu.max_mem_per_node_mb) == (1440.0, 2, 64, 256000)
    assert gpu.allow_accounts == {"ml", "vision"} and gpu.allow_qos == {"normal", "high"}
    assert (scratch.nodes, scratch.deny_accounts, scratch.deny_qos, scratch.state) == \
        ((), {"guest"}, {"low"}, "INACTIVE")


def test_nodes_from_real_output() -> None:
    (node,) = nodes_from(parse_scontrol_records(NODES))
    assert (node.name, node.cpus, node.real_memory_mb, node.gpus) == ("vm", 8, 20000, 2)
    assert dict(node.gpu_types) == {"fake": 2}
    assert (node.features, node.state, node.partitions) == (frozenset(), "IDLE", ("debug", "long"))


def test_nodes_from_hand_written() -> None:
    nodes = {n.name: n for n in nodes_from(parse_scontrol_records(BIG_NODES))}
    assert (nodes["gn1"].gpus, dict(nodes["gn1"].gpu_types), nodes["gn1"].features) == (4, {"a100": 4}, {"a100", "ib"})
    assert (nodes["gn2"].gpus, dict(nodes["gn2"].gpu_types)) == (3, {"v100": 2, "t4": 1})
    assert nodes["gn2"].features == {"v100", "ib"}  # available counts, not only active
    assert (nodes["cn01"].gpus, nodes["cn02"].state) == (0, "DOWN+DRAIN")


# ---------------------------------------------------------------- small formats

@pytest.mark.parametrize("text, minutes", [
    ("30", 30), ("0", 0), ("05:30", 5.5), ("01:00:00", 60), ("00:00:20", 1 / 3), ("1-00:00:00", 1440),
    ("2-00:00:00", 2880), ("2-00", 2880), ("1-12", 2160), ("1-12:30", 2190), ("1-00:00:30", 1440.5),
    ("UNLIMITED", None), ("INFINITE", None), ("unlimited", None),
])
def test_parse_time_min(text: str, minutes: float | None) -> None:
    assert parse_time_min(text) == (pytest.approx(minutes) if minutes is not None else None)


@pytest.mark.parametrize("text", ["", "NONE", "Partition_Limit", "1:2:3:4", "-1", "1-", "1-2:3:4:5", "1.5"])
def test_parse_time_min_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm time"):
        parse_time_min(text)


@pytest.mark.parametrize("text, hosts", [
    ("vm", ("vm",)),
    ("node[01-03,05]", ("node01", "node02", "node03", "node05")),
    ("gn[1-2],big", ("gn1", "gn2", "big")),
    ("a[1-2]b[8-9]", ("a1b8", "a1b9", "a2b8", "a2b9")),
    ("n[9-11]", ("n9", "n10", "n11")),
    ("n[098-101]", ("n098", "n099", "n100", "n101")),
    ("(null)", ()), ("", ()),
])
def test_expand_hostlist(text: str, hosts: tuple[str, ...]) -> None:
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text, counts", [
    ("gpu:fake:2", {"fake": 2}),
    ("gpu:2", {"": 2}),
    ("gpu", {"": 1}),
    ("gpu:a100:4(S:0-1)", {"a100": 4}),
    ("gpu:a100:4(S:0,1),gpu:v100:2", {"a100": 4, "v100": 2}),
    ("gpu:a100:2,mps:200,shard:8", {"a100": 2}),
    ("gpu:a100_3g.20gb:7", {"a100_3g.20gb": 7}),
    ("(null)", {}), ("", {}),
])
def test_parse_gres_gpus(text: str, counts: dict[str, int]) -> None:
    assert parse_gres_gpus(text) == counts


@pytest.mark.parametrize("text, bare_unit, mb", [
    ("3084K", "M", 3084 / 1024), ("322264K", "M", 322264 / 1024), ("200M", "M", 200), ("1G", "M", 1024),
    ("1.5G", "M", 1536), ("4000Mn", "M", 4000), ("1000Mc", "M", 1000), ("1T", "M", 1024**2),
    ("0", "M", 0), ("", "M", None), ("  ", "M", None), ("4000", "M", 4000),
    ("3334144", "B", 3334144 / 1024**2),  # sacct --noconvert MaxRSS is in bytes
])
def test_parse_mem_mb(text: str, bare_unit: str, mb: float | None) -> None:
    assert parse_mem_mb(text, bare_unit) == (pytest.approx(mb) if mb is not None else None)


@pytest.mark.parametrize("text", ["12X", "K", "1,5G", "-1M"])
def test_parse_mem_mb_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm memory size"):
        parse_mem_mb(text)


# ---------------------------------------------------------------- sacct, squeue, config, sacctmgr

def test_parse_sacct_real_output() -> None:
    rows = parse_sacct(SACCT, SACCT_FIELDS)
    assert len(rows) == 16
    assert rows[0] == {"JobID": "249", "JobName": "probe", "State": "COMPLETED", "ExitCode": "0:0",
                       "Elapsed": "00:00:15", "MaxRSS": "", "ReqMem": "200M",
                       "AllocTRES": "billing=1,cpu=1,gres/gpu=1,mem=200M,node=1", "Comment": "cl_hpc run=X task=Y"}
    assert rows[1]["JobID"] == "249.batch" and parse_mem_mb(rows[1]["MaxRSS"]) == pytest.approx(3084 / 1024)
    assert [r["JobID"] for r in rows if "." not in r["JobID"]][2:4] == ["250_0", "250_1"]


@pytest.mark.parametrize("job_id, state, exit_code, max_rss", [
    ("259", "FAILED", "3:0", ""),
    ("260", "CANCELLED by 0", "0:0", ""),  # the state holds a space
    ("260.batch", "CANCELLED", "0:15", "3260K"),
    ("261", "FAILED", "0:9", ""),  # killed over --mem without cgroups: FAILED, signal 9
    ("261.batch", "CANCELLED by 0", "0:9", "322264K"),
])
def test_parse_sacct_failures(job_id: str, state: str, exit_code: str, max_rss: str) -> None:
    rows = {r["JobID"]: r for r in parse_sacct(SACCT_FAILED, SACCT_FIELDS)}
    assert (rows[job_id]["State"], rows[job_id]["ExitCode"], rows[job_id]["MaxRSS"]) == (state, exit_code, max_rss)


def test_parse_sacct_pipe_in_last_field_and_short_line() -> None:
    assert parse_sacct("7|a|b\n", ["JobID", "Comment"]) == [{"JobID": "7", "Comment": "a|b"}]
    with pytest.raises(ValueError, match="expected 3"):
        parse_sacct("7|x\n", ["JobID", "State", "Comment"])


def test_parse_squeue_real_output() -> None:
    assert parse_squeue(SQUEUE) == [
        SqueueEntry("250_[2-5%2]", "250", "[2-5%2]", "PENDING", "JobArrayTaskLimit"),
        SqueueEntry("251", "251", None, "PENDING", "Dependency"),
        SqueueEntry("249", "249", None, "RUNNING", "None"),
        SqueueEntry("250_0", "250", "0", "RUNNING", "None"),
        SqueueEntry("250_1", "250", "1", "RUNNING", "None"),
    ]
    assert parse_squeue("") == []
    assert all(type(e.state) is SlurmState for e in parse_squeue(SQUEUE))


# Slurm's own states, and the one place that says what they mean for our attempt records.
@pytest.mark.parametrize(("text", "state", "end"), [
    ("PENDING", SlurmState.PENDING, None),
    ("RUNNING", SlurmState.RUNNING, None),
    ("COMPLETED", SlurmState.COMPLETED, None),  # the job wrote its own end
    ("STOPPED", SlurmState.STOPPED, None),  # scontrol suspend/stop: it keeps its node and resumes
    ("SPECIAL_EXIT", SlurmState.SPECIAL_EXIT, None),  # requeued and held, not ended
    ("STAGE_OUT", SlurmState.STAGE_OUT, None),
    ("REQUEUE_FED", SlurmState.REQUEUE_FED, None),
    ("FAILED", SlurmState.FAILED, AttemptState.FAILED),
    ("TIMEOUT", SlurmState.TIMEOUT, AttemptState.FAILED),
    ("OUT_OF_MEMORY", SlurmState.OUT_OF_MEMORY, AttemptState.FAILED),
    ("NODE_FAIL", SlurmState.NODE_FAIL, AttemptState.FAILED),
    ("PREEMPTED", SlurmState.PREEMPTED, AttemptState.FAILED),
    ("CANCELLED by 0", SlurmState.CANCELLED, AttemptState.FAILED),
    ("BOOT_FAIL", SlurmState.BOOT_FAIL, AttemptState.FAILED),
    ("LAUNCH_FAILED", "LAUNCH_FAILED", AttemptState.FAILED),  # a state this list lacks: an end
])
def test_slurm_states_and_what_they_mean_for_an_attempt(text: str, state: str, end: AttemptState | None) -> None:
    parsed = slurm_state(text)
    assert parsed == state and type(parsed) is type(state)
    assert unrecorded_end(parsed) is end
    assert (parsed in LIVE_STATES) == (end is None and parsed != SlurmState.COMPLETED)
    assert parse_sacct_states(f"7|{text}|0:0\n") == {"7": (state, "0:0")}


def test_parse_scontrol_config_real_output() -> None:
    config = parse_scontrol_config(CONFIG)
    assert config["AccountingStorageEnforce"] == "associations"
    assert config["ClusterName"] == "local" and config["AccountingStorageBackupHost"] == "(null)"
    assert not any(key.startswith("Configuration") for key in config)


def test_parse_associations_real_output() -> None:
    assert parse_associations(ASSOCS) == [Association("research", None, frozenset({"normal"})),
                                          Association("default", None, frozenset({"normal"})),
                                          Association("root", None, frozenset({"normal"}))]
    assert parse_associations("ml|gpu|normal,high\n") == [Association("ml", "gpu", frozenset({"normal", "high"}))]


# ---------------------------------------------------------------- resource_problems (pure)

LOCAL = ClusterInfo(tuple(partitions_from(parse_scontrol_records(PARTITIONS))),
                    tuple(nodes_from(parse_scontrol_records(NODES))), "root", "default",
                    tuple(parse_associations(ASSOCS)), frozenset({"associations"}))
BIG = ClusterInfo(
    tuple(partitions_from(parse_scontrol_records(BIG_PARTITIONS))),
    tuple(nodes_from(parse_scontrol_records(BIG_NODES))),
    "ana", "ml", (Association("ml", None, frozenset({"normal", "high"})),
                  Association("guest", None, frozenset({"low"})),
                  Association("vision", "cpu", frozenset({"normal"}))),
    frozenset({"associations", "limits", "qos"}),
)
KEY = "pipeline.tasks.train.resources"


@pytest.mark.parametrize("info, resources", [
    (LOCAL, {}),
    (LOCAL, {"time_min": 60}),
    (LOCAL, {"time_min": 120, "partition": "long"}),
    (LOCAL, {"cpus": 8, "mem_gb": 19.53, "gpus": 2, "gpu_type": "fake"}),
    (LOCAL, {"cpus": 2, "tasks_per_node": 4}),
    (LOCAL, {"account": "research", "qos": "anything"}),  # QOS is not enforced on the local cluster
    (BIG, {"time_min": 100000}),  # MaxTime=UNLIMITED
    (BIG, {"partition": "gpu", "gpus": 4, "gpu_type": "a100", "cpus": 64, "constraint": "a100&ib"}),
    (BIG, {"partition": "gpu", "gpus": 1, "constraint": "v100|a100", "qos": "high"}),
    (BIG, {"partition": "gpu", "nodes": 2, "gpus": 1, "constraint": "ib"}),
    (BIG, {"partition": "gpu", "cpus": 64, "mem_gb": 250}),
    (BIG, {"constraint": "[a100*2&ib]"}),  # a form we leave to Slurm
    (BIG, {"cpus": 32, "nodes": 4}),
])
def test_resource_problems_none(info: ClusterInfo, resources: dict) -> None:
    assert resource_problems("train", Resources(**resources), info) == []


@pytest.mark.parametrize("info, resources, expected", [
    (LOCAL, {"time_min": 120}, [f"{KEY}.time_min=120 exceeds partition 'debug' MaxTime of 60 min; "
                                "use time_min<=60 or partition=long (partitions: debug, long)"]),
    (LOCAL, {"time_min": 60.5}, ["time_min=60.5 exceeds", "MaxTime of 60 min"]),  # sbatch rounds up to 61
    (LOCAL, {"time_min": 3000, "partition": "long"}, ["MaxTime of 2880 min; use time_min<=2880 (partitions"]),
    (LOCAL, {"cpus": 9}, [f"{KEY}.cpus=9 needs 9 CPUs on one node", "at most 8", "cpus*tasks_per_node<=8"]),
    (LOCAL, {"cpus": 3, "tasks_per_node": 3}, ["cpus=3 x tasks_per_node=3 needs 9 CPUs"]),
    (LOCAL, {"mem_gb": 30}, [f"{KEY}.mem_gb=30 (30720 MB)", "RealMemory", "20000 MB", "use mem_gb<=19.53"]),
    (LOCAL, {"gpus": 3}, [f"{KEY}.gpus=3", "at most 2 GPUs per node", "gpus<=2"]),
    (LOCAL, {"gpus": 3, "gpu_type": "fake"}, ["at most 2 fake GPUs per node"]),
    (LOCAL, {"gpus": 1, "gpu_type": "a100"}, [f"{KEY}.gpu_type='a100'", "(GPU types: fake)"]),
    (LOCAL, {"nodes": 2}, [f"{KEY}.nodes=2", "at most 1 node(s)"]),
    (LOCAL, {"partition": "debgu"}, [f"{KEY}.partition='debgu'", "did you mean 'debug'?", "(partitions: debug, long)"]),
    (LOCAL, {"account": "nope"}, [f"{KEY}.account='nope' is not an account of user 'root'",
                                  "(accounts: default, research, root)"]),
    (LOCAL, {"account": "reserch"}, ["did you mean 'research'?"]),
    (LOCAL, {"constraint": "foo"}, [f"{KEY}.constraint='foo'", "feature(s) foo that no node has", "(features: none)"]),
    (BIG, {"partition": "gpu", "gpus": 8}, ["at most 4 GPUs per node"]),
    (BIG, {"partition": "gpu", "gpus": 3, "gpu_type": "v100"}, ["at most 2 v100 GPUs per node"]),
    (BIG, {"partition": "gpu", "cpus": 100}, ["at most 64 per node"]),  # MaxCPUsPerNode beats big's 128
    (BIG, {"partition": "gpu", "mem_gb": 300}, ["MaxMemPerNode of 256000 MB", "use mem_gb<=250"]),
    (BIG, {"partition": "gpu", "nodes": 3}, ["nodes=3", "at most 2 node(s)"]),  # MaxNodes=2
    (BIG, {"partition": "gpu", "constraint": "a100|h100"}, ["feature(s) h100 that no node has",
                                                            "(features: a100, bigmem, ib, v100)"]),
    (BIG, {"partition": "gpu", "constraint": "a100&v100"}, ["matches no node of partition 'gpu'"]),
    (BIG, {"partition": "gpu", "qos": "low"}, ["qos='low' is not allowed for account 'ml' (its QOS: high, normal)",
                                               "qos='low' may not use partition 'gpu' (allowed QOS: high, normal)"]),
    (BIG, {"partition": "gpu", "account": "guest", "qos": "low"}, ["account='guest' may not use partition 'gpu' "
                                                                    "(allowed accounts: ml, vision)"]),
    (BIG, {"partition": "gpu", "account": "vision"}, ["account='vision' is only associated with partition(s) cpu"]),
    (BIG, {"partition": "scratch"}, [f"{KEY}.partition='scratch' has no nodes"]),
    (BIG, {"partition": "scratch", "account": "guest", "qos": "low"}, ["(allowed accounts: all but guest)",
                                                                       "(allowed QOS: all but low)"]),
    # Each limit alone is met by some node of the partition, but no node meets them together.
    (BIG, {"partition": "gpu", "cpus": 64, "constraint": "v100"},
     ["no 1 node(s) of partition 'gpu' have", "nodes that do: none"]),
    (BIG, {"partition": "gpu", "nodes": 2, "gpus": 4}, ["no 2 node(s)", "nodes that do: gn1"]),
])
def test_resource_problems(info: ClusterInfo, resources: dict, expected: list[str]) -> None:
    text = "\n".join(resource_problems("train", Resources(**resources), info))
    for fragment in expected:
        assert fragment in text


def test_resource_problems_reports_every_problem_at_once() -> None:
    problems = resource_problems("t", Resources(cpus=9, gpus=3, mem_gb=30, time_min=120, account="nope"), LOCAL)
    assert [p.split("=")[0] for p in problems] == [f"pipeline.tasks.t.resources.{k}" for k in
                                                   ("account", "time_min", "cpus", "mem_gb", "gpus")]


def test_resource_problems_default_partition() -> None:
    no_default = ClusterInfo(tuple(p for p in LOCAL.partitions if not p.is_default), LOCAL.nodes)
    assert "partition is unset and the cluster has no default partition; set one of: long" in \
        resource_problems("t", Resources(), no_default)[0]
    assert "the default partition 'gpus' does not exist" in resource_problems("t", Resources(), LOCAL, "gpus")[0]
    assert resource_problems("t", Resources(time_min=120), LOCAL, default_partition_override="long") == []


def test_resource_problems_user_without_associations() -> None:
    info = ClusterInfo(LOCAL.partitions, LOCAL.nodes, "nobody", None, (), frozenset({"associations"}))
    assert resource_problems("t", Resources(), info) == [
        "pipeline.tasks.t.resources.account: user 'nobody' has no Slurm account association; ask the cluster "
        "admins to add one (sacctmgr add user)"]


def test_resource_problems_without_enforced_accounting() -> None:
    info = ClusterInfo(LOCAL.partitions, LOCAL.nodes, "root", None, None, frozenset())
    assert resource_problems("t", Resources(account="anything", qos="any"), info) == []


# scontrol show assoc_mgr users=root flags=assoc (Slurm 22.05.8, the local test cluster; trimmed)
ASSOC_MGR = """Current Association Manager state

Association Records

ClusterName=local Account=root UserName=root(0) Partition= Priority=0 ID=2
    SharesRaw/Norm/Level/Factor=1/18446744073709551616.00/1/0.00
    UsageRaw/Norm/Efctv=0.00/1.00/0.00
    ParentAccount= Lft=10 DefAssoc=No
    GrpJobs=N(0) GrpJobsAccrue=N(0)
    GrpSubmitJobs=N(0) GrpWall=N(0.00)
    GrpTRES=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    GrpTRESMins=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    GrpTRESRunMins=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    MaxJobs= MaxJobsAccrue= MaxSubmitJobs= MaxWallPJ=
    MaxTRESPJ=
    MaxTRESPN=
    MaxTRESMinsPJ=
    MinPrioThresh=
ClusterName=local Account=default UserName= Partition= Priority=0 ID=3
    SharesRaw/Norm/Level/Factor=1/18446744073709551616.00/1/0.00
    UsageRaw/Norm/Efctv=0.00/1.00/0.00
    ParentAccount=root(1) Lft=6 DefAssoc=No
    GrpJobs=N(0) GrpJobsAccrue=N(0)
    GrpSubmitJobs=N(0) GrpWall=N(0.00)
    GrpTRES=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    GrpTRESMins=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    GrpTRESRunMins=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    MaxJobs= MaxJobsAccrue= MaxSubmitJobs= MaxWallPJ=
    MaxTRESPJ=
    MaxTRESPN=
    MaxTRESMinsPJ=
    MinPrioThresh=
ClusterName=local Account=default UserName=root(0) Partition= Priority=0 ID=5
    SharesRaw/Norm/Level/Factor=1/18446744073709551616.00/1/0.00
    UsageRaw/Norm/Efctv=0.00/1.00/0.00
    ParentAccount= Lft=7 DefAssoc=Yes
    GrpJobs=N(0) GrpJobsAccrue=N(0)
    GrpSubmitJobs=N(0) GrpWall=N(0.00)
    GrpTRES=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    GrpTRESMins=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    GrpTRESRunMins=cpu=N(0),mem=N(0),energy=N(0),node=N(0),billing=N(0),fs/disk=N(0),vmem=N(0),pages=N(0),gres/gpu=N(0)
    MaxJobs= MaxJobsAccrue= MaxSubmitJobs= MaxWallPJ=
    MaxTRESPJ=
    MaxTRESPN=
    MaxTRESMinsPJ=
    MinPrioThresh=
ClusterName=local Account=research UserName=root(0) Partition= Priority=0 ID=6
    SharesRaw/Norm/Level/Factor=1/18446744073709551616.00/1/0.00
    UsageRaw/Norm/Efctv=0.00/1.00/0.00
    ParentAccount= Lft=3 DefAssoc=No
    GrpJobs=N(0) GrpJobsAccrue=N(0)
    GrpSubmitJobs=N(0) GrpWall=N(0.00)
"""


def test_assoc_mgr_gives_the_users_own_associations_and_the_default_account() -> None:
    assocs, default = parse_assoc_mgr(ASSOC_MGR, "root")
    assert sorted(a.account for a in assocs) == ["default", "research", "root"]  # not the accounts' own rows
    assert all(a.partition is None and a.qos == frozenset() for a in assocs)
    assert default == "default"
    assert parse_assoc_mgr(ASSOC_MGR, "alice") == ([], None)
    assert parse_assoc_mgr("", "root") == ([], None)
