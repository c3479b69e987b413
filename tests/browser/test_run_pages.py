"""Run pages in a real browser: real runs made by the launcher, ``python -m cl_hpc.report html`` as a user
runs it, each page loaded from its file URL in Debian's chromium (the ``page`` fixture fails a test on any
console error, script error or network request). Covered: a failed local run, a profiled run whose memory
kill was retried with more, a run without a profile, a run still going, and a run on the real Slurm cluster.
Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import REPO, Launcher, _env, attempt_records, held_sleeper, poll


def report_html(launcher: Launcher, run: str | None = None) -> Path:
    args = [sys.executable, "-m", "cl_hpc.report", "html", *([run] if run else []), "--run-root",
            str(launcher.run_root)]
    done = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.name == "report.html", done.stdout
    return path


def states(run: Path, key: str) -> list[str]:
    return [a["state"] for a in attempt_records(run, key)]


def wait_for_states(run: Path, key: str, done: Callable[[list[str]], bool], timeout_s: float = 180) -> None:
    assert poll(lambda: done(states(run, key)), timeout_s), f"{key}: attempts {states(run, key)} after {timeout_s} s"


def card(page: Page, key: str) -> str:
    return page.locator(f'#summary .card[data-key="{key}"] .v').inner_text()


def node_state(page: Page, task: str) -> str | None:
    return page.locator(f'svg.dag g.dag-node[data-task="{task}"]').get_attribute("data-state")


def test_a_failed_run(launcher: Launcher, page: Page, screenshot: Callable[[str], Path]) -> None:
    done = launcher("pipeline=failing")
    assert done.proc.returncode != 0  # the run failed, as planned
    path = report_html(launcher)
    page.goto(path.as_uri())
    expect(page.locator("#run-state")).to_have_text("FAILED")
    root = page.locator("#root-cause")
    expect(root).to_be_visible()
    expect(root).to_contain_text("bad")
    expect(root).to_contain_text("deliberate failure")
    assert [node_state(page, t) for t in ("a", "bad", "c", "d", "e")] == [
        "COMPLETED", "FAILED", "CANCELLED", "CANCELLED", "COMPLETED"]
    assert (card(page, "units"), card(page, "failed"), card(page, "attempts")) == ("5", "1", "3")
    failure = page.locator('#failures .failure[data-unit="bad"]')
    expect(failure).to_be_visible()
    expect(failure.locator("pre")).to_contain_text("deliberate failure")  # the tail of its own log
    expect(page.locator("#gantt svg.chart")).to_be_visible()
    expect(page.locator("#gantt")).to_contain_text("3 attempts of 3 units")
    expect(page.locator('#retries tr[data-unit="bad"]')).to_contain_text("deliberate failure")
    screenshot("failed-run")
    page.emulate_media(media="print")  # readable on paper: nothing cut, the DAG and failure still shown
    expect(page.locator("#failures pre")).to_be_visible()
    screenshot("failed-run-print")


def test_a_memory_kill_retried_with_more(launcher: Launcher, page: Page, screenshot: Callable[[str], Path]) -> None:
    # hog holds 250 MB over its 0.25 GB until the local scheduler kills it (its gate opens only once the
    # first attempt failed), then its retry asks for more and completes
    gate = launcher.tmp / "hog.gate"
    done = launcher("cluster=local", "pipeline=oom", "pipeline.tasks.hog.params.mb=250",
                    "pipeline.tasks.hog.retries=1", f"+pipeline.tasks.hog.params.gate={gate}", "launch.follow=false")
    assert done.proc.returncode == 0, done.output
    run = done.run_dir()
    try:
        wait_for_states(run, "hog", lambda states: "FAILED" in states)
    finally:
        gate.touch()
    wait_for_states(run, "after", lambda states: states == ["COMPLETED"])
    page.goto(report_html(launcher).as_uri())
    expect(page.locator("#run-state")).to_have_text("COMPLETED")
    assert (card(page, "oom"), card(page, "retries"), card(page, "attempts")) == ("1", "1", "3")
    gantt = page.locator("#gantt")
    expect(gantt.locator("svg.chart")).to_contain_text("OOM")  # the first attempt's bar is marked ...
    expect(gantt.locator("svg.chart")).to_contain_text("#2")
    first = page.locator('#retries tr[data-unit="hog"][data-attempt="1"]')  # ... and the table says why, and what
    expect(first).to_contain_text("OOM")  # its retry asked for
    expect(first).to_contain_text("mem_gb 0.25 -> ")
    row = page.locator('#efficiency tr[data-unit="hog"][data-attempt="2"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("COMPLETED")
    screenshot("oom-retry")


def test_a_profiled_run(launcher: Launcher, page: Page, screenshot: Callable[[str], Path]) -> None:
    """hog holds 300 MB for 3 s under a 2 GB request: its timeline shows RSS far below the request line, and
    the efficiency table the smaller request its next run would make."""
    done = launcher("pipeline=sizing", "pipeline.tasks.hog.params.hold_s=3")
    assert done.proc.returncode == 0, done.output
    page.goto(report_html(launcher).as_uri())
    timeline = page.locator('#timelines figure.timeline[data-task="hog"]')
    expect(timeline).to_be_visible()
    expect(timeline).to_contain_text("requested memory")
    expect(timeline).to_contain_text("RSS MB")
    row = page.locator('#efficiency tr[data-unit="hog"][data-attempt="1"]')
    expect(row).to_contain_text("/ 2.0 G")
    next_run = re.search(r"mem=([0-9.]+)G", row.inner_text())
    assert next_run and 0.3 < float(next_run.group(1)) < 2.0, row.inner_text()  # right-sized below the request
    screenshot("profiled-run")


def test_a_run_without_a_profile(launcher: Launcher, page: Page, screenshot: Callable[[str], Path]) -> None:
    done = launcher("pipeline=diamond", "profile.enabled=false")
    assert done.proc.returncode == 0, done.output
    page.goto(report_html(launcher).as_uri())
    expect(page.locator("#run-state")).to_have_text("COMPLETED")
    expect(page.locator("#no-profile")).to_be_visible()
    assert page.locator("#efficiency").count() == 0 and page.locator("#mfu").count() == 0
    assert [node_state(page, t) for t in "abcd"] == ["COMPLETED"] * 4
    assert card(page, "units") == "4" and card(page, "failed") == "0"
    expect(page.locator("#gantt")).to_contain_text("4 attempts of 4 units")
    screenshot("no-profile")


def test_a_run_still_going(launcher: Launcher, page: Page, screenshot: Callable[[str], Path]) -> None:
    gate = launcher.tmp / "sleeper.gate"
    done = launcher("cluster=local", *held_sleeper(gate), "launch.follow=false")
    assert done.proc.returncode == 0, done.output
    run = done.run_dir()
    try:
        wait_for_states(run, "sleeper", lambda states: states == ["RUNNING"])
        page.goto(report_html(launcher, run.name).as_uri())
        expect(page.locator("#still-running")).to_be_visible()
        expect(page.locator("#run-state")).to_have_text("RUNNING")
        assert [node_state(page, t) for t in ("first", "sleeper", "last")] == ["COMPLETED", "RUNNING", "PENDING"]
        screenshot("still-going")
    finally:
        gate.touch()


@pytest.mark.slurm
def test_a_slurm_run(launcher: Launcher, page: Page, screenshot: Callable[[str], Path]) -> None:
    """On the local cluster: a fan-out is one job array; its shards are units of the page."""
    done = launcher("cluster=slurm", "pipeline=fanout", timeout=400)
    assert done.proc.returncode == 0, done.output
    page.goto(report_html(launcher).as_uri())
    expect(page.locator("#run-state")).to_have_text("COMPLETED")
    expect(page.locator(".sub")).to_contain_text("backend slurm")
    shards = page.locator('svg.dag g.dag-node[data-task="shards"]')
    expect(shards).to_contain_text("shards ×3")
    assert card(page, "units") == "8" and card(page, "attempts") == "8"
    ticks = page.locator("#gantt svg.chart").text_content() or ""
    assert all(re.search(rf"shards\[{i}\]", ticks) for i in range(3)), ticks
    screenshot("slurm-run")
