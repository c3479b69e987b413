"""The resources an escalated retry is told it runs under: the Slurm job's ``--resources=`` from the
retry guard's command line to UnitCall.run_under, and what run_under refuses."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from cl_hpc.dag.build import build_plan
from cl_hpc.dag.unit_call import UnitCall
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm.job import resources_option
from cl_hpc.execute.slurm.submit import job_command

OOM = Path(__file__).resolve().parents[1] / "conf" / "pipeline" / "oom.yaml"


def _call() -> tuple[UnitCall, dict]:
    plan = build_plan(yaml.safe_load(OOM.read_text()), None, workdir="/launch/dir")
    data = json.loads(json.dumps(plan.to_dict()))  # exactly what a job reads from plan.json
    return UnitCall(data, "hog"), data


def test_the_escalated_resources_travel_from_the_command_line_to_the_unit() -> None:
    call, data = _call()
    planned = dict(call.resources)
    assert planned["mem_gb"] == 0.25
    escalated = replace(build_plan(yaml.safe_load(OOM.read_text()), None).tasks["hog"].resources,
                        mem_gb=0.6, time_min=10, partition="long", extra={"comment": "a 'quoted' value, with commas"})
    command = job_command("/venv/bin/python", "/runs/r1", "hog", 0, {None: 2}, json.dumps(asdict(escalated)))
    words = shlex.split(command)  # as the sbatch script's shell splits it
    assert words[:8] == ["/venv/bin/python", "-u", "-m", "cl_hpc.execute.slurm.job", "/runs/r1", "hog", "0", "2"]
    call.run_under(resources_option(words[8:]))  # type: ignore[arg-type]
    assert call.resources == {**planned, "mem_gb": 0.6, "time_min": 10, "partition": "long",
                              "extra": {"comment": "a 'quoted' value, with commas"}}
    # A first submission carries no option: its job runs under the plan's resources.
    assert "--resources" not in job_command(None, "/runs/r1", "hog", 0, {None: 1})
    assert resources_option([]) is None
    partial = UnitCall(data, "hog")
    partial.run_under('{"time_min": 20}')  # a field left out keeps the plan's value
    assert partial.resources == {**planned, "time_min": 20}


@pytest.mark.parametrize(("given", "why"), [
    ("{mem_gb: 1}", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"mem": 1}', "unknown field(s) 'mem'"),
    ('{"mem_gb": 0}', "mem_gb=0 is not a positive number"),
    ('{"time_min": "10"}', "time_min='10' is not a positive number"),
    ('{"cpus": true}', "cpus=True is not a positive number"),
    ('{"gpus": -1}', "gpus=-1 is not a positive number"),
])
def test_malformed_resources_are_refused_naming_the_option(given: str, why: str) -> None:
    call, _ = _call()
    planned = dict(call.resources)
    with pytest.raises(ExecutorError) as err:
        call.run_under(given)
    message = str(err.value)
    assert why in message and "--resources" in message and "cl_hpc/config/resources.py" in message, message
    assert call.resources == planned


def test_the_job_entry_refuses_an_unknown_option() -> None:
    with pytest.raises(ValueError, match="the only option is --resources=JSON"):
        resources_option(["--mem=3"])
    with pytest.raises(ValueError, match="unexpected argument"):
        resources_option(["--resources={}", "extra"])
