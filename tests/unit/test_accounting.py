"""sacct's accounting rows folded per job, when a row counts as complete, and the guard's wait for it.

The rows are real `sacct -n -P -o <accounting.FIELDS>` output of the local cluster (Slurm 22.05)."""

from __future__ import annotations

import time

from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm.accounting import FIELDS, STEP_GRACE_S, _complete, fold_sacct
from cl_hpc.execute.slurm.guard import wait_accounted
from cl_hpc.execute.slurm.parse import mem_mb_or_none, parse_sacct

ENDED = """6180|COMPLETED|2||00:02.729|2G|billing=1,cpu=1,mem=2G,node=1|billing=1,cpu=1,mem=2G,node=1||0:0
6180.batch|COMPLETED|2|331164K|00:02.729|||cpu=1,mem=2G,node=1|0|0:0
"""
# The same job a moment after its end: slurmdbd has the allocation's end, not yet its TRES or step.
HALF = """6180|COMPLETED|2||00:02.729|16?|||0|0:0
"""


def test_a_job_and_its_steps_fold_into_one_entry() -> None:
    (entry,) = fold_sacct(parse_sacct(ENDED, FIELDS)).values()
    assert entry["job_id"] == "6180" and entry["state"] == "COMPLETED" and entry["elapsed_s"] == 2.0
    assert entry["req_mem_mb"] == 2048 and entry["max_rss_mb"] == 331164 / 1024
    assert entry["total_cpu_s"] == 2.729 and "mem=2G" in entry["alloc_tres"]
    assert entry["energy_j"] is None  # 0 from acct_gather_energy/none: unknown, not zero joules


def test_the_extern_step_is_not_the_tasks_peak() -> None:
    early = ENDED.splitlines()[0] + "\n6180.extern|COMPLETED|2|880K|00:00:00|||billing=1,cpu=1,mem=2G,node=1|0|0:0\n"
    (entry,) = fold_sacct(parse_sacct(early, FIELDS)).values()
    assert entry["max_rss_mb"] is None  # not complete yet: the batch step has not reported
    (entry,) = fold_sacct(parse_sacct(early + ENDED.splitlines()[1] + "\n", FIELDS)).values()
    assert entry["max_rss_mb"] == 331164 / 1024


def test_a_half_written_row_is_not_complete_until_its_steps_report() -> None:
    now = time.time()
    profile = {"ended": now - 1}
    (half,) = fold_sacct(parse_sacct(HALF, FIELDS)).values()
    assert half["req_mem_mb"] is None and not _complete(half, profile, now)
    (whole,) = fold_sacct(parse_sacct(ENDED, FIELDS)).values()
    assert _complete(whole, profile, now)
    no_step = {**whole, "max_rss_mb": None}  # the allocation is whole, the step's MaxRSS not yet
    assert not _complete(no_step, profile, now)
    assert _complete(no_step, {"ended": now - STEP_GRACE_S - 1}, now)  # steps that never report
    assert not _complete({**whole, "state": "RUNNING"}, profile, now)


def test_odd_memory_values_are_unknown_not_errors() -> None:
    assert mem_mb_or_none("16?") is None and mem_mb_or_none("") is None
    assert mem_mb_or_none("331164", bare_unit="K") == 331164 / 1024 and mem_mb_or_none("1.5G") == 1536


def test_the_guard_waits_until_sacct_shows_every_job_ended() -> None:
    answers = iter([{"7_0": ("RUNNING", "0:0")},  # 7_1 not in accounting yet either
                    {"7_0": ("OUT_OF_MEMORY", "0:125"), "7_1": ("RUNNING", "0:0")},
                    {"7_0": ("OUT_OF_MEMORY", "0:125"), "7_1": ("COMPLETED", "0:0")}])
    asked: list[list[str]] = []

    def states(jobs: list[str]) -> dict[str, tuple[str, str]]:
        asked.append(jobs)
        return next(answers)

    assert wait_accounted(["7_0", "7_1"], timeout_s=30, poll_s=0.01, states=states)
    assert len(asked) == 3 and asked[0] == ["7_0", "7_1"]
    hiccup = iter([ExecutorError("sacct failed: slurmdbd busy"), {"9": ("TIMEOUT", "0:0")}])

    def flaky(jobs: list[str]) -> dict[str, tuple[str, str]]:
        answer = next(hiccup)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_accounted(["9"], timeout_s=30, poll_s=0.01, states=flaky)  # a failed sacct is asked again
    stuck = wait_accounted(["8"], timeout_s=0.05, poll_s=0.01, states=lambda jobs: {"8": ("RUNNING", "0:0")})
    assert stuck is False  # the guard then goes on with what sacct shows, and says so
