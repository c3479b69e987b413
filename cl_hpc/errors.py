"""The project's small exception hierarchy.

Every error a user can cause derives from ClHpcError and carries a message that says what was
wrong, what is valid and where to look. Entry points print the message (no traceback) and exit 2.
"""

from __future__ import annotations


class ClHpcError(Exception):
    """Base of every error cl_hpc raises on purpose."""


class ConfigError(ClHpcError):
    """The composed configuration is invalid (bad value, unknown key, wrong type)."""


class DagError(ClHpcError):
    """The pipeline does not form a valid DAG (cycle, unknown dependency, bad target, bad fan-out)."""


class ResourceError(DagError):
    """A task asks for resources the cluster can never give it."""


class ExecutorError(ClHpcError):
    """A backend could not submit, query or cancel."""


class RunNotFoundError(ClHpcError):
    """No run directory matches the requested run id."""


class StoreError(ClHpcError):
    """The SQLite store could not be read or written."""


class DataError(ClHpcError):
    """Input data is missing or malformed (names the file and the column)."""


class ChecksumError(DataError):
    """A file's sha256 differs from the one recorded when it was made (names the file and both digests)."""


class TaskFailedError(ClHpcError):
    """A task raised; carries the task key and the path of its log."""
