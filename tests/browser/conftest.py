"""The browser tier: pages checked in a real headless Chromium, driven by Playwright.

Playwright drives the system Chromium (`CL_HPC_CHROMIUM`, else /usr/bin/chromium, installed by
scripts/chromium-install.sh) because its own browser download cannot be fetched where only package
registries are reachable. Every test here is marked `browser`; without Playwright or Chromium it
skips, and under CI=true the skip fails the run (tests/conftest.py).

The `page` fixture holds a page to the rules of a self-contained report: no console error, no
uncaught script error, no network request (anything not file: or data: is aborted). Any of these
fails the test at teardown, unless the test is marked `allow_page_errors` (a page that is meant
to err) and asserts `page_record` itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, WebSocketRoute

_HERE = Path(__file__).resolve().parent
REPO = _HERE.parents[1]
INSTALL_HINT = "install it with: sudo bash scripts/chromium-install.sh (or set CL_HPC_CHROMIUM to a Chromium binary)"
# Each keeps Chromium from calling home at start-up: this machine's closed network refuses those
# connections, and a report test must see no traffic but the page's own. --no-sandbox: CI runs as
# root, where Chromium's sandbox refuses to start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
_LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/browser as `browser`, even if a file forgets."""
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


def chromium_path() -> Path:
    return Path(os.environ.get("CL_HPC_CHROMIUM") or "/usr/bin/chromium")


def artifacts_dir() -> Path:
    """Where CI picks up what the tests leave: `CL_HPC_ARTIFACTS`, else test-artifacts/ (gitignored)."""
    return Path(os.environ.get("CL_HPC_ARTIFACTS") or REPO / "test-artifacts")


@dataclass
class PageRecord:
    """What a page did that a self-contained report must not do."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return ([f"console error: {m}" for m in self.console_errors]
                + [f"uncaught script error: {m}" for m in self.page_errors]
                + [f"network request blocked: {u}" for u in self.blocked_requests])


# Package scope, not session: Playwright's sync API keeps an event loop running in the main thread and its
# driver and Chromium as child processes; both must be gone before the rest of the suite (asyncio.run() in
# the server tests, the profiler's child-process counts).
@pytest.fixture(scope="package")
def playwright_session() -> Iterator[Playwright]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: bash scripts/install.sh .venv test")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    exe = chromium_path()
    if not os.access(exe, os.X_OK):
        pytest.skip(f"no Chromium at {exe}; {INSTALL_HINT}")
    # Playwright gives each launch a fresh temporary profile (--user-data-dir) and removes it on close.
    launched = playwright_session.chromium.launch(executable_path=str(exe), headless=True, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def page_record() -> PageRecord:
    return PageRecord()


@pytest.fixture
def page(browser: Browser, page_record: PageRecord, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh 1280x800 page in its own context, watched for errors and cut off from the network."""
    context = browser.new_context(viewport=VIEWPORT, service_workers="block")
    context.route("**/*", lambda route: _local_only(route, page_record))
    context.route_web_socket("**/*", lambda ws: _no_socket(ws, page_record))
    opened = context.new_page()
    opened.set_default_timeout(10_000)  # a missing element fails in seconds, not after Playwright's 30 s
    opened.on("console", lambda msg: _console(msg, page_record))
    opened.on("pageerror", lambda exc: page_record.page_errors.append(str(exc)))
    yield opened
    if not opened.is_closed():
        opened.evaluate("0")  # a round trip, so events the page sent last reach the record
    context.close()
    problems = page_record.problems()
    if problems and not request.node.get_closest_marker("allow_page_errors"):
        pytest.fail("the page broke the rules of a self-contained report:\n  " + "\n  ".join(problems)
                    + "\n(mark the test allow_page_errors if this page is meant to err)", pytrace=False)


def _local_only(route: Route, record: PageRecord) -> None:
    request = route.request
    if request.url.startswith(_LOCAL_SCHEMES):
        route.continue_()
    else:
        record.blocked_requests.append(f"{request.method} {request.url}")
        route.abort("blockedbyclient")


def _no_socket(socket: WebSocketRoute, record: PageRecord) -> None:
    record.blocked_requests.append(f"WEBSOCKET {socket.url}")
    socket.close(code=1008, reason="a self-contained report opens no connection")  # 1008: policy violation


def _console(message: ConsoleMessage, record: PageRecord) -> None:
    if message.type == "error":
        record.console_errors.append(message.text)


@pytest.fixture
def screenshot(page: Page, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """`screenshot(name)` saves the whole page as <artifacts>/screenshots/<test>--<name>.png and returns the path."""

    def take(name: str) -> Path:
        stem = _safe(f"{request.node.name}--{name}")
        path = artifacts_dir() / "screenshots" / f"{stem}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
