"""The run directory: layout, atomic writes and state derivation (the source of truth of a run)."""

from cl_hpc.atomic import read_json, write_json_atomic, write_text_atomic
from cl_hpc.rundir.layout import RunDir, new_run_id, resolve_run, runs_in
from cl_hpc.rundir.state import State, UnitStatus, root_cause, run_status, unit_status

__all__ = [
    "RunDir",
    "State",
    "UnitStatus",
    "new_run_id",
    "read_json",
    "resolve_run",
    "root_cause",
    "run_status",
    "runs_in",
    "unit_status",
    "write_json_atomic",
    "write_text_atomic",
]
