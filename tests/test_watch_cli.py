"""`python -m cl_hpc.watch` as a user runs it: real subprocesses, real launches of the tiny pipelines
in tests/conf/pipeline on the local backend, a real registry and landing zone for the champion."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cl_hpc.learn.checkpoint import save_workload
from cl_hpc.learn.triggers import TriggerResult
from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.experiments import ExperimentStore
from cl_hpc.rollout.records import Arm, ExperimentKind, ExperimentState
from cl_hpc.rundir.layout import RunDir
from cl_hpc.watch.check import hydra_quote, launcher_env, reason_of
from cl_hpc.watch.lock import run_ended
from tests.conftest import REPO, _env
from tests.rollout_traffic import traffic
from tests.unit.test_watch_state import make_champion, make_zone, tabular_champion, write_partition


class Watch:
    """Runs the watch from the repo root with its run root, store and lock in a tmp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.run_root, self.store = tmp, tmp / "runs", tmp / "store"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cl_hpc.watch", "hydra.searchpath=[file://tests/conf]",
                f"run_root={self.run_root}", f"store.root={self.store}", *args]

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout, env=_env())

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=_env())

    def runs(self) -> list[Path]:
        return sorted(p for p in self.run_root.glob("2*") if (p / "plan.json").exists())

    def log(self) -> list[dict[str, Any]]:
        path = self.run_root / "watch.log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def zone_args(self) -> list[str]:
        return [f"data.landing_dir={self.tmp / 'zone'}", "data.generator=none"]


