"""The model page in a real browser: a real registry (versions 1.0 .. 3.0 with fine-tunes, a rejected one,
a rollback, a quarantined checkpoint: tests/test_report_model_page.py builds it), the real watch's log and a
real backtest, written by ``python -m cl_hpc.report html --model`` as a user runs it and loaded from its file
URL (the ``page`` fixture fails on any console error, script error or network request)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import REPO, _env
from tests.test_report_model_page import NAME, Watch, build_registry, tiny_backtest


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("model-page-browser")
    store = tmp / "registry"
    build_registry(store, tmp)
    watch = Watch(tmp)
    assert watch("--model", NAME, "pipeline=diamond").returncode == 0
    done = subprocess.run([sys.executable, "-m", "cl_hpc.report", "html", "--model", NAME, "--store-root", str(store),
                           "--run-root", str(watch.run_root), "--backtest", str(tiny_backtest(tmp))],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    path = Path(done.stdout.strip())
    assert path == store / "reports" / f"model-{NAME}.html"
    return path


def test_the_model_page(written: Path, page: Page, screenshot: Callable[[str], Path]) -> None:
    page.goto(written.as_uri())
    for section in ("#lineage", "#aliases", "#metrics", "#triggers", "#freshness"):
        expect(page.locator(section)).to_be_visible()
    lineage = page.locator("#lineage")
    assert lineage.locator("g.version").count() == 6  # 1.0 1.1 1.2 2.0 2.1 3.0 (another model's 1.0 is not here)
    assert lineage.locator('g.version[data-version="1.1"]').get_attribute("data-strategy") == "stateful"
    assert lineage.locator('g.version[data-version="1.1"]').get_attribute("data-parent") == "1.0"
    assert "rejected" in (lineage.locator('g.version[data-version="1.2"]').get_attribute("data-tags") or "")
    rollback = page.locator('#aliases tr[data-event][data-action="rollback"]')
    expect(rollback).to_contain_text("accuracy dropped in production")  # the rollback, with its reason
    expect(page.locator('#aliases tr[data-event][data-alias="champion"][data-version="2.0"]')).to_contain_text(
        "0.88 >= 0.84")
    expect(page.locator('#metrics tr[data-version="2.0"] td[data-metric="accuracy"]')).to_have_text("0.88")
    expect(page.locator("#triggers")).to_contain_text("time")
    expect(page.locator("#freshness svg").first).to_be_visible()
    screenshot("model-page")
