"""`python -m cl_hpc.labels` and `python -m cl_hpc.launch pipeline=labels` as a user runs them:
real subprocesses on a real prediction log, and two joins at once on one zone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cl_hpc.data.predictions import Outcome
from tests.conftest import REPO, Launcher, _env
from tests.unit.test_labels_join import Log, at, iso


def labels(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.labels", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=_env())


def a_log(root: Path, hours: int = 3) -> Log:
    log = Log(root)
    for hour in range(hours):
        log.predict(f"r{hour}", at(hour, 10), rows=2, classes=[1, 0])
        log.outcomes(Outcome(at(hour, 60), f"r{hour}", None, label=1))
    return log


def test_join_prints_json_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    log = a_log(tmp_path / "log")
    settings = [f"log_dir={log.root}", f"labels.out_dir={tmp_path / 'zone'}", "window=30min", f"now={iso(at(5))}"]
    first = labels("join", "--json", *settings)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert len(report["written"]) == 3 and report["labelled"] == 6 and report["coverage"] == 1.0
    again = labels("join", *settings, "--json")  # options may follow the settings
    assert again.returncode == 0 and json.loads(again.stdout)["written"] == []
    table = labels("join", *settings)
    assert table.returncode == 0 and "label coverage" in table.stdout and "0 written" in table.stdout
    accuracy = labels("accuracy", f"out_dir={tmp_path / 'zone'}", "--json")
    assert json.loads(accuracy.stdout) == [{"version": "1.0", "rows": 6, "correct": 3, "accuracy": 0.5}]


def test_bad_settings_exit_2_with_the_reason_and_write_nothing(tmp_path: Path) -> None:
    log = a_log(tmp_path / "log")
    cases: list[tuple[list[str], str]] = [
        ([f"log_dir={log.root}", "missing=maybe"], "missing='maybe' is not one of ['drop', 'default']"),
        ([f"log_dir={log.root}", "window=later"], "window='later' is not a duration"),
        ([f"log_dir={tmp_path / 'nothing'}"], "does not exist (labels.log_dir)"),
        ([f"log_dir={log.root}", "windw=1h"], "did you mean window?"),
        ([f"log_dir={log.root}", "window"], "is not KEY=VALUE"),
    ]
    for settings, fragment in cases:
        result = labels("join", *settings, f"out_dir={tmp_path / 'zone'}")
        assert result.returncode == 2, (settings, result.stdout, result.stderr)
        assert fragment in result.stderr and "Traceback" not in result.stderr, (settings, result.stderr)
    assert not (tmp_path / "zone").exists()


def test_two_joins_at_once_write_each_partition_once(tmp_path: Path) -> None:
    log = a_log(tmp_path / "log", hours=6)
    args = [sys.executable, "-m", "cl_hpc.labels", "join", "--json", f"log_dir={log.root}",
            f"out_dir={tmp_path / 'zone'}", f"now={iso(at(8))}"]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    reports: list[dict[str, Any]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    written = [name for r in reports for name in r["written"]]
    assert len(written) == len(set(written)) == 6
    assert sorted(p.name for p in (tmp_path / "zone").glob("part-*")) == sorted(written)


def test_the_pipeline_task_runs_the_join(launcher: Launcher, tmp_path: Path) -> None:
    log = a_log(tmp_path / "log")
    zone = tmp_path / "zone"
    result = launcher("cluster=local", "pipeline=labels", f"labels.log_dir={log.root}", f"labels.out_dir={zone}",
                      f"labels.now={iso(at(5))}", "labels.missing=default", "labels.default_label=0",
                      "rightsize.mode=off", timeout=120)
    assert result.proc.returncode == 0, result.output
    outputs = result.outputs("labels")
    assert len(outputs["written"]) == 3 and outputs["labelled"] == 6
    assert sorted(p.name for p in zone.glob("part-*")) == outputs["written"]