def wait_ended(run: Path, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ended = run_ended(RunDir(run))
        if ended:
            return ended
        time.sleep(0.3)
    raise AssertionError(f"run {run} did not end within {timeout_s} s")


@pytest.fixture
def watch(tmp_path: Path) -> Watch:
    return Watch(tmp_path)


def out(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def test_dry_run_without_a_champion_prints_the_launch_and_writes_nothing(watch: Watch) -> None:
    proc = watch("--dry-run", "pipeline=diamond")
    assert proc.returncode == 0, out(proc)
    assert "model 'diamond': no champion yet" in proc.stdout
    assert "time                   value         -  threshold     168  fired yes" in proc.stdout
    assert "volume" in proc.stdout and "performance" in proc.stdout and "drift" in proc.stdout
    assert "dry run: would launch run" in proc.stdout and "-m cl_hpc.launch" in proc.stdout
    assert "pipeline=diamond launch.run_id=" in proc.stdout and "launch.reason=" in proc.stdout
    assert not watch.run_root.exists()  # no run, no log, no lock


def test_without_a_champion_it_launches_and_the_reason_lands_in_run_json(watch: Watch) -> None:
    proc = watch("pipeline=diamond")
    assert proc.returncode == 0, out(proc)
    [run] = watch.runs()
    launch = json.loads((run / "run.json").read_text())["launches"][-1]
    assert launch["reason"] == "time: no model has been trained yet"
    assert f"run {run.name}: launcher exit 0; COMPLETED; lock released" in proc.stdout
    events = watch.log()
    triggers = [e for e in events if e["event"] == "trigger"]
    assert [t["name"] for t in triggers] == ["time", "volume", "performance", "performance.adwin", "drift"]
    assert triggers[0] | {"fired": True, "value": None, "threshold": 168.0} == triggers[0]
    assert [e["event"] for e in events if e["event"] != "trigger"] == ["state", "launch", "launched"]
    assert events[-1]["run_id"] == run.name and events[-1]["exit_code"] == 0
    assert not (watch.run_root / ".watch-diamond.lock").exists()


def test_a_fresh_champion_without_new_data_launches_nothing(watch: Watch) -> None:
    window = make_zone(watch.tmp / "zone")
    make_champion(watch.store, "diamond", window)
    proc = watch("pipeline=diamond", *watch.zone_args())
    assert proc.returncode == 0, out(proc)
    assert "champion diamond 1.0" in proc.stdout and "0 new rows in 0 partition(s)" in proc.stdout
    assert "no trigger fired; nothing launched" in proc.stdout
    assert watch.runs() == [] and [e["event"] for e in watch.log()][-1] == "idle"
    assert not any(e.get("fired") for e in watch.log())


def test_new_data_fires_volume_and_severe_drift_asks_the_pipeline_to_start_over(watch: Watch) -> None:
    window = make_zone(watch.tmp / "zone")
    make_champion(watch.store, "diamond", window)
    write_partition(watch.tmp / "zone", 4, seed=10, shift=1.5)
    write_partition(watch.tmp / "zone", 5, seed=11, shift=1.5)
    # any task with a drift_severe param is told (continual.yaml's train task has one)
    proc = watch("--dry-run", "pipeline=diamond", "+pipeline.tasks.d.params.drift_severe=false", *watch.zone_args())
    assert proc.returncode == 0, out(proc)
    assert "600 new rows in 2 partition(s)" in proc.stdout
    assert "volume: 0.5 >= 0.5; drift: 1 >= 0.5 (severe)" in proc.stdout
    assert "+pipeline.tasks.d.params.drift_severe=false" in proc.stdout
    assert proc.stdout.rstrip().count("pipeline.tasks.d.params.drift_severe=true launch.run_id=") == 1


# The slow pipeline's sleeper, lengthened: a second watch must still find the first run going on a
# loaded machine, where its own start-up (Python, Hydra) takes seconds.
LONGER = "pipeline.tasks.sleeper.params.sleep_s=12"


def test_the_lock_skips_a_second_launch_while_the_first_run_goes(watch: Watch) -> None:
    first = watch("pipeline=slow", "launch.follow=false", LONGER)  # detached: the local scheduler runs it
    assert first.returncode == 0, out(first)
    [run] = watch.runs()
    assert "still going; the lock stays until it ends" in first.stdout
    lock = json.loads((watch.run_root / ".watch-slow.lock").read_text())
    assert lock["run_id"] == run.name and lock["launched"] is True and lock["backend"] == "local"

    second = watch("pipeline=slow", "launch.follow=false", LONGER)
    assert second.returncode == 0, out(second)
    assert f"skipped: run {run.name} still going: its local scheduler is alive" in second.stdout
    assert "trigger" not in {e["event"] for e in watch.log()[-1:]} and watch.runs() == [run]

    assert wait_ended(run) == "COMPLETED"
    third = watch("pipeline=slow", "launch.follow=false", LONGER)
    assert third.returncode == 0, out(third)
    assert f"stale lock {watch.run_root / '.watch-slow.lock'} cleared: run {run.name} ended (COMPLETED)" in third.stdout
    assert len(watch.runs()) == 2
    wait_ended(watch.runs()[-1])


def test_two_watches_started_together_launch_one_run(watch: Watch) -> None:
    procs = [watch.start("pipeline=slow", LONGER) for _ in range(2)]  # each follows its run to the end
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    [run] = watch.runs()
    assert sum(f"launching run {run.name}" in o for o in outputs) == 1, outputs
    assert sum(f"skipped: run {run.name} still going" in o for o in outputs) == 1, outputs
    assert run_ended(RunDir(run)) == "COMPLETED"


def test_loop_checks_until_interrupted(watch: Watch) -> None:
    make_champion(watch.store, "diamond", make_zone(watch.tmp / "zone"))
    proc = watch.start("--loop", "--every", "1s", "pipeline=diamond", *watch.zone_args())
    deadline = time.monotonic() + 120
    while sum(e["event"] == "idle" for e in watch.log()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "next check in" in output and "interrupted; stopped" in output and "Traceback" not in output
    assert sum(e["event"] == "idle" for e in watch.log()) >= 2


@pytest.mark.parametrize("args, message", [
    (["nosuchkey=1"], "error: nosuchkey=1: Config has no key 'nosuchkey'"),
    (["--every", "5m"], "--every only applies with --loop"),
    (["--loop", "--every", "soon"], "is not a positive duration"),
    (["-m", "pipeline=diamond"], "Hydra flags (e.g. -m) are not supported"),
])
def test_bad_input_is_refused_with_exit_2(watch: Watch, args: list[str], message: str) -> None:
    proc = watch(*args)
    assert proc.returncode == 2 and message in out(proc), out(proc)
    assert watch.runs() == []


# --- the pure pieces of the launch ------------------------------------------------------------------


def test_the_reason_names_each_fired_trigger_with_its_numbers() -> None:
    hits = [TriggerResult("time", None, 168.0, True, "no model has been trained yet"),
            TriggerResult("volume", 0.62500001, 0.5, True, "..."),
            TriggerResult("drift", 1.0, 0.5, True, "...", severe=True)]
    assert reason_of(hits) == "time: no model has been trained yet; volume: 0.625 >= 0.5; drift: 1 >= 0.5 (severe)"


@pytest.mark.parametrize("text", ["volume: 0.625 >= 0.5", "it's a \\ back'slash", "ends in \\", "quote \\'",
                                  "a, b=c [d] {e}", "x: ${oops}", ""])
def test_hydra_reads_the_quoted_reason_back_unchanged(text: str) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    [override] = OverridesParser.create().parse_overrides([f"launch.reason={hydra_quote(text)}"])
    assert OmegaConf.create({"reason": override.value()}).reason == text


def test_the_launcher_gets_the_environment_without_the_watch_jobs_slurm_variables() -> None:
    env = {"PATH": "/bin", "SLURM_JOB_ID": "42", "SLURM_MEM_PER_NODE": "1024", "SLURM_CONF": "/etc/slurm.conf",
           "SLURMD_NODENAME": "n1"}
    assert launcher_env(env) == {"PATH": "/bin", "SLURM_CONF": "/etc/slurm.conf", "SLURMD_NODENAME": "n1",
                                 "CL_HPC_LAUNCHER_JOB_ID": "42"}
    assert launcher_env({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_loop_runs_the_experiment_controller_and_journals_its_decision(watch: Watch) -> None:
    """A running A/B experiment whose challenger answers worse is rejected by the watch's own look, with
    the decision in the watch's journal and the registry, while the triggers are checked as before."""
    window = make_zone(watch.tmp / "zone")
    make_champion(watch.store, "diamond", window)
    workload = tabular_champion()
    sha = save_workload(watch.tmp / "challenger.pt", workload, {"window_digest": "challenger"})
    with ModelRegistry.open(watch.store) as registry, ExperimentStore.open(watch.store) as experiments:
        champion = str(registry.resolve("diamond", "champion"))
        challenger = str(registry.register("diamond", watch.tmp / "challenger.pt", strategy="stateless",
                                           checkpoint_sha256=sha, model_class=workload.model_target.path,
                                           init_args=workload.model_target.args,
                                           datamodule_class=workload.data_target.path,
                                           signature=workload.signature.to_dict()).version)
        experiment, _ = experiments.start(registry, "diamond", ExperimentKind.AB,
                                          (Arm("challenger", challenger), Arm("champion", champion)),
                                          {"challenger": 0.5, "champion": 0.5}, unit=UnitKind.USER, reason="watch",
                                          config={"min_samples": 100, "mde": 0.05})
    traffic(watch.tmp, experiment, time.time() - 120, {"champion": 600, "challenger": 600},
            {"champion": 0.9, "challenger": 0.6}, {"champion": 1.0, "challenger": 1.0}, seed=1)
    proc = watch.start("--loop", "--every", "1s", "pipeline=diamond", *watch.zone_args(),
                       f"serve.log_dir={watch.tmp / 'log'}", f"labels.out_dir={watch.tmp / 'labels'}")
    deadline = time.monotonic() + 120
    while sum(e["event"] == "idle" for e in watch.log()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    looks = [e for e in watch.log() if e["event"] == "experiment"]
    assert [(e["experiment"], e["decision"]) for e in looks] == [(experiment.id, "reject")], output
    assert f"experiment {experiment.id} (ab): reject: accuracy: the challenger is worse" in output
    with ModelRegistry.open(watch.store) as registry, ExperimentStore.open(watch.store) as experiments:
        assert "rejected" in registry.get("diamond", challenger).tags
        assert str(registry.resolve("diamond", "champion")) == champion
        assert experiments.latest(experiment.id).state is ExperimentState.DECIDED
