#!/usr/bin/env python3
"""Benchmark cl_hpc's Slurm backend against hand-written sbatch, side by side, on a live cluster.

Two parts (`--only makespan|submit`), each alternating the two sides (plain, cl_hpc, plain, ...):

makespan  scripts/bench_conf/pipeline/bench19.yaml: fetch -> 8 feature shards -> 8 train shards
          (shard to shard) -> compare -> deploy, 1-second tasks. Plain: a bash script of 19
          `sbatch --wrap` jobs chained by --dependency=afterok (the natural hand-written baseline).
          cl_hpc: `python -m cl_hpc.launch cluster=slurm pipeline=bench19 launch.follow=false`.
          Measured three ways: wall clock from the start of submission until squeue shows every
          job ended (polled); sacct's last End - first Submit (whole seconds); and the payloads'
          own timestamps (last end - submission start), which also give each level's dispatch
          latency (a unit's start - the end of the last unit it waits for).
submit    scripts/bench_conf/pipeline/bench200.yaml: 200 units, three 64-way fan-outs. Plain: a
          bash script with one sbatch per task (--array per fan-out, aftercorr shard to shard).
          cl_hpc: the time from the launcher's start to its "submitted" line (every job in the
          queue: the issue's target), its whole process time (which goes on to index the run in
          the store, at a lowered priority once the first jobs run) and the time from its
          "submitting" line to its exit, plus the number of jobs (= sbatch calls) and units it
          left in the queue. The jobs are cancelled right after they are counted.

    python scripts/bench_dag.py                                # both parts, 3 repetitions
    python scripts/bench_dag.py --only makespan --plain-only   # the baseline alone
    python scripts/bench_dag.py --reps 5 --json out.json --launch-arg cluster.partition=debug

Run it from any directory with the project's Python (it needs rich and PyYAML). The local test
cluster: sudo bash scripts/slurm-local-up.sh. Prints ratios; asserts nothing (DESIGN.md: tests
assert behaviour, never wall-clock time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "scripts" / "bench_conf"
FINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
         "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"}
SUBMITTING = re.compile(r"^run (\S+): submitting")
SUBMITTED = re.compile(r"^run (\S+): submitted in")  # its last sbatch returned; the index follows
# A pipe gets 80 columns from rich by default, too narrow for the tables.
console = Console(width=None if sys.stdout.isatty() else 120)


class BenchError(Exception):
    """Something the user must fix (cluster down, a side failed); the message says what."""


# ---- the DAG, read from the same YAML cl_hpc reads -------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    deps: tuple[str, ...]
    width: int | None  # shards of a fan-out; None for a plain task
    seconds: float
    cpus: int
    mem_mb: int
    time_min: int


@dataclass(frozen=True)
class Dag:
    name: str
    tasks: dict[str, Task]  # in file order, which is a topological order in bench_conf

    def keys(self, task: Task) -> list[str]:
        return [task.name] if task.width is None else [f"{task.name}[{i}]" for i in range(task.width)]

    def units(self) -> list[str]:
        return [key for task in self.tasks.values() for key in self.keys(task)]

    def paired(self, task: Task, dep: str) -> bool:
        """Shard-to-shard edge: two fan-outs of the same width (cl_hpc's rule, Slurm's aftercorr)."""
        width = self.tasks[dep].width
        return task.width is not None and width == task.width

    def unit_deps(self, task: Task, shard: int | None) -> list[str]:
        """The units that one unit of ``task`` waits for."""
        return [key for dep in task.deps for key in
                ([f"{dep}[{shard}]"] if self.paired(task, dep) else self.keys(self.tasks[dep]))]

    def level(self, name: str) -> int:
        deps = self.tasks[name].deps
        return 0 if not deps else 1 + max(self.level(d) for d in deps)


def load_dag(name: str) -> Dag:
    spec = yaml.safe_load((CONF_DIR / "pipeline" / f"{name}.yaml").read_text())
    tasks = {}
    for task_name, body in spec["tasks"].items():
        res = body.get("resources", {})
        foreach = body.get("foreach")
        tasks[task_name] = Task(
            task_name, tuple(body.get("depends_on", [])), len(foreach) if foreach else None,
            float(body.get("params", {}).get("seconds", 1.0)), int(res.get("cpus", 1)),
            int(float(res.get("mem_gb", 2)) * 1024), int(res.get("time_min", 30)))
    return Dag(spec["name"], tasks)


# ---- the plain side: a bash script of raw sbatch calls --------------------------------------------


# None: each plain job is a shell `sleep`. A path: each plain job is that Python interpreter sleeping,
# which puts an interpreter start-up in every baseline job as in every cl_hpc job (--plain-python).
PLAIN_PYTHON: str | None = None


def _payload(seconds: float) -> str:
    # The payload prints its own start and end (sub-second); sacct keeps whole seconds only.
    if PLAIN_PYTHON:
        code = f"import time; print(time.time()); time.sleep({seconds:g}); print(time.time())"
        return f"{shlex.quote(PLAIN_PYTHON)} -c {shlex.quote(code)}"
    return f"date +%s.%N; sleep {seconds:g}; date +%s.%N"


def _var(key: str) -> str:
    return "j_" + re.sub(r"\W", "_", key).rstrip("_")


def _sbatch_line(var: str, name: str, task: Task, deps: str, out: str, extra: list[str]) -> str:
    args = ["sbatch", "--parsable", f"--job-name={name}", f"--output={out}",
            f"--cpus-per-task={task.cpus}", f"--mem={task.mem_mb}M", f"--time={task.time_min}",
            "--kill-on-invalid-dep=yes", *extra]
    dep_arg = f' --dependency="{deps}"' if deps else ""
    quoted = " ".join(shlex.quote(a) for a in args)
    return f'{var}=$({quoted}{dep_arg} --wrap={shlex.quote(_payload(task.seconds))})'


def render_plain(dag: Dag, prefix: str, out_dir: Path, arrays: bool) -> str:
    """A bash script that submits ``dag`` with raw sbatch: one job per unit, or one per task
    (an array per fan-out) when ``arrays``. Job names start with ``prefix``."""
    lines = ["#!/usr/bin/env bash", "set -euo pipefail"]
    for task in dag.tasks.values():
        lines += _array_lines(dag, task, prefix, out_dir) if arrays else _job_lines(dag, task, prefix, out_dir)
    return "\n".join(lines) + "\n"


def _array_lines(dag: Dag, task: Task, prefix: str, out_dir: Path) -> list[str]:
    deps = ",".join(f"{'aftercorr' if dag.paired(task, d) else 'afterok'}:${{{_var(d)}}}" for d in task.deps)
    extra = [f"--array=0-{task.width - 1}"] if task.width else []
    out = f"{out_dir}/%x-%A_%a.out" if task.width else f"{out_dir}/%x-%j.out"
    return [_sbatch_line(_var(task.name), prefix + task.name, task, deps, out, extra)]


def _job_lines(dag: Dag, task: Task, prefix: str, out_dir: Path) -> list[str]:
    lines = []
    for i, key in enumerate(dag.keys(task)):
        deps = dag.unit_deps(task, None if task.width is None else i)
        dep_arg = "afterok:" + ":".join(f"${{{_var(k)}}}" for k in deps) if deps else ""
        name = prefix + key.replace("[", ".").rstrip("]")  # features[3] -> <prefix>features.3
        lines.append(_sbatch_line(_var(key), name, task, dep_arg, f"{out_dir}/%x-%j.out", []))
    return lines


def plain_payload_times(out_dir: Path, prefix: str) -> dict[str, tuple[float, float]]:
    """Unit key -> (start, end) from the plain jobs' output files (``<prefix><task>[.<i>]-<id>.out``)."""
    times = {}
    for path in out_dir.glob(f"{prefix}*.out"):
        name = path.name[len(prefix):].rsplit("-", 1)[0]
        task, _, shard = name.partition(".")
        stamps = [float(v) for v in path.read_text().split()]
        if len(stamps) == 2:
            times[f"{task}[{shard}]" if shard else task] = (stamps[0], stamps[1])
    return times


