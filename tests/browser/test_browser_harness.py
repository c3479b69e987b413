"""The browser harness itself (tests/browser/conftest.py), on small pages written to tmp_path and
loaded by file:// URL, the way an HTML report is opened."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import REPO, PageRecord, artifacts_dir

if TYPE_CHECKING:  # without Playwright the tests skip (conftest.py), not fail to import
    from playwright.sync_api import Page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write(folder: Path, body: str, name: str = "page.html") -> str:
    path = folder / name
    path.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>t</title></head>'
                    f"<body>{body}</body></html>", encoding="utf-8")
    return path.as_uri()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first, always
    return width, height


def test_clean_page_passes_and_its_text_is_read(page: Page, page_record: PageRecord, tmp_path: Path) -> None:
    page.goto(_write(tmp_path, "<h1>Run 7 — 3 attempts</h1><table><tr><td id='state'>succeeded</td></tr></table>"))
    assert page.locator("h1").inner_text() == "Run 7 — 3 attempts"
    assert page.locator("#state").inner_text() == "succeeded"
    assert page.evaluate("[innerWidth, innerHeight]") == [1280, 800]
    assert page_record.problems() == []


@pytest.mark.allow_page_errors
def test_console_and_script_errors_are_recorded(page: Page, page_record: PageRecord, tmp_path: Path) -> None:
    page.goto(_write(tmp_path, "<script>console.error('chart data missing')</script>"
                               "<script>undefinedFunction()</script><p>after</p>"))
    assert page_record.console_errors == ["chart data missing"]
    assert len(page_record.page_errors) == 1 and "undefinedFunction" in page_record.page_errors[0]


@pytest.mark.allow_page_errors
def test_network_requests_are_blocked_and_recorded(page: Page, page_record: PageRecord, tmp_path: Path) -> None:
    # .invalid never resolves, so even a harness that let this through would send nothing anywhere.
    page.goto(_write(tmp_path, '<link rel="stylesheet" href="https://cdn.example.invalid/style.css">'
                               "<script>fetch('http://api.example.invalid/data.json')"
                               ".then(() => document.body.dataset.fetch = 'loaded')"
                               ".catch(() => document.body.dataset.fetch = 'failed')</script>"))
    page.wait_for_function("document.body.dataset.fetch !== undefined")
    assert page.evaluate("document.body.dataset.fetch") == "failed"
    assert page_record.blocked_requests == ["GET https://cdn.example.invalid/style.css",
                                            "GET http://api.example.invalid/data.json"]


def test_local_files_load(page: Page, tmp_path: Path) -> None:
    (tmp_path / "style.css").write_text("#box { width: 123px; }")
    page.goto(_write(tmp_path, '<link rel="stylesheet" href="style.css"><div id="box">x</div>'))
    assert page.evaluate("getComputedStyle(document.getElementById('box')).width") == "123px"


def test_screenshot_is_a_png_in_the_artifacts_folder(page: Page, screenshot: Callable[[str], Path],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page.goto(_write(tmp_path, "<h1>screenshot</h1><div style='height: 1500px'></div>"))
    saved = screenshot("tall page")
    assert saved.parent == artifacts_dir() / "screenshots"
    assert saved.name == "test_screenshot_is_a_png_in_the_artifacts_folder--tall_page.png"
    width, height = _png_size(saved)
    assert width == 1280 and height > 1500  # the whole page, not only the viewport

    monkeypatch.setenv("CL_HPC_ARTIFACTS", str(tmp_path / "elsewhere"))
    assert screenshot("moved").parent == tmp_path / "elsewhere" / "screenshots"


def test_print_media_applies_print_styles(page: Page, tmp_path: Path) -> None:
    page.goto(_write(tmp_path, "<style>body { color: rgb(200, 200, 200) }"
                               "@media print { nav { display: none } body { color: rgb(0, 0, 0) } }</style>"
                               "<nav>menu</nav><main>report</main>"))
    assert page.locator("nav").is_visible()
    page.emulate_media(media="print")
    assert page.evaluate("matchMedia('print').matches")
    assert not page.locator("nav").is_visible()
    assert page.evaluate("getComputedStyle(document.body).color") == "rgb(0, 0, 0)"
    assert page.pdf()[:5] == b"%PDF-"


@pytest.mark.usefixtures("browser")  # skips, as the others do, where there is no Chromium
def test_a_page_that_errs_fails_the_test_without_the_marker(tmp_path: Path) -> None:
    """The teardown check must fail a real test: run two in a child pytest, expect both to error."""
    (tmp_path / "test_child.py").write_text(
        "def test_console(page, tmp_path):\n"
        "    (tmp_path / 'a.html').write_text('<script>console.error(\"boom\")</script>')\n"
        "    page.goto((tmp_path / 'a.html').as_uri())\n"
        "def test_request(page, tmp_path):\n"
        "    (tmp_path / 'b.html').write_text('<img src=\"http://img.example.invalid/x.png\">')\n"
        "    page.goto((tmp_path / 'b.html').as_uri())\n")
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.browser.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, "-q", str(tmp_path / "test_child.py")],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "CI": ""})
    assert "2 passed, 2 errors" in child.stdout, child.stdout + child.stderr
    assert "console error: boom" in child.stdout
    assert "network request blocked: GET http://img.example.invalid/x.png" in child.stdout
