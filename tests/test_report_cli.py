"""``python -m cl_hpc.report`` as a user runs it: the report named first, ``html`` writing one self-contained
page and printing its path, and every bad input a clear error with exit 2, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, Launcher, _env


def report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.report", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120)


def test_html_writes_one_self_contained_page(launcher: Launcher, tmp_path: Path) -> None:
    done = launcher("pipeline=diamond")
    assert done.proc.returncode == 0, done.output
    written = report("html", "--run-root", str(launcher.run_root))
    assert written.returncode == 0, written.stderr
    path = Path(written.stdout.strip())
    assert path == done.run_dir() / "report.html"
    assert re.search(r"run \S+ \(COMPLETED\): 4 attempts; 0\.\d\d MB in \d+\.\d\d s", written.stderr), written.stderr
    page = path.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    # nothing to fetch: no script, no external stylesheet, font or image, no URL but the SVG namespace
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\s\"')]+", page)) <= {"http://www.w3.org/2000/svg",
                                                             "http://www.w3.org/1999/xlink"}
    elsewhere = tmp_path / "pages" / "diamond.html"
    moved = report("html", done.run_dir().name, "--run-root", str(launcher.run_root), "--out", str(elsewhere))
    assert moved.returncode == 0 and Path(moved.stdout.strip()) == elsewhere and elsewhere.is_file()


def test_bad_input_is_a_clear_error(launcher: Launcher, tmp_path: Path) -> None:
    none = report("html", "--run-root", str(tmp_path / "empty"))
    assert none.returncode == 2 and "no runs under" in none.stderr + none.stdout
    launcher("pipeline=diamond")
    unknown = report("html", "nosuchrun", "--run-root", str(launcher.run_root))
    assert unknown.returncode == 2 and "'nosuchrun' matches no run" in unknown.stderr + unknown.stdout
    bare = report()
    assert bare.returncode == 2 and "name the report first: efficiency | html" in bare.stderr
    bogus = report("pdf")
    assert bogus.returncode == 2 and "(got 'pdf')" in bogus.stderr
    helped = report("--help")
    assert helped.returncode == 0 and "python -m cl_hpc.report html [RUN]" in helped.stdout
    for proc in (none, unknown, bare, bogus):
        assert "Traceback" not in proc.stderr, proc.stderr
