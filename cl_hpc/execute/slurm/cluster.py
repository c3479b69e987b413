"""What the live cluster offers (partitions, nodes, the user's accounts), and every reason a task's
resources can never be met by it, checked before anything is submitted.

The runners are a few lines each; ``resource_problems`` is pure, so it is unit-tested on pasted
output and, in tests/slurm, checked against what `sbatch --test-only` accepts on a real cluster.
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

from cl_hpc.config.resources import Resources
from cl_hpc.execute.slurm import commands, parse
from cl_hpc.execute.slurm.parse import Association, NodeInfo, PartitionInfo
from cl_hpc.execute.slurm.sbatch import slurm_mem, slurm_time

TIMEOUT_S = 30.0  # slurmctld answers in milliseconds; its own MessageTimeout is usually 10 s
# Any of these in AccountingStorageEnforce makes Slurm reject an account the user has no
# association with (slurm.conf(5): limits, qos, safe and wckeys imply associations).
_ASSOC_ENFORCING = {"associations", "limits", "qos", "safe", "wckeys"}


@dataclass(frozen=True)
class ClusterInfo:
    partitions: tuple[PartitionInfo, ...]
    nodes: tuple[NodeInfo, ...]
    user: str = ""
    default_account: str | None = None
    # The user's associations; None when Slurm does not enforce them (any account name is taken).
    associations: tuple[Association, ...] | None = None
    # AccountingStorageEnforce flags, lower case; "qos" makes Slurm reject a QOS the account lacks.
    enforce: frozenset[str] = frozenset()

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions if p.is_default), None)

    def partition(self, name: str) -> PartitionInfo | None:
        return next((p for p in self.partitions if p.name == name), None)

    @property
    def accounts(self) -> dict[str, frozenset[str]]:
        """The user's accounts, each with the QOS it may use."""
        out: dict[str, frozenset[str]] = {}
        for assoc in self.associations or ():
            out[assoc.account] = out.get(assoc.account, frozenset()) | assoc.qos
        return out


# ---------------------------------------------------------------- runners: one line each, through commands.py

def run_slurm(argv: Sequence[str], timeout_s: float = TIMEOUT_S) -> str:
    """stdout of one query, through the one Slurm command layer (timeouts, transient retries)."""
    return commands.run(argv, timeout_s)


def current_user() -> str:
    """The name Slurm knows us by: it goes by uid, not by $USER."""
    return pwd.getpwuid(os.getuid()).pw_name


def query_partitions(timeout_s: float = TIMEOUT_S) -> list[PartitionInfo]:
    out = run_slurm(["scontrol", "show", "partition", "-o"], timeout_s)
    return parse.partitions_from(parse.parse_scontrol_records(out))


def query_nodes(timeout_s: float = TIMEOUT_S) -> list[NodeInfo]:
    return parse.nodes_from(parse.parse_scontrol_records(run_slurm(["scontrol", "show", "node", "-o"], timeout_s)))


def query_config(timeout_s: float = TIMEOUT_S) -> dict[str, str]:
    return parse.parse_scontrol_config(run_slurm(["scontrol", "show", "config"], timeout_s))


def query_associations(user: str, cluster: str, timeout_s: float = TIMEOUT_S) -> list[Association]:
    where = [f"user={user}"] + ([f"cluster={cluster}"] if cluster else [])  # this cluster's, not a federation's
    argv = ["sacctmgr", "-n", "-P", "show", "assoc", *where, "format=account,partition,qos"]
    return parse.parse_associations(run_slurm(argv, timeout_s))


def query_default_account(user: str, timeout_s: float = TIMEOUT_S) -> str | None:
    out = run_slurm(["sacctmgr", "-n", "-P", "show", "user", user, "format=defaultaccount"], timeout_s)
    return out.strip().splitlines()[0] if out.strip() else None


def query_assoc_mgr(user: str, timeout_s: float = TIMEOUT_S) -> tuple[list[Association], str | None]:
    out = run_slurm(["scontrol", "show", "assoc_mgr", f"users={user}", "flags=assoc"], timeout_s)
    return parse.parse_assoc_mgr(out, user)