# ---- talking to Slurm ------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This environment minus any job's SLURM_* variables: run inside an allocation, they would
    leak into every job submitted (see slurm/launch.sbatch, section 5)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    env["SLURM_TIME_FORMAT"] = "standard"  # ISO times from sacct, whatever the user's default
    return env


def slurm(*args: str, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"`{' '.join(args)}` failed: {exc}") from exc
    if proc.returncode != 0:
        raise BenchError(f"`{' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def check_cluster() -> None:
    hint = "start the local test cluster with: sudo bash scripts/slurm-local-up.sh (logs: /var/log/slurm-local/)"
    try:
        states = slurm("sinfo", "-h", "-o", "%T", timeout=15).split()
        slurm("sacct", "-n", "-X", "-S", "now-1minutes", timeout=15)
    except BenchError as exc:
        raise BenchError(f"the Slurm cluster does not answer: {exc}\n{hint}") from exc
    # A trailing * means the node does not respond; ~ and # mean powered down or powering up.
    if not any(s.rstrip("~#") in {"idle", "mixed", "allocated", "completing"} for s in states):
        raise BenchError(f"no node can run jobs (sinfo states: {', '.join(states) or 'none'}); {hint}")


def queue(prefix: str) -> list[tuple[str, str, str]]:
    """(unit job id, job id it was submitted as, state) of every queued or recently ended unit
    whose job name starts with ``prefix``; -r lists each array element on its own line."""
    rows = [line.split("|", 3) for line in
            slurm("squeue", "-h", "-r", "-t", "all", "-o", "%i|%F|%T|%j").splitlines()]
    return [(r[0], r[1], r[2]) for r in rows if len(r) == 4 and r[3].startswith(prefix)]


def wait_ended(prefix: str, n_units: int, timeout: float, poll: float) -> float:
    """Poll squeue until all ``n_units`` have ended; the monotonic time at which it saw that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = queue(prefix)
        if len(rows) >= n_units and all(state in FINAL for _, _, state in rows):
            return time.monotonic()
        time.sleep(poll)
    raise BenchError(f"jobs {prefix}* did not all end within {timeout:.0f} s: {queue(prefix)[:5]}...")


@dataclass
class SacctRow:
    job_id: str
    name: str
    submit: float
    start: float | None
    end: float | None
    state: str


def _epoch(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:  # Unknown, None
        return None


def sacct_rows(prefix: str, since: float, n_units: int, timeout: float = 20) -> list[SacctRow]:
    """The units' accounting lines, once sacct holds all ``n_units`` with an End (it lags ~1 s)."""
    start = datetime.fromtimestamp(since - 60).strftime("%Y-%m-%dT%H:%M:%S")
    deadline = time.monotonic() + timeout
    while True:
        out = slurm("sacct", "-n", "-P", "-X", "-S", start, "-o", "JobID,JobName,Submit,Start,End,State")
        rows = [SacctRow(f[0], f[1], _epoch(f[2]) or 0.0, _epoch(f[3]), _epoch(f[4]), f[5])
                for f in (line.split("|") for line in out.splitlines()) if f[1].startswith(prefix)]
        if len(rows) >= n_units and all(r.end for r in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def cancel(prefix: str) -> None:
    """Cancel every job of ours still queued; a benchmark must not leave the cluster busy."""
    ids = sorted({base for _, base, state in queue(prefix) if state not in FINAL})
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30, check=False, env=clean_env())


def wait_idle(timeout: float = 60) -> None:
    """Wait until none of our jobs is queued, running or completing: a CPU still held by a finished
    run's job makes one shard of the next run wait a whole scheduling cycle (about 1 s)."""
    deadline = time.monotonic() + timeout
    while slurm("squeue", "--me", "-h", "-t", "PD,CF,R,CG,S", "-o", "%i").split():
        if time.monotonic() > deadline:
            console.print("[yellow]warning:[/] your other jobs keep the cluster busy; timings include them")
            return
        time.sleep(0.2)


def sbatch_rpcs() -> int | None:
    """How many batch submissions slurmctld has served (sdiag), or None where sdiag is denied."""
    try:
        out = slurm("sdiag")
    except BenchError:
        return None
    counts = re.findall(r"^\s*REQUEST_SUBMIT_BATCH_(?:HET_)?JOB\s.*?count:(\d+)", out, re.M)
    return sum(int(c) for c in counts)


# ---- the two sides ---------------------------------------------------------------------------------


@dataclass
class Submitted:
    prefix: str  # every job name of this submission starts with it
    t0_epoch: float  # when the submitting command started (epoch: payload stamps are epoch too)
    t0: float  # the same moment on the monotonic clock (for the polled wall time)
    submit_s: float  # the submitting command's wall time
    phase_s: float | None  # cl_hpc only: from its "submitting" line to its exit
    submitted_s: float | None  # from the start until every job was in the queue (plain: = submit_s)
    payloads: Callable[[], dict[str, tuple[float, float]]]  # unit key -> payload (start, end)
    verify: Callable[[], None]  # raise BenchError unless the side itself says it completed


class PlainSide:
    key, label = "p", "plain sbatch"

    def __init__(self, work: Path, arrays: bool) -> None:
        self.work, self.arrays = work, arrays

    @staticmethod
    def prefix(tag: str) -> str:
        return f"plain.{tag}."

    def submit(self, dag: Dag, tag: str) -> Submitted:
        prefix, out_dir = self.prefix(tag), self.work / tag
        out_dir.mkdir(parents=True)
        script = out_dir / "submit.sh"
        script.write_text(render_plain(dag, prefix, out_dir, self.arrays))
        t0_epoch, t0 = time.time(), time.monotonic()
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=clean_env(), timeout=300)
        submit_s = time.monotonic() - t0
        if proc.returncode != 0:
            cancel(prefix)
            raise BenchError(f"the plain submission script {script} failed: {proc.stderr.strip()}")
        return Submitted(prefix, t0_epoch, t0, submit_s, None, submit_s,
                         lambda: plain_payload_times(out_dir, prefix), lambda: None)


