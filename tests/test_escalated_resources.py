"""A retry the local scheduler escalated knows it: its profile's ``requested``, its attempt record and
what its task sees say the memory it ran under, not the plan's (cl_hpc/execute/local_agent.py tells
run_unit; UnitCall.run_under)."""

from __future__ import annotations

import json
import re

from tests.conftest import Launcher, attempt_records, poll


def test_the_retry_after_a_memory_kill_records_the_memory_it_ran_under(launcher: Launcher) -> None:
    # hog holds 250 MB over its 0.25 GB until the local scheduler kills it (the gate opens only
    # after the first attempt failed), then the retry runs with more and completes.
    gate = launcher.tmp / "hog.gate"
    result = launcher("cluster=local", "pipeline=oom", "pipeline.tasks.hog.params.mb=250",
                      "pipeline.tasks.hog.retries=1", f"+pipeline.tasks.hog.params.gate={gate}",
                      "profile.flush_s=0.2", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    log = run / "scheduler.log"
    try:
        assert poll(lambda: [a["state"] for a in attempt_records(run, "hog")][:1] == ["FAILED"], 120), log.read_text()
    finally:
        gate.touch()
    assert poll(lambda: [a["state"] for a in attempt_records(run, "after")] == ["COMPLETED"], 120), log.read_text()

    raised = re.search(r"hog: retrying with mem_gb 0\.25 -> ([0-9.]+):", log.read_text())
    assert raised, log.read_text()
    mem_gb = float(raised.group(1))
    assert mem_gb > 0.25
    first, second = attempt_records(run, "hog")
    assert first["state"] == "FAILED" and "over its mem_gb=0.25 " in first["error"], first
    assert first["resources"]["mem_gb"] == 0.25 and first["resources"]["time_min"] == 5
    assert second["state"] == "COMPLETED" and second["resources"]["mem_gb"] == mem_gb, second
    assert second["resources"]["time_min"] == 5  # only what the kill was about is raised
    profiles = run / "tasks" / "hog" / "profiles"
    assert json.loads((profiles / "2-0.json").read_text())["requested"]["mem_gb"] == mem_gb
    if (profiles / "1-0.json").exists():  # flushed before the kill, unless the kill came first
        assert json.loads((profiles / "1-0.json").read_text())["requested"]["mem_gb"] == 0.25
    # the unit that was never escalated runs under its plan's request
    (after,) = attempt_records(run, "after")
    assert after["resources"]["mem_gb"] == 0.5


def test_the_retry_after_a_time_limit_names_its_own_doubled_limit(launcher: Launcher) -> None:
    # sleeper sleeps 60 s in 3 s (0.05 min): killed at its limit, retried with 6 s, killed again.
    result = launcher("cluster=local", "pipeline=slow", "pipeline.tasks.sleeper.params.sleep_s=60",
                      "pipeline.tasks.sleeper.resources.time_min=0.05", "pipeline.tasks.sleeper.retries=1")
    assert result.proc.returncode == 1, result.output
    run = result.run_dir()
    assert "sleeper: retrying with time_min 0.05 -> 0.1:" in (run / "scheduler.log").read_text()
    first, second = attempt_records(run, "sleeper")
    assert first["error"].startswith("TIMEOUT") and "time limit of 0.05 min" in first["error"], first
    assert second["error"].startswith("TIMEOUT") and "time limit of 0.1 min" in second["error"], second
    assert (first["resources"]["time_min"], second["resources"]["time_min"]) == (0.05, 0.1)
    assert second["resources"]["mem_gb"] == first["resources"]["mem_gb"] == 0.5