def query_cluster(timeout_s: float = TIMEOUT_S, user: str | None = None) -> ClusterInfo:
    """Partitions, nodes and (where Slurm enforces them) the user's accounts, read live.

    The independent queries run at once: each is a round trip to slurmctld or slurmdbd, and the
    launcher submits nothing before they all answer. Associations come from slurmctld's own copy
    (``scontrol show assoc_mgr``), except where QOS is enforced: only sacctmgr lists an account's QOS.
    """
    user = user or current_user()
    with ThreadPoolExecutor(max_workers=3) as pool:
        partitions = pool.submit(query_partitions, timeout_s)
        nodes = pool.submit(query_nodes, timeout_s)
        config = query_config(timeout_s)
        enforce = frozenset(config.get("AccountingStorageEnforce", "none").lower().split(",")) - {"none"}
        assocs, account = None, None
        if "qos" in enforce:
            default = pool.submit(query_default_account, user, timeout_s)
            assocs = tuple(query_associations(user, config.get("ClusterName", ""), timeout_s))
            account = default.result()
        elif enforce & _ASSOC_ENFORCING:  # without accounting enforced, any account name is taken
            found, account = query_assoc_mgr(user, timeout_s)
            assocs = tuple(found)
        return ClusterInfo(tuple(partitions.result()), tuple(nodes.result()), user, account, assocs, enforce)


# ---------------------------------------------------------------- the pure check

@dataclass(frozen=True)
class _Ask:
    """One task's request in Slurm's own units, rounded exactly as the sbatch renderer rounds it."""

    key: str  # pipeline.tasks.<task>.resources
    res: Resources
    time_min: float
    mem_mb: float
    cpus_per_node: int


def _ask(task_name: str, res: Resources) -> _Ask:
    # Judge what sbatch will be sent (time rounded up to whole minutes, memory in whole MiB), not the raw float.
    time_min = (parse.parse_time_min(slurm_time(res.time_min)) or 0.0) if res.time_min else 0.0
    mem_mb = (parse.parse_mem_mb(slurm_mem(res.mem_gb)) or 0.0) if res.mem_gb else 0.0
    return _Ask(f"pipeline.tasks.{task_name}.resources", res, time_min, mem_mb,
                (res.cpus or 1) * (res.tasks_per_node or 1))


def resource_problems(task_name: str, res: Resources, info: ClusterInfo,
                      default_partition_override: str | None = None) -> list[str]:
    """Every reason this request can never run on the cluster (empty: Slurm can run it)."""
    ask = _ask(task_name, res)
    problems = _account_problems(ask, info)
    name = res.partition or default_partition_override or info.default_partition
    part = info.partition(name) if name else None
    if part is None:
        return [_unknown_partition(ask, name, info)] + problems
    problems += _partition_access_problems(ask, part, info) + _time_problems(ask, part, info)
    nodes = [n for n in info.nodes if n.name in set(part.nodes)]
    if not nodes:  # every per-node limit would fail too; one message says it all
        return problems + [f"{ask.key}.partition={part.name!r} has no nodes "
                           f"(partitions: {_names(p.name for p in info.partitions)})"]
    node_problems = _cpu_problems(ask, part, nodes) + _mem_problems(ask, part, nodes) + _gpu_problems(ask, part, nodes)
    node_problems += _feature_problems(ask, part, nodes, info) + _node_count_problems(ask, part)
    return problems + (node_problems or _fit_problems(ask, part, nodes))


def _names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_partition(ask: _Ask, name: str | None, info: ClusterInfo) -> str:
    valid = [p.name for p in info.partitions]
    if name is None:
        return f"{ask.key}.partition is unset and the cluster has no default partition; set one of: {_names(valid)}"
    if ask.res.partition is None:
        return (f"{ask.key}.partition is unset and the default partition {name!r} does not exist "
                f"(partitions: {_names(valid)})")
    return (f"{ask.key}.partition={name!r} is not a partition of this cluster{_did_you_mean(name, valid)} "
            f"(partitions: {_names(valid)})")


