#!/usr/bin/env python3
"""A fake Slurm CLI over a JSON state file, for fast tests of cl_hpc's Slurm logic without root.

Each command (sbatch, squeue, sacct, scontrol, scancel, sinfo, srun) is a link to this file; it
acts by the name it was called as. The state file ($CL_HPC_FAKE_SLURM_STATE) holds the jobs, the
count of calls per command, every call's argv, and the faults to inject:

    "faults": [{"command": "sbatch", "calls": [3], "stderr": "...", "rc": 1, "queue": false}, ...]
        the listed calls (1-based, per command) fail with that stderr and exit code; with
        "queue": true an sbatch still queues its job first (an answer lost after slurmctld acted);
    "sacct_lag": K    a job's rows appear in sacct only from the K-th sacct call after its submission;
    "scancel_lag": K  a cancelled job that was live reads COMPLETING (squeue still lists it) for K
                      squeue calls after its scancel, then CANCELLED: slurmctld's KillWait.

With $CL_HPC_FAKE_SLURM_GATE set, each call of $CL_HPC_FAKE_SLURM_GATE_COMMAND (default sbatch)
after the first $CL_HPC_FAKE_SLURM_GATE_AFTER (default 0) touches ``<gate>.waiting`` and waits for
``<gate>`` to exist: a test holds a process at that point that way, without timing it.

Jobs never run: a test moves them on with :func:`set_state` (tests/fakes/slurm/__init__.py).
Only what cl_hpc asks of these commands is emulated, with Slurm 22.05's own messages. The real
commands are tested on the local cluster (tests/slurm/); this is beside them, never instead.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED"}


def main(name: str, args: list[str]) -> int:
    path = Path(os.environ["CL_HPC_FAKE_SLURM_STATE"])
    gate = os.environ.get("CL_HPC_FAKE_SLURM_GATE")
    if gate and name == os.environ.get("CL_HPC_FAKE_SLURM_GATE_COMMAND", "sbatch"):
        before = json.loads(path.read_text()).get("calls", {}).get(name, 0) if path.exists() else 0
        if before >= int(os.environ.get("CL_HPC_FAKE_SLURM_GATE_AFTER", "0")):
            _wait_at(Path(gate))
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one command at a time, as slurmctld serialises its state
        state = json.loads(path.read_text()) if path.exists() else {}
        state.setdefault("jobs", {})
        calls = state.setdefault("calls", {})
        calls[name] = calls.get(name, 0) + 1
        state.setdefault("log", []).append([name, *args])
        fault = next((f for f in state.get("faults", []) if f["command"] == name and calls[name] in f["calls"]), None)
        try:
            code = _dispatch(state, name, args) if fault is None else _fault(state, name, args, fault)
        finally:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            tmp.replace(path)
    if fault is not None and fault.get("hang_s"):
        time.sleep(fault["hang_s"])  # a controller that does not answer (after the lock: others go on)
    return code


def _wait_at(gate: Path) -> None:
    """Hold this sbatch until the test creates ``gate``; ``<gate>.waiting`` says it got here."""
    Path(f"{gate}.waiting").touch()
    deadline = time.monotonic() + 300
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _fault(state: dict[str, Any], name: str, args: list[str], fault: dict[str, Any]) -> int:
    if name == "sbatch" and fault.get("queue"):
        _sbatch(state, args, quiet=True)
    if fault.get("stderr"):
        sys.stderr.write(fault["stderr"] + "\n")
    return int(fault.get("rc", 1))


def _dispatch(state: dict[str, Any], name: str, args: list[str]) -> int:
    handler = {"sbatch": _sbatch, "squeue": _squeue, "sacct": _sacct, "scancel": _scancel,
               "scontrol": _scontrol, "sinfo": _sinfo, "srun": _srun}[name]
    return handler(state, args)


def _options(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """`--key=value`, `--key value` (for the keys cl_hpc uses with a value) and bare flags."""
    takes_value = {"-o", "-j", "-u", "-p", "--partition", "--format", "--jobs", "--user"}
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            key, _, value = arg[2:].partition("=")
            opts[key] = value
        elif arg in takes_value and i + 1 < len(args):
            opts[arg.lstrip("-")] = args[i + 1]
            i += 1
        elif arg.startswith("-"):
            opts[arg.lstrip("-")] = ""
        else:
            rest.append(arg)
        i += 1
    return opts, rest


def _script_options(script: Path) -> dict[str, str]:
    import shlex

    opts = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            opts[key] = shlex.split(value)[0] if value else ""
    return opts


def _sbatch(state: dict[str, Any], args: list[str], quiet: bool = False) -> int:
    opts, rest = _options(args)
    script = Path(rest[0])
    sopts = {**_script_options(script), **{k: v for k, v in opts.items() if k != "parsable"}}
    partition = sopts.get("partition") or sopts.get("p")
    if partition and partition not in state.get("partitions", ["debug"]):
        sys.stderr.write(f"sbatch: error: invalid partition specified: {partition}\n"
                         "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
        return 1
    job_id = str(state.get("next_id", 100))
    state["next_id"] = int(job_id) + 1
    array = sopts.get("array")
    shards = [int(s) for s in array.split("%")[0].split(",")] if array else None
    state["jobs"][job_id] = {
        "id": job_id, "name": sopts.get("job-name", script.name), "comment": sopts.get("comment", ""),
        "script": str(script), "array": shards, "dependency": sopts.get("dependency"),
        "partition": partition, "submit_call": state["calls"].get("sacct", 0),
        "states": {str(s): ["PENDING", "0:0"] for s in shards} if shards is not None else {"": ["PENDING", "0:0"]},
    }
    if not quiet:
        print(job_id if "parsable" in opts else f"Submitted batch job {job_id}")
    return 0


def _units(job: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(unit id as Slurm prints it, state, exit code) for a job or each shard of an array."""
    return [(job["id"] if shard == "" else f"{job['id']}_{shard}", st, code)
            for shard, (st, code) in job["states"].items()]