class ClHpcSide:
    key, label = "c", "cl_hpc"

    def __init__(self, work: Path, python: str, extra: list[str], timeout: float) -> None:
        self.work, self.python, self.extra, self.timeout = work, python, extra, timeout

    def command(self, dag: Dag, run_id: str) -> list[str]:
        return [self.python, "-m", "cl_hpc.launch", "cluster=slurm", f"pipeline={dag.name}",
                "launch.follow=false", f"run_root={self.work}/runs", f"store.root={self.work}/store",
                f"hydra.searchpath=[file://{CONF_DIR}]", f"launch.run_id={run_id}", *self.extra]

    @staticmethod
    def prefix(run_id: str) -> str:
        return f"cl_hpc.{run_id}."  # the backend's job names: cl_hpc.<run_id>.<task>

    def submit(self, dag: Dag, run_id: str) -> Submitted:
        prefix = self.prefix(run_id)
        # Unbuffered, so the "submitting" line arrives when it is printed, not at exit.
        env = {**clean_env(), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        t0_epoch, t0 = time.time(), time.monotonic()
        output, seen_at, done_at, rc = self._run(self.command(dag, run_id), env)
        t_exit = time.monotonic()
        if rc != 0:
            cancel(prefix)
            raise BenchError(f"the launcher exited {rc}:\n" + "".join(output[-25:]))
        phase = t_exit - seen_at if seen_at is not None else self._phase_from_run_json(run_id)
        return Submitted(prefix, t0_epoch, t0, t_exit - t0, phase, done_at - t0 if done_at is not None else None,
                         lambda: self._payloads(run_id), lambda: self._verify(run_id))

    def _run(self, cmd: list[str], env: dict[str, str]) -> tuple[list[str], float | None, float | None, int]:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        watchdog = threading.Timer(self.timeout, proc.kill)  # a hung launcher must not hang us
        watchdog.start()
        output, seen_at, done_at = [], None, None
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if seen_at is None and SUBMITTING.match(line):
                seen_at = time.monotonic()
            if done_at is None and SUBMITTED.match(line):
                done_at = time.monotonic()
        rc = proc.wait()
        watchdog.cancel()
        return output, seen_at, done_at, rc

    def _phase_from_run_json(self, run_id: str) -> float | None:
        """Fallback: run.json's launch time (written just before submitting) to now."""
        path = self.work / "runs" / run_id / "run.json"
        launches = json.loads(path.read_text()).get("launches") if path.exists() else None
        return time.time() - launches[-1]["time"] if launches and "time" in launches[-1] else None

    def _payloads(self, run_id: str) -> dict[str, tuple[float, float]]:
        outputs = (json.loads(p.read_text()) for p in (self.work / "runs" / run_id / "tasks").rglob("outputs.json"))
        return {o["key"]: (o["start"], o["end"]) for o in outputs}

    def _verify(self, run_id: str) -> None:
        proc = subprocess.run([self.python, "-m", "cl_hpc.status", run_id, "--run-root", str(self.work / "runs"),
                               "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, env=clean_env())
        try:
            state = json.loads(proc.stdout).get("state") if proc.returncode == 0 else None
        except ValueError:  # not JSON: show what it printed
            state = None
        if state != "COMPLETED":
            raise BenchError(f"cl_hpc.status says run {run_id} is {state}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


Side = PlainSide | ClHpcSide


# ---- measurements ----------------------------------------------------------------------------------


@dataclass
class MakespanRun:
    side: str
    rep: int
    run: str
    wall_s: float  # submission start -> squeue shows every unit ended (polled)
    sacct_s: float  # sacct: last End - first Submit (whole seconds)
    payload_s: float  # last payload end - submission start
    submit_s: float  # the submitting command alone
    dispatch_s: float  # last payload end - the first sbatch (cl_hpc: its "submitting" line)
    latency: dict[str, list[float]] = field(default_factory=dict)  # level -> unit start - ready


def level_latencies(dag: Dag, payload: dict[str, tuple[float, float]], t0: float) -> dict[str, list[float]]:
    """Per level: each unit's payload start minus the moment it became ready (the last end of the
    units it waits for; the submission start for the first level)."""
    by_level: dict[int, list[str]] = {}
    for name in dag.tasks:
        by_level.setdefault(dag.level(name), []).append(name)
    result = {}
    for level, names in sorted(by_level.items()):
        delays = []
        for name in names:
            task = dag.tasks[name]
            for i, key in enumerate(dag.keys(task)):
                deps = dag.unit_deps(task, None if task.width is None else i)
                ready = max((payload[d][1] for d in deps), default=t0)
                delays.append(payload[key][0] - ready)
        label = "submit → " if level == 0 else ""
        result[f"{level}: {label}{', '.join(names)}"] = delays
    return result


def measure_makespan(side: Side, dag: Dag, tag: str, rep: int, args: argparse.Namespace) -> MakespanRun:
    n_units = len(dag.units())
    sub = side.submit(dag, tag)
    try:
        t_end = wait_ended(sub.prefix, n_units, args.timeout, args.poll)
    finally:
        cancel(sub.prefix)
    rows = sacct_rows(sub.prefix, sub.t0_epoch, n_units)
    failed = [f"{r.job_id} {r.name} {r.state}" for r in rows if r.state != "COMPLETED"]
    if len(rows) < n_units or failed:
        raise BenchError(f"{side.label}: {len(rows)} of {n_units} units in sacct; not completed: {failed[:5]}")
    sub.verify()
    payload = sub.payloads()
    if len(payload) < n_units:
        raise BenchError(f"{side.label}: only {len(payload)} of {n_units} units left payload timestamps")
    payload_s = max(end for _, end in payload.values()) - sub.t0_epoch
    # Without the launcher's own start-up (Python, Hydra, the cluster checks): Slurm's part alone.
    startup = sub.submit_s - sub.phase_s if sub.phase_s is not None else 0.0
    return MakespanRun(
        side.label, rep, tag, t_end - sub.t0, max(r.end or 0.0 for r in rows) - min(r.submit for r in rows),
        payload_s, sub.submit_s, payload_s - startup, level_latencies(dag, payload, sub.t0_epoch))


@dataclass
class SubmitRun:
    side: str
    rep: int
    run: str
    total_s: float  # the submitting process, start to exit
    phase_s: float | None  # cl_hpc: "submitting" line -> exit
    submitted_s: float | None  # start -> every job in the queue (cl_hpc: its "submitted" line)
    jobs: int  # distinct job ids left in the queue = sbatch calls (an array is one)
    units: int  # array elements counted one by one
    rpcs: int | None  # slurmctld's count of batch submissions during the run (sdiag)


def measure_submit(side: Side, dag: Dag, tag: str, rep: int, args: argparse.Namespace) -> SubmitRun:
    before = sbatch_rpcs()
    sub = side.submit(dag, tag)
    try:
        rows = queue(sub.prefix)
    finally:
        cancel(sub.prefix)
    after = sbatch_rpcs()
    if not rows:
        raise BenchError(f"{side.label}: no job named {sub.prefix}* in squeue after the submission")
    wait_ended(sub.prefix, len(rows), 60, 0.5)  # cancelled for real before the next run starts
    rpcs = after - before if after is not None and before is not None else None
    return SubmitRun(side.label, rep, tag, sub.submit_s, sub.phase_s, sub.submitted_s,
                     len({base for _, base, _ in rows}), len(rows), rpcs)


# ---- report ----------------------------------------------------------------------------------------


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or "unknown CPU")


def python_startup_ms(python: str, n: int = 15) -> float:
    """Median CPU time of `python -c pass`, in ms. cl_hpc's overhead is CPU (the launcher, each job's
    interpreter) where plain's is not, so the ratio moves with the host's speed: a shared VM's can
    change by 20% within an hour. Printed before and after the runs to tell such runs apart."""
    times = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([python, "-c", "pass"], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
    return statistics.median(times)


def machine() -> dict[str, str]:
    # The node may declare more CPUs than the machine has (slurm/local: config_overrides), and
    # Python jobs then contend for the real cores where `sleep` jobs do not: print both.
    node = dict.fromkeys(slurm("sinfo", "-h", "-N", "-o", "%N: %c CPUs, %m MB, gres %G").splitlines())
    return {"host": platform.node(), "cpu": f"{_cpu_model()} x{os.cpu_count()} cores", "os": platform.platform(),
            "slurm": slurm("sinfo", "--version").strip(), "nodes": "; ".join(node),
            "python": sys.version.split()[0]}


def _med(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s  ({min(values):.2f}–{max(values):.2f})" if values else "–"


def _ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}" if num is not None and den else "–"


def makespan_tables(runs: list[MakespanRun], sides: list[str]) -> list[Table]:
    columns = [("wall_s", "wall: submit → all ended (polled)"), ("sacct_s", "sacct: last End − first Submit"),
               ("payload_s", "payload: last end − submit start"),
               ("dispatch_s", "payload: last end − first sbatch"), ("submit_s", "submission command")]
    table = Table(title="Makespan, 19-unit DAG of 1 s tasks (median, min–max)")
    table.add_column("side")
    for _, title in columns:
        table.add_column(title, justify="right")
    for side in sides:
        mine = [r for r in runs if r.side == side]
        table.add_row(f"{side} (n={len(mine)})", *(_spread([getattr(r, c) for r in mine]) for c, _ in columns))
    if len(sides) == 2:
        meds = [{c: _med(getattr(r, c) for r in runs if r.side == s) for c, _ in columns} for s in sides]
        table.add_row("ratio cl_hpc / plain (target ≤ 1.15)", *(_ratio(meds[1][c], meds[0][c]) for c, _ in columns))
    levels = Table(title="Dispatch latency per level: unit start − ready (median, max over units and reps)")
    levels.add_column("level")
    for side in sides:
        levels.add_column(side, justify="right")
    for level in runs[0].latency if runs else []:
        cells = []
        for side in sides:
            vals = [v for r in runs if r.side == side for v in r.latency[level]]
            cells.append(f"{statistics.median(vals):.3f} s  (max {max(vals):.3f})" if vals else "–")
        levels.add_row(level, *cells)
    return [table, levels]


def submit_table(runs: list[SubmitRun], sides: list[str]) -> Table:
    table = Table(title="Submission, 200-unit DAG with three 64-way fan-outs (median, min–max)")
    for title in ("side", "start → all in the queue (target < 2 s)", "process: start → exit", "“submitting” → exit",
                  "jobs = sbatch calls", "sdiag submit RPCs", "units"):
        table.add_column(title, justify="left" if title == "side" else "right")
    for side in sides:
        mine = [r for r in runs if r.side == side]
        phases = [r.phase_s for r in mine if r.phase_s is not None]
        rpcs = sorted({r.rpcs for r in mine if r.rpcs is not None})
        queued = [r.submitted_s for r in mine if r.submitted_s is not None]
        table.add_row(f"{side} (n={len(mine)})", _spread(queued), _spread([r.total_s for r in mine]), _spread(phases),
                      "/".join(str(j) for j in sorted({r.jobs for r in mine})),
                      "/".join(map(str, rpcs)) or "n/a", "/".join(str(u) for u in sorted({r.units for r in mine})))
    if len(sides) == 2:
        plain = _med(r.total_s for r in runs if r.side == sides[0])
        table.add_row("ratio cl_hpc / plain", _ratio(_med(r.submitted_s for r in runs if r.side == sides[1]), plain),
                      _ratio(_med(r.total_s for r in runs if r.side == sides[1]), plain),
                      _ratio(_med(r.phase_s for r in runs if r.side == sides[1]), plain), "", "", "")
    return table


# ---- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["makespan", "submit"], help="run one part (default: both)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per side and part (default: 3)")
    parser.add_argument("--plain-python", action="store_true",
                        help="plain jobs run the same Python interpreter (sleeping) instead of a shell sleep")
    parser.add_argument("--plain-only", action="store_true",
                        help="only the raw-sbatch side: the baseline, runnable without the cl_hpc backend")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs `-m cl_hpc.launch` (default: this one)")
    parser.add_argument("--launch-arg", action="append", default=[], metavar="OVERRIDE",
                        help="extra Hydra override for the launcher, e.g. cluster.partition=debug (repeatable)")
    parser.add_argument("--workdir", type=Path, help="where run dirs, scripts and logs go (default: a new temp dir)")
    parser.add_argument("--poll", type=float, default=0.1, help="squeue polling interval in s (default: 0.1)")
    parser.add_argument("--timeout", type=float, default=180, help="limit per DAG in s (default: 180)")
    parser.add_argument("--gap", type=float, default=1.0,
                        help="pause before each run, which then waits until none of your jobs is left "
                             "(default: 1 s)")
    parser.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def run_part(name: str, sides: list[Side], dag_name: str, measure: Callable, args: argparse.Namespace) -> list:
    """Alternate the sides (plain, cl_hpc, plain, ...) so drift over time hits both alike."""
    dag, stamp, results = load_dag(dag_name), datetime.now().strftime("%H%M%S"), []
    for rep in range(1, args.reps + 1):
        for side in sides:
            tag = f"{dag.name}-{stamp}-{side.key}{rep}"
            time.sleep(args.gap)
            wait_idle()
            try:
                result = measure(side, dag, tag, rep, args)
            except BaseException:  # Ctrl-C or a failed side: leave nothing queued behind
                cancel(side.prefix(tag))
                raise
            summary = ", ".join(f"{k} {v:.2f}" for k, v in asdict(result).items() if isinstance(v, float))
            console.print(f"[dim]{name} {rep}/{args.reps} {side.label:<12} {tag}: {summary}[/]", highlight=False)
            results.append(result)
    return results


def compile_bytecode(python: str) -> None:
    """Byte-compile cl_hpc and the bench tasks first, as scripts/install.sh does: with an editable
    install under PYTHONDONTWRITEBYTECODE=1 (set in many container images), every job and launch
    would otherwise compile each cl_hpc module from source, and that is what would be measured."""
    proc = subprocess.run([python, "-m", "compileall", "-q", "-j", "0", str(REPO / "cl_hpc"), str(REPO / "scripts")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"`{python} -m compileall cl_hpc scripts` failed:\n{proc.stdout}{proc.stderr}")


def main(argv: list[str] | None = None) -> int:
    global PLAIN_PYTHON
    args = parse_args(argv)
    PLAIN_PYTHON = args.python if args.plain_python else None
    try:
        check_cluster()
        if not args.plain_only:
            compile_bytecode(args.python)
        info = machine()
        info["python_startup_ms_before"] = f"{python_startup_ms(args.python):.1f}"
        work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_dag-"))
        work.mkdir(parents=True, exist_ok=True)
        console.print(f"bench_dag: {info['host']} ({info['cpu']}), {info['slurm']}, node {info['nodes']}; "
                      f"{args.reps} reps; files in {work}")
        results: dict[str, list] = {}
        cl_hpc = [] if args.plain_only else [ClHpcSide(work, args.python, args.launch_arg, args.timeout)]
        if args.only in (None, "makespan"):
            results["makespan"] = run_part("makespan", [PlainSide(work, arrays=False), *cl_hpc],
                                           "bench19", measure_makespan, args)
        if args.only in (None, "submit"):
            results["submit"] = run_part("submit", [PlainSide(work, arrays=True), *cl_hpc],
                                         "bench200", measure_submit, args)
    except BenchError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("interrupted; the current run's jobs were cancelled")
        return 130
    sides = [PlainSide.label] + ([] if args.plain_only else [ClHpcSide.label])
    info["python_startup_ms_after"] = f"{python_startup_ms(args.python):.1f}"
    console.print(f"\n[bold]{info['host']}[/]: {info['cpu']}; {info['os']}; {info['slurm']}; "
                  f"node {info['nodes']}; Python {info['python']}; "
                  f"`python -c pass` {info['python_startup_ms_before']} ms "
                  f"of CPU before the runs, {info['python_startup_ms_after']} ms after", highlight=False)
    if "makespan" in results:
        console.print(*makespan_tables(results["makespan"], sides))
    if "submit" in results:
        console.print(submit_table(results["submit"], sides))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **{k: [asdict(r) for r in v] for k, v in results.items()}},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