def _account_problems(ask: _Ask, info: ClusterInfo) -> list[str]:
    accounts = info.accounts
    account = ask.res.account or info.default_account
    if info.associations is None:
        return []
    if not accounts:  # with associations enforced, Slurm refuses every job of such a user
        return [f"{ask.key}.account: user {info.user!r} has no Slurm account association; ask the cluster admins "
                "to add one (sacctmgr add user)"]
    if account is None:
        return []
    if account not in accounts:
        return [f"{ask.key}.account={account!r} is not an account of user {info.user!r}"
                f"{_did_you_mean(account, list(accounts))} (accounts: {_names(accounts)})"]
    qos = ask.res.qos
    # Only with AccountingStorageEnforce=qos does Slurm refuse a QOS; otherwise it takes any name.
    if qos and "qos" in info.enforce and accounts[account] and qos not in accounts[account]:
        return [f"{ask.key}.qos={qos!r} is not allowed for account {account!r} (its QOS: {_names(accounts[account])})"]
    return []


def _partition_access_problems(ask: _Ask, part: PartitionInfo, info: ClusterInfo) -> list[str]:
    problems = []
    account, qos = ask.res.account or info.default_account, ask.res.qos
    if account and (account in part.deny_accounts
                    or (part.allow_accounts is not None and account not in part.allow_accounts)):
        allowed = ("all but " + _names(part.deny_accounts) if part.allow_accounts is None
                   else _names(part.allow_accounts))
        problems.append(f"{ask.key}.account={account!r} may not use partition {part.name!r} "
                        f"(allowed accounts: {allowed})")
    if qos and (qos in part.deny_qos or (part.allow_qos is not None and qos not in part.allow_qos)):
        allowed = "all but " + _names(part.deny_qos) if part.allow_qos is None else _names(part.allow_qos)
        problems.append(f"{ask.key}.qos={qos!r} may not use partition {part.name!r} (allowed QOS: {allowed})")
    assocs = [a for a in info.associations or () if a.account == account]
    if assocs and all(a.partition not in (None, part.name) for a in assocs):
        problems.append(f"{ask.key}.account={account!r} is only associated with partition(s) "
                        f"{_names({a.partition or '' for a in assocs})}, not {part.name!r}")
    return problems


def _time_problems(ask: _Ask, part: PartitionInfo, info: ClusterInfo) -> list[str]:
    limit = part.max_time_min
    if limit is None or ask.time_min <= limit:
        return []
    fits = [p.name for p in info.partitions if p.max_time_min is None or ask.time_min <= p.max_time_min]
    alt = f" or partition={fits[0]}" if fits else ""
    return [f"{ask.key}.time_min={ask.res.time_min:g} exceeds partition {part.name!r} MaxTime of {limit:g} min; "
            f"use time_min<={limit:g}{alt} (partitions: {_names(p.name for p in info.partitions)})"]


def _cpu_problems(ask: _Ask, part: PartitionInfo, nodes: list[NodeInfo]) -> list[str]:
    most = max((n.cpus for n in nodes), default=0)
    if part.max_cpus_per_node is not None:
        most = min(most, part.max_cpus_per_node)
    if ask.cpus_per_node <= most:
        return []
    per_task = f" x tasks_per_node={ask.res.tasks_per_node}" if ask.res.tasks_per_node != 1 else ""
    return [f"{ask.key}.cpus={ask.res.cpus}{per_task} needs {ask.cpus_per_node} CPUs on one node, but partition "
            f"{part.name!r} offers at most {most} per node; use cpus*tasks_per_node<={most}"]


def _mem_problems(ask: _Ask, part: PartitionInfo, nodes: list[NodeInfo]) -> list[str]:
    node_max = max((n.real_memory_mb for n in nodes), default=0)
    most = min(node_max, part.max_mem_per_node_mb) if part.max_mem_per_node_mb is not None else node_max
    if ask.mem_mb <= most:
        return []
    what = "MaxMemPerNode" if most < node_max else "largest node RealMemory"
    return [f"{ask.key}.mem_gb={ask.res.mem_gb:g} ({ask.mem_mb:.0f} MB) exceeds partition {part.name!r} "
            f"{what} of {most} MB; use mem_gb<={int(most / 1024 * 100) / 100:g}"]


