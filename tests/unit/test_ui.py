"""What status and a follow print about a failed or cancelled run (cl_hpc/ui.py), on real unit
statuses: a wide fan-out's keys are capped, never one line of a thousand keys."""

from __future__ import annotations

from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.rundir.state import UnitStatus
from cl_hpc.states import AttemptState, State
from cl_hpc.ui import explain

SHARDS = [f"train[{i}]" for i in range(1000)]


def _cancelled(key: str, reason: str, root: str | None = None) -> UnitStatus:
    return UnitStatus(key, State.CANCELLED, (), {"reason": reason, "root_cause": root}, None)


def test_a_thousand_cancelled_units_are_named_five_and_a_count() -> None:
    statuses = {k: _cancelled(k, "cancelled by request") for k in SHARDS}
    (line,) = explain(statuses)
    assert line == "cancelled (train[0], train[1], train[2], train[3], train[4] and 995 more): cancelled by request"


def test_the_units_cancelled_because_of_a_root_cause_are_capped_too() -> None:
    failed: AttemptRecord = {"attempt": 1, "state": AttemptState.FAILED, "error": "RuntimeError: boom"}
    statuses = {"prep": UnitStatus("prep", State.FAILED, (failed,), None, None),
                **{k: _cancelled(k, "prep failed", root="prep") for k in SHARDS}}
    lines = explain(statuses)
    assert lines[0] == "root cause: prep failed after 1 attempt(s): RuntimeError: boom"
    assert lines[-1] == "  cancelled because of it: train[0], train[1], train[2], train[3], train[4] and 995 more"


def test_a_few_units_are_all_named() -> None:
    statuses = {k: _cancelled(k, "cancelled by request") for k in ("a", "b", "c", "d", "e")}
    assert explain(statuses) == ["cancelled (a, b, c, d, e): cancelled by request"]
