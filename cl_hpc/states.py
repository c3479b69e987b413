"""The project's one vocabulary of states, for every layer from the job to the store.

Only ``enum`` is imported (Python has loaded it before ``site`` finishes), so the job path may use
these instead of string literals at no cost. Both are ``str`` enums: a member equals its value,
and JSON writes it as that string, so run dirs written before them read the same.
"""

from __future__ import annotations

import enum


class TextEnum(str, enum.Enum):
    """A ``str`` whose text is its value in messages too: Python 3.11 formats a ``str`` enum member
    as ``State.COMPLETED`` (3.10 as ``COMPLETED``), and states go into errors, logs and tables."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class State(TextEnum):
    """A unit's state, derived from its attempts and its cancel record (cl_hpc/rundir/state.py)."""

    PENDING = "PENDING"  # waiting for its dependencies or for resources
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"  # the last attempt failed and another one is due
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # failed, no attempts left
    CANCELLED = "CANCELLED"  # never ran to the end because an upstream failed, or by request

    @property
    def terminal(self) -> bool:
        return self in (State.COMPLETED, State.FAILED, State.CANCELLED)


class AttemptState(TextEnum):
    """One attempt's record (``attempts/<n>.json``), written by the runner and the schedulers."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # its error says why: an exception, a time limit, a memory limit, a lost process
    PREEMPTED = "PREEMPTED"  # saved its state on a signal; the requeued job resumes this same attempt
    CANCELLED = "CANCELLED"  # stopped by request before it ended


class Limit(TextEnum):
    """The resource limit that ended an attempt. Its error starts with the name and a colon
    (``"TIMEOUT: stopped at its time limit..."``): the retry escalation and the right-sizer read it there."""

    TIMEOUT = "TIMEOUT"  # resources.time_min
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # resources.mem_gb

    def ended(self, error: str | None) -> bool:
        """Whether an attempt's ``error`` says this limit ended it."""
        return bool(error) and str(error).startswith(self.value)