def _gpu_problems(ask: _Ask, part: PartitionInfo, nodes: list[NodeInfo]) -> list[str]:
    gpus, gpu_type = ask.res.gpus or 0, ask.res.gpu_type
    if gpus <= 0:
        return []
    types = {t for n in nodes for t in n.gpu_types if t}
    if gpu_type and gpu_type not in types:
        return [f"{ask.key}.gpu_type={gpu_type!r} is on no node of partition {part.name!r} "
                f"(GPU types: {_names(types)})"]
    most = max((n.gpu_types.get(gpu_type, 0) if gpu_type else n.gpus for n in nodes), default=0)
    if gpus <= most:
        return []
    kind = f"{gpu_type} GPUs" if gpu_type else "GPUs"
    return [f"{ask.key}.gpus={gpus} but partition {part.name!r} has at most {most} {kind} per node; use gpus<={most}"]


def _constraint_terms(constraint: str) -> list[list[str]] | None:
    """`a`, `a&b`, `a,b` (and), `a|b` (or) as OR-of-AND lists; None for forms we do not judge
    (counts `a*2`, brackets, mixed & and |), which Slurm is left to check."""
    if re.search(r"[\[\]()*]", constraint) or ("|" in constraint and re.search(r"[&,]", constraint)):
        return None
    return [[name.strip() for name in re.split(r"[&,]", term)] for term in constraint.split("|")]


def _feature_problems(ask: _Ask, part: PartitionInfo, nodes: list[NodeInfo], info: ClusterInfo) -> list[str]:
    terms = _constraint_terms(ask.res.constraint) if ask.res.constraint else None
    if not terms:
        return []
    known = {f for n in info.nodes for f in n.features}
    # Slurm rejects a feature name no node has, even as one side of `a|b`.
    unknown = sorted({name for term in terms for name in term} - known)
    if unknown:
        return [f"{ask.key}.constraint={ask.res.constraint!r} names feature(s) {', '.join(unknown)} that no node has "
                f"(features: {_names(known)})"]
    if any(set(term) <= n.features for n in nodes for term in terms):
        return []
    return [f"{ask.key}.constraint={ask.res.constraint!r} matches no node of partition {part.name!r} "
            f"(features there: {_names({f for n in nodes for f in n.features})})"]


def _node_count_problems(ask: _Ask, part: PartitionInfo) -> list[str]:
    most = len(part.nodes) if part.max_nodes is None else min(len(part.nodes), part.max_nodes)
    if (ask.res.nodes or 1) <= most:
        return []
    return [f"{ask.key}.nodes={ask.res.nodes} but partition {part.name!r} allows at most {most} node(s); "
            f"use nodes<={most}"]


def _fits(ask: _Ask, node: NodeInfo) -> bool:
    gpus = node.gpu_types.get(ask.res.gpu_type, 0) if ask.res.gpu_type else node.gpus
    terms = _constraint_terms(ask.res.constraint) if ask.res.constraint else None
    return (node.cpus >= ask.cpus_per_node and node.real_memory_mb >= ask.mem_mb and gpus >= (ask.res.gpus or 0)
            and (not terms or any(set(t) <= node.features for t in terms)))


def _fit_problems(ask: _Ask, part: PartitionInfo, nodes: list[NodeInfo]) -> list[str]:
    """Each limit alone may be met by some node, yet no `nodes` nodes meet all of them at once."""
    fitting = [n.name for n in nodes if _fits(ask, n)]
    if len(fitting) >= (ask.res.nodes or 1):
        return []
    return [f"{ask.key}: no {ask.res.nodes or 1} node(s) of partition {part.name!r} have cpus*tasks_per_node="
            f"{ask.cpus_per_node}, {ask.mem_mb:.0f} MB, gpus={ask.res.gpus} and constraint={ask.res.constraint!r} "
            f"together (nodes that do: {_names(fitting)})"]