def _find(state: dict[str, Any], ids: str) -> tuple[list[dict[str, Any]], list[str]]:
    bases = [i.split("_")[0] for i in ids.split(",") if i]
    return [state["jobs"][b] for b in bases if b in state["jobs"]], [b for b in bases if b not in state["jobs"]]


def _squeue(state: dict[str, Any], args: list[str]) -> int:
    _settle_cancelled(state)
    opts, _ = _options(args)
    fmt = opts.get("o") or opts.get("format") or "%i %T"
    if "j" in opts or "jobs" in opts:
        jobs, missing = _find(state, opts.get("j") or opts.get("jobs", ""))
        if missing and not jobs and len(missing) == 1:
            sys.stderr.write("slurm_load_jobs error: Invalid job id specified\n")
            return 1
    else:
        jobs = list(state["jobs"].values())
    for job in jobs:
        for unit in _units(job):
            if unit[1] in LIVE:
                values = {"%i": unit[0], "%T": unit[1], "%r": "None", "%o": job["script"], "%j": job["name"],
                          "%k": job["comment"], "%E": job["dependency"] or ""}
                print(re.sub(r"%[a-zA-Z]", functools.partial(_field, values), fmt))
    return 0


def _field(values: dict[str, str], match: re.Match[str]) -> str:
    return str(values.get(match[0], ""))


def _sacct(state: dict[str, Any], args: list[str]) -> int:
    opts, _ = _options(args)
    fields = (opts.get("o") or opts.get("format") or "JobID,State,ExitCode").split(",")
    jobs, _ = _find(state, opts.get("j") or opts.get("jobs", ""))
    lag = int(state.get("sacct_lag", 0))
    for job in jobs:
        if state["calls"]["sacct"] - job["submit_call"] <= lag:
            continue  # slurmdbd has not caught up with this job yet
        for unit_id, st, code in _units(job):
            row = {"JobID": unit_id, "State": st, "ExitCode": code, "JobName": job["name"]}
            print("|".join(row.get(f, "") for f in fields))
    return 0


def _set(state: dict[str, Any], target: str, new: str, code: str = "0:0", only_live: bool = True) -> bool:
    base, _, shard = target.partition("_")
    job = state["jobs"].get(base)
    if job is None:
        return False
    for key, (st, _) in job["states"].items():
        if (not shard or key == shard) and (st in LIVE or not only_live):
            job["states"][key] = [new, code]
    return True


def _scancel(state: dict[str, Any], args: list[str]) -> int:
    _, ids = _options(args)
    lag = int(state.get("scancel_lag", 0))
    for i in ids:
        if lag and i.split("_")[0] in state["jobs"]:
            state["jobs"][i.split("_")[0]]["cancelled_at_squeue"] = state["calls"].get("squeue", 0)
    bad = [i for i in ids if not _set(state, i, "COMPLETING" if lag else "CANCELLED", "0:15")]
    for i in bad:
        sys.stderr.write(f"scancel: error: Invalid job id {i}\n")
    return 1 if bad else 0


def _settle_cancelled(state: dict[str, Any]) -> None:
    """A cancelled job leaves COMPLETING once scancel_lag squeue calls have seen it (this one counted)."""
    for job in state["jobs"].values():
        since = job.get("cancelled_at_squeue")
        if since is not None and state["calls"]["squeue"] - since > int(state.get("scancel_lag", 0)):
            job["states"] = {k: ["CANCELLED" if st == "COMPLETING" else st, code]
                             for k, (st, code) in job["states"].items()}
            del job["cancelled_at_squeue"]


def _scontrol(state: dict[str, Any], args: list[str]) -> int:
    if args[:1] == ["requeue"]:
        return 0 if _set(state, args[1], "PENDING", only_live=False) else 1
    if args[:1] == ["update"]:
        fields = dict(a.split("=", 1) for a in args[1:])
        job = state["jobs"].get(fields.get("JobId", "").split("_")[0])
        if job is None:
            sys.stderr.write("slurm_update error: Invalid job id specified\n")
            return 1
        job["dependency"] = fields.get("Dependency", job["dependency"])
        return 0
    if args[:2] == ["show", "partition"]:
        for i, name in enumerate(state.get("partitions", ["debug"])):
            print(f"PartitionName={name} AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL "
                  f"Default={'YES' if i == 0 else 'NO'} "
                  f"MaxNodes=UNLIMITED MaxTime=01:00:00 Nodes=fake1 State=UP TotalCPUs=8 TotalNodes=1 "
                  f"MaxMemPerNode=UNLIMITED")
        return 0
    if args[:2] == ["show", "node"]:
        print(f"NodeName=fake1 CPUTot=8 RealMemory=16000 Gres=(null) AvailableFeatures=(null) ActiveFeatures=(null) "
              f"State=IDLE Partitions={','.join(state.get('partitions', ['debug']))}")
        return 0
    if args[:2] == ["show", "config"]:
        print("Configuration data as of 2026-01-01T00:00:00\nAccountingStorageEnforce = none\n"
              "ClusterName             = fake")
        return 0
    sys.stderr.write(f"fake scontrol: {' '.join(args)} is not emulated (tests/fakes/slurm/fake_slurm.py)\n")
    return 1


def _sinfo(state: dict[str, Any], args: list[str]) -> int:
    print("fake1 idle")
    return 0


def _srun(state: dict[str, Any], args: list[str]) -> int:
    sys.stderr.write("fake srun: jobs never run under the fake Slurm CLI\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[0]).name, sys.argv[1:]))
