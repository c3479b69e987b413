"""Terminal views shared by launch (live progress) and status: rich tables over unit states."""

from __future__ import annotations

import time
from typing import Mapping, Sequence

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cl_hpc.dag.model import Plan
from cl_hpc.dag.render import format_resources
from cl_hpc.execute.base import Executor
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import State, UnitStatus, root_cause

STYLE = {
    State.PENDING: "dim", State.RUNNING: "cyan", State.RETRYING: "yellow",
    State.COMPLETED: "green", State.FAILED: "bold red", State.CANCELLED: "magenta",
}


def make_console() -> Console:
    """A terminal console, or a wide plain one for logs and pipes (no wrapping of log paths).

    Markup is off: every string it prints or puts in a table is text. Reasons, tags, task names,
    paths and errors come from users, and "per ticket [/ops/1234]" read as markup is a MarkupError
    that makes a view unreadable. Style goes through ``style=`` and ``Text``, never through markup.
    """
    console = Console(markup=False)
    return console if console.is_terminal else Console(width=200, soft_wrap=True, markup=False)


def status_table(run: RunDir, plan: Plan, statuses: Mapping[str, UnitStatus], with_logs: bool = True) -> Table:
    table = Table(title=f"run {run.run_id} · pipeline {plan.pipeline}", title_justify="left")
    for column in ("task", "state", "attempts", "duration", "progress", "resources"):
        table.add_column(column)
    if with_logs:
        table.add_column("log", overflow="fold")
    for key, st in statuses.items():
        row: list[str | Text] = [key, Text(st.state.value, style=STYLE[st.state]), str(len(st.attempts)),
                                 _duration(st), _progress(st), format_resources(plan.spec(key).resources)]
        if with_logs:
            row.append((st.last.get("log") if st.last else None) or "")
        table.add_row(*row)
    return table


def explain(statuses: Mapping[str, UnitStatus]) -> list[str]:
    """Plain lines naming the root cause of a failed run and where its log is."""
    cause = root_cause(statuses)
    if cause is None:
        return _cancellations(statuses)
    log = cause.last.get("log") if cause.last else None
    lines = [f"root cause: {cause.key} failed after {len(cause.attempts)} attempt(s): {cause.error}"]
    if log:
        lines.append(f"  log: {log}")
    cancelled = [k for k, s in statuses.items() if s.cancelled and s.cancelled.get("root_cause") == cause.key]
    if cancelled:
        lines.append(f"  cancelled because of it: {some(cancelled)}")
    return lines


SOME = 5  # keys named in a line; a fan-out of 1000 shards is "and 995 more", not 1000 keys


def some(keys: Sequence[str], n: int = SOME) -> str:
    """The first ``n`` keys, then how many more there are."""
    shown = ", ".join(keys[:n])
    return f"{shown} and {len(keys) - n} more" if len(keys) > n else shown


def _cancellations(statuses: Mapping[str, UnitStatus]) -> list[str]:
    """Why units were cancelled when no failed unit caused it (a request, a submission that
    failed midway): one line per reason."""
    by_reason: dict[str, list[str]] = {}
    for key, st in statuses.items():
        if st.state is State.CANCELLED and st.cancelled and not st.cancelled.get("root_cause"):
            by_reason.setdefault(str(st.cancelled.get("reason")), []).append(key)
    return [f"cancelled ({some(keys)}): {reason}" for reason, keys in by_reason.items()]


def headline(plan: Plan, statuses: Mapping[str, UnitStatus], run: RunDir) -> list[str]:
    """One line per completed final unit (one nothing depends on): its outputs that fit in a line,
    numbers and short strings (e.g. evaluate's accuracy beside its baseline), as outputs.json orders them."""
    needed = {d for unit in plan.units.values() for d in unit.deps}
    lines = []
    for key in plan.units:
        if key in needed or statuses[key].state is not State.COMPLETED:
            continue
        outputs = run.outputs(key)
        shown = [f"{name} {_short(value)}" for name, value in (outputs or {}).items() if _short(value)]
        if shown:
            lines.append(f"{key}: " + " · ".join(shown[:HEADLINE_VALUES]))
    return lines


HEADLINE_VALUES = 8  # a line, not a dump: outputs.json holds the rest
_SHORT_TEXT = 32  # longer strings are paths and digests, not results


def _short(value: object) -> str:
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and value and len(value) <= _SHORT_TEXT and "\n" not in value:
        return value
    return ""


def interrupted(run: RunDir) -> list[str]:
    """What a user who pressed Ctrl-C while following must know: the run goes on without them."""
    return [f"stopped following; run {run.run_id} goes on in the background ({run.path})",
            f"  follow it: python -m cl_hpc.status {run.run_id}",
            f"  cancel it: python -m cl_hpc.cancel {run.run_id}"]


def follow(run: RunDir, executor: Executor, console: Console) -> dict[str, UnitStatus]:
    """Show progress until every unit is final (or the backend reports a problem); returns the states.
    Ctrl-C raises KeyboardInterrupt out of here; the caller says the run goes on (``interrupted``)."""
    plan = run.load_plan()
    interval_s = executor.follow_interval_s
    if not console.is_terminal:
        return _follow_lines(run, executor, plan, console, interval_s)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            statuses = executor.status(run)
            live.update(status_table(run, plan, statuses, with_logs=False))
            if _finished(statuses) or executor.problems(run):
                return statuses
            time.sleep(interval_s)


def _follow_lines(run: RunDir, executor: Executor, plan: Plan, console: Console,
                  interval_s: float) -> dict[str, UnitStatus]:
    seen: dict[str, State] = {}
    while True:
        statuses = executor.status(run)
        for key, st in statuses.items():
            if seen.get(key) != st.state:
                seen[key] = st.state
                console.print(f"{time.strftime('%H:%M:%S')} {key:<24} {st.state.value}", highlight=False)
        if _finished(statuses) or executor.problems(run):
            return statuses
        time.sleep(interval_s)


def _finished(statuses: Mapping[str, UnitStatus]) -> bool:
    return all(s.state.terminal for s in statuses.values())


def _duration(st: UnitStatus) -> str:
    started = st.last.get("started") if st.last else None
    if started is None:
        return "-"
    end = (st.last.get("ended") if st.last else None) or time.time()
    return f"{end - float(started):.1f}s"


def _progress(st: UnitStatus) -> str:
    p = st.progress
    if not p or st.state is not State.RUNNING:
        return ""
    frac = f"{100 * p['done'] / p['total']:.0f}%" if p.get("total") else f"{p['done']:g}"
    return f"{frac} {p.get('note', '')}".strip()
