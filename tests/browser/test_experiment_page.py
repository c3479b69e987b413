"""The experiment page in a real browser: a real canary (a real registry, the real controller's looks on a
real experiment store, real prediction-log and label files; tests/test_report_experiment_page.py's Lab),
written by ``python -m cl_hpc.report html --experiment`` as a user runs it, loaded from its file URL (the
``page`` fixture fails on any console error, script error or network request)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from playwright.sync_api import Page, expect

from cl_hpc.rollout.records import ExperimentKind
from tests.conftest import REPO, _env
from tests.rollout_traffic import traffic
from tests.test_report_experiment_page import T0, Lab


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A canary ramping 50 % -> 100 %, promoted at the second look."""
    lab = Lab(tmp_path_factory.mktemp("experiment-page-browser"))
    try:
        experiment = lab.start(ExperimentKind.CANARY, 0.5, min_samples=40, steps=[50.0, 100.0], alpha=0.05)
        traffic(lab.tmp, experiment, T0 + 1, {"champion": 300, "challenger": 300},
                {"champion": 0.85, "challenger": 0.86}, {"champion": 1.0, "challenger": 1.0}, seed=2)
        lab.look(experiment, T0 + 100)
        traffic(lab.tmp, experiment, T0 + 101, {"challenger": 300}, {"challenger": 0.86}, {"challenger": 1.0}, seed=3)
        lab.look(experiment, T0 + 200)
    finally:
        lab.close()
    done = subprocess.run([sys.executable, "-m", "cl_hpc.report", "html", "--experiment", str(experiment.id),
                           "--store-root", str(lab.root), "--log-dir", str(lab.tmp / "log"), "--labels",
                           str(lab.tmp / "labels")], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    path = Path(done.stdout.strip())
    assert path == lab.root / "reports" / f"experiment-{experiment.id}.html"
    return path


def test_the_canary_page(written: Path, page: Page, screenshot: Callable[[str], Path]) -> None:
    page.goto(written.as_uri())
    for section in ("#traffic", "#intervals", "#ramp", "#decisions"):
        expect(page.locator(section)).to_be_visible()
    expect(page.locator("#state")).to_have_attribute("data-state", "decided")
    steps = page.locator("#ramp tr[data-step]")
    assert steps.count() == 2
    assert [steps.nth(i).get_attribute("data-share") for i in range(2)] == ["0.5", "1"]  # the challenger's share
    assert steps.nth(1).get_attribute("data-ended-by") == "promote"
    traffic_rows = page.locator("#traffic tr[data-arm]")
    requests = {traffic_rows.nth(i).get_attribute("data-arm"): traffic_rows.nth(i).get_attribute("data-requests")
                for i in range(traffic_rows.count())}
    assert requests == {"challenger": "600", "champion": "300"}, requests
    assert page.locator("#decisions tr[data-decision]").count() >= 3  # start, step, promote
    expect(page.locator("#ramp svg").first).to_be_visible()
    screenshot("canary")
