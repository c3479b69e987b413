"""One check of the watch: evaluate the retraining triggers, and launch the pipeline when one fires.

The order matters:

1. The lock first. A run that a watch launched and that is still going means a skip, before any
   trigger is evaluated: its outcome may change the champion. A stale lock is reported and cleared.
2. The state (:mod:`cl_hpc.watch.state`) and every enabled trigger; each result is printed and
   appended to the JSON-lines log.
3. Nothing fired: done. Something fired: a run id is chosen, the lock taken with it (an atomic
   create, so of two watches exactly one goes on), and ``python -m cl_hpc.launch <overrides>
   launch.run_id=<id> launch.reason=<why>`` runs as a child process, so Hydra, the launcher's exit
   code and its output stay its own.
4. Afterwards the lock is released if the run is over (a local run the launcher followed), or kept
   with the run's Slurm job ids for the next watch to judge (a detached run).

A severe drift result also sets ``drift_severe=true`` on every task that takes that param (the
hybrid strategy of the continual pipeline then retrains from scratch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cl_hpc.config.ml import DataConf, data_conf
from cl_hpc.errors import ConfigError
from cl_hpc.learn.drift import DriftConf
from cl_hpc.learn.triggers import TriggerConf, TriggerResult, evaluate_triggers, fired, severe, trigger_conf
from cl_hpc.rundir.layout import RunDir, new_run_id
from cl_hpc.watch.experiments import look_experiments
from cl_hpc.watch.lock import WatchLock, run_ended
from cl_hpc.watch.state import Gathered, Source, gather

Out = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """What the composed config tells the watch."""

    model: str  # the registry's model name (a task's params.registry.name, else the pipeline's name)
    alias: str  # the serving alias (champion)
    run_root: Path
    store_root: Path  # the registry's store (a task's params.registry.root, else store.root)
    store_options: dict[str, Any]
    data: DataConf
    trigger: TriggerConf
    drift: DriftConf
    backend: str  # cluster.mode
    severe_keys: tuple[str, ...]  # overrides that tell the pipeline the drift is severe
    lock_path: Path
    log_path: Path
    log_dir: Path  # the prediction log the servers write (serve.log_dir): the experiments' traffic
    label_dirs: tuple[Path, ...]  # the label join's zones (labels.out_dir, shadow_out_dir): labels and rewards


@dataclass(frozen=True)
class Outcome:
    action: str  # idle | skipped | launched | dry-run
    run_id: Optional[str] = None
    reason: Optional[str] = None
    exit_code: int = 0  # the launcher's, when it ran


def settings_from(cfg: DictConfig, model: Optional[str] = None, lock: Optional[Path] = None,
                  log: Optional[Path] = None) -> Settings:
    try:
        resolved: Any = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the config does not resolve: {exc}; check the key it names") from exc
    tasks = resolved["pipeline"].get("tasks") or {}
    registry = next((dict(t["params"]["registry"]) for t in tasks.values()
                     if isinstance((t.get("params") or {}).get("registry"), dict)), {})
    name = model or registry.get("name") or resolved["pipeline"]["name"]
    run_root = Path(resolved["run_root"])
    store = resolved["store"]
    return Settings(
        model=name, alias=registry.get("alias", "champion"), run_root=run_root,
        store_root=Path(registry.get("root") or store["root"]),
        store_options={"journal_mode": store["journal_mode"], "busy_timeout_s": store["busy_timeout_s"]},
        data=data_conf(resolved["data"]), trigger=trigger_conf(resolved.get("trigger")),
        drift=drift_conf(resolved.get("drift")), backend=str(resolved["cluster"]["mode"]),
        severe_keys=tuple(f"pipeline.tasks.{n}.params.drift_severe" for n, t in tasks.items()
                          if "drift_severe" in (t.get("params") or {})),
        lock_path=lock or run_root / f".watch-{name}.lock", log_path=log or run_root / "watch.log.jsonl",
        log_dir=Path(resolved["serve"]["log_dir"] or Path(store["root"]) / "predictions").expanduser().resolve(),
        label_dirs=tuple(Path(d).expanduser().resolve() for d in (resolved["labels"]["out_dir"],
                                                                  resolved["labels"].get("shadow_out_dir")) if d))


def drift_conf(raw: Optional[Mapping[str, Any]]) -> DriftConf:
    valid = [f.name for f in dataclasses.fields(DriftConf)]
    unknown = sorted(set(raw or {}) - set(valid))
    if unknown:
        raise ConfigError(f"unknown drift key(s) {unknown}; valid keys: {valid}")
    return DriftConf(**dict(raw or {}))


# --- the launch command -------------------------------------------------------------------------


def reason_of(hits: Sequence[TriggerResult]) -> str:
    """``<trigger>: value >= threshold`` for each fired trigger, for run.json and the log."""
    parts = []
    for r in hits:
        what = r.detail if r.value is None else f"{_fmt(r.value)} >= {_fmt(r.threshold)}"
        parts.append(f"{r.name}: {what}{' (severe)' if r.severe else ''}")
    return "; ".join(parts)


def hydra_quote(text: str) -> str:
    """``text`` as one single-quoted Hydra override value that reads back unchanged.

    Hydra keeps a backslash as it is unless a quote follows: backslashes before a quote (or before
    the closing one) are doubled and the quote escaped. ``${`` is escaped so that OmegaConf does
    not take it for an interpolation.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", text.replace("${", "\\${"))
    return "'" + re.sub(r"(\\+)$", lambda m: m[1] * 2, escaped) + "'"


def launcher_env(env: Mapping[str, str]) -> dict[str, str]:
    """The watch's environment without its own Slurm job's variables (a watch run by scrontab).

    sbatch copies its caller's environment into every job it submits, and an inherited
    SLURM_MEM_PER_NODE makes srun fail in a task that asks for --mem-per-cpu (slurm/launch.sbatch
    drops them for the same reason). SLURM_CONF stays: it says where the cluster's config is.
    """
    kept = {k: v for k, v in env.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    if env.get("SLURM_JOB_ID"):
        kept["CL_HPC_LAUNCHER_JOB_ID"] = env["SLURM_JOB_ID"]
    return kept


def launch_command(overrides: Sequence[str], run_id: str, reason: str) -> list[str]:
    # Ours go last: Hydra keeps the last value of a key, and the lock names this run id.
    return [sys.executable, "-m", "cl_hpc.launch", *overrides, f"launch.run_id={run_id}",
            f"launch.reason={hydra_quote(reason)}"]


# --- the log ------------------------------------------------------------------------------------


class Journal:
    """Prints each event for a person and appends it as one JSON line (no file: print only)."""

    def __init__(self, path: Optional[Path], model: str, out: Out) -> None:
        self.path, self.model, self.out = path, model, out
        self.check_id = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def event(self, event: str, line: Optional[str] = None, **fields: Any) -> None:
        if line is not None:
            self.out(line)
        if self.path is None:
            return
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "check": self.check_id,
                  "model": self.model, "event": event, **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(record, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)  # one write per line: concurrent watches never interleave within a line
        finally:
            os.close(fd)


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def report_triggers(journal: Journal, gathered: Gathered, results: Sequence[TriggerResult]) -> None:
    champion = gathered.champion
    journal.event("state", f"watch {journal.model}: {gathered.summary(journal.model)}",
                  champion=champion.label if champion else None, new_rows=gathered.state.new_rows,
                  new_partitions=[p.path.name for p in gathered.new], notes=list(gathered.notes))
    for note in gathered.notes:
        journal.out(f"  note: {note}")
    for r in results:
        line = (f"  {r.name:<22} value {_fmt(r.value):>9}  threshold {_fmt(r.threshold):>7}  "
                f"fired {'yes' if r.fired else 'no ':<3}{' severe' if r.severe else ''}  {r.detail}")
        journal.event("trigger", line, **r.to_dict())


# --- one check ----------------------------------------------------------------------------------


def check(s: Settings, overrides: Sequence[str], dry_run: bool = False, out: Out = print,
          now: Optional[datetime] = None) -> Outcome:
    journal = Journal(None if dry_run else s.log_path, s.model, out)
    # First, and whether or not a run is going: a promotion changes the champion the triggers measure.
    look_experiments(s, journal, dry_run)
    lock = WatchLock(s.lock_path)
    busy = _lock_state(lock, journal, dry_run)
    if busy is not None and not dry_run:
        return Outcome("skipped", reason=busy)
    source = Source(s.store_root, s.model, s.alias, s.run_root, s.store_options)
    gathered = gather(source, s.data, s.trigger, s.drift, now or datetime.now(timezone.utc))
    results = evaluate_triggers(s.trigger, gathered.state)
    report_triggers(journal, gathered, results)
    if not fired(results):
        journal.event("idle", f"watch {s.model}: no trigger fired; nothing launched")
        return Outcome("idle")
    run_id, reason, command = _command(s, overrides, results)
    if dry_run:
        out(f"dry run: would launch run {run_id} ({reason}):\n  {shlex.join(command)}")
        return Outcome("dry-run", run_id, reason)
    return _launch(s, lock, journal, command, run_id, reason)


def _command(s: Settings, overrides: Sequence[str], results: Sequence[TriggerResult]) -> tuple[str, str, list[str]]:
    """(run id, reason, launch command) for the triggers that fired."""
    run_id, reason = new_run_id(), reason_of(fired(results))
    extra = [f"{key}=true" for key in s.severe_keys] if severe(results) else []
    return run_id, reason, launch_command([*overrides, *extra], run_id, reason)


def _lock_state(lock: WatchLock, journal: Journal, dry_run: bool) -> Optional[str]:
    """Why this check must skip (a run still going), or None; a stale lock is cleared (not in a dry run)."""
    verdict, info = (lock.peek(), lock.read()) if dry_run else lock.clear_stale()
    if verdict is None:
        return None
    if verdict.held:
        what = "dry run: a real check would skip now" if dry_run else "skipped"
        journal.event("skipped", f"watch {journal.model}: {what}: {verdict.why} (lock {lock.path})",
                      why=verdict.why, lock=info)
        return verdict.why
    done = "would be replaced" if dry_run else "cleared"
    journal.event("stale-lock", f"watch {journal.model}: stale lock {lock.path} {done}: {verdict.why}",
                  why=verdict.why, lock=info)
    return None


def _launch(s: Settings, lock: WatchLock, journal: Journal, command: list[str], run_id: str, reason: str) -> Outcome:
    run = RunDir(s.run_root / run_id)
    taken = lock.acquire(run.path, s.backend)
    if not taken.ok:
        journal.event("skipped", f"watch {s.model}: skipped: {taken.why}", why=taken.why)
        return Outcome("skipped", reason=taken.why)
    if taken.stale:
        journal.event("stale-lock", f"watch {s.model}: replaced a stale lock: {taken.stale['stale_why']}",
                      why=taken.stale["stale_why"], lock=taken.stale)
    journal.event("launch", f"watch {s.model}: launching run {run_id} ({reason}):\n  {shlex.join(command)}",
                  run_id=run_id, reason=reason, command=command)
    sys.stdout.flush()
    try:
        code = subprocess.run(command, check=False, env=launcher_env(os.environ)).returncode
    finally:
        state = _settle(lock, run, s.backend)
    journal.event("launched", f"watch {s.model}: run {run_id}: launcher exit {code}; {state}",
                  run_id=run_id, exit_code=code, run_state=state)
    return Outcome("launched", run_id, reason, code)


def _settle(lock: WatchLock, run: RunDir, backend: str) -> str:
    """Release the lock once the run is over (or never started); else hand it to the run."""
    ended = run_ended(run) if run.exists() else "never started"
    if ended:
        lock.release()
        return f"{ended}; lock released"
    jobs: list[str] = []
    if backend == "slurm":
        from cl_hpc.execute.slurm.executor import all_job_ids

        jobs = all_job_ids(run)
    lock.update(launched=True, job_ids=jobs)
    return f"still going{f' as Slurm job(s) {jobs}' if jobs else ''}; the lock stays until it ends"
