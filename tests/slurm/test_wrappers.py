"""The cluster-side wrappers in slurm/: the launcher batch script and the scrontab example.

slurm/launch.sbatch is checked by the real sbatch of the local cluster (`--test-only`, then real
jobs: one with a stub interpreter that records what the launcher would get, one that runs a real
pipeline with the in-process backend). slurm/scrontab.example is parsed by the rules of Slurm's
own scrontab parser (src/scrontab/parse.c) and each entry's #SCRON options are checked by
`sbatch --test-only`: Debian's Slurm 22.05 packages ship no scrontab binary. Where scrontab exists
and ScronParameters=enable, the example is also installed for real and the crontab restored.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

_REPO = Path(__file__).resolve().parents[2]
_LAUNCH = _REPO / "slurm" / "launch.sbatch"
_JOB_TIMEOUT_S = 120


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=cwd, env=env)


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that steers the wrapper, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CL_HPC_", "SBATCH_", "SLURM_JOB", "VIRTUAL_ENV"))}
    return {**env, **extra}


# ---- slurm/launch.sbatch -------------------------------------------------------------------------


def test_launch_script_is_valid_bash() -> None:
    proc = _run("bash", "-n", _LAUNCH)
    assert proc.returncode == 0, proc.stderr


def test_launch_script_is_accepted_by_sbatch() -> None:
    proc = _run("sbatch", "--test-only", _LAUNCH, "model.hidden=128", cwd=_REPO)
    assert proc.returncode == 0, proc.stderr
    assert "to start at" in proc.stderr


def test_site_settings_are_valid_directives_once_enabled(tmp_path: Path) -> None:
    """Un-commenting the marked ##SBATCH lines (with values this cluster knows) keeps it valid."""
    values = {"account": "default", "partition": "debug", "qos": "normal"}
    text = _LAUNCH.read_text()
    for key, value in values.items():
        line = f"##SBATCH --{key}=CHANGE_ME"
        assert line in text, f"launch.sbatch lost its marked {key} line"
        text = text.replace(line, f"#SBATCH --{key}={value}")
    script = tmp_path / "launch.sbatch"
    script.write_text(text)
    proc = _run("sbatch", "--test-only", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "in partition debug" in proc.stderr


def _stub_python(tmp_path: Path) -> Path:
    """An 'interpreter' that records its arguments, directory and environment, then exits."""
    stub = tmp_path / "python-stub"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > args.txt\npwd > pwd.txt\nenv > env.txt\n')
    stub.chmod(0o755)
    return stub


def test_launch_script_adds_defaults_keeps_overrides_and_drops_job_variables(tmp_path: Path) -> None:
    env = _clean_env(CL_HPC_PYTHON=str(_stub_python(tmp_path)))
    proc = _run("sbatch", "--wait", "--parsable", f"--output={tmp_path}/%j.out", _LAUNCH,
                "pipeline=retrain", "model.hidden=128", "launch.follow=true",
                cwd=tmp_path, env=env, timeout=_JOB_TIMEOUT_S)
    assert proc.returncode == 0, f"{proc.stderr}\n{_read_logs(tmp_path)}"
    job_id = proc.stdout.strip().split(";")[0]
    args = (tmp_path / "args.txt").read_text().splitlines()
    # The wrapper's defaults first, so that the caller's launch.follow=true (last) wins in Hydra.
    assert args == ["-m", "cl_hpc.launch", "cluster=slurm", "launch.follow=false",
                    "pipeline=retrain", "model.hidden=128", "launch.follow=true"]
    assert (tmp_path / "pwd.txt").read_text().strip() == str(tmp_path)  # the submit directory
    job_env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines()
                   if "=" in line)
    leaked = sorted(k for k in job_env if k.startswith("SLURM_") and k != "SLURM_CONF")
    assert leaked == [], "the pipeline's jobs would inherit these"
    assert job_env["CL_HPC_LAUNCHER_JOB_ID"] == job_id


def test_launch_script_runs_the_launcher_in_the_project_dir(tmp_path: Path) -> None:
    """A real launch through the wrapper; the in-process backend keeps it inside this one job."""
    run_id = "wrapper-test"
    env = _clean_env(CL_HPC_PYTHON=sys.executable, CL_HPC_PROJECT_DIR=str(_REPO))
    proc = _run("sbatch", "--wait", f"--output={tmp_path}/%j.out", _LAUNCH,
                "cluster=inprocess", "pipeline=fanout", f"hydra.searchpath=[file://{_REPO}/tests/conf]",
                f"run_root={tmp_path}/runs", f"store.root={tmp_path}/store", f"launch.run_id={run_id}",
                cwd=tmp_path, env=env, timeout=_JOB_TIMEOUT_S)
    assert proc.returncode == 0, f"{proc.stderr}\n{_read_logs(tmp_path)}"
    status = _run(sys.executable, "-m", "cl_hpc.status", run_id, "--run-root", tmp_path / "runs",
                  "--json", cwd=_REPO)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "COMPLETED"
    assert f"project: {_REPO}" in _read_logs(tmp_path)


def _read_logs(folder: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(folder.glob("*.out")))


# ---- slurm/scrontab.example ----------------------------------------------------------------------

# Allowed values per field of a cron time spec, as Slurm's scrontab reads them.
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))
_NAMES = {3: ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
          4: ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
_SHORTCUTS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_RANGE = re.compile(r"^(\*|\d+(-\d+)?(,\d+(-\d+)?)*)(/(\d+))?$")


@dataclass
class CronEntry:
    spec: str  # the time spec: five fields or an @shortcut
    command: str
    options: list[str] = field(default_factory=list)  # the #SCRON words before it


def cron_spec_problem(fields: list[str]) -> str | None:
    """What is wrong with five cron fields, or None (the grammar of Slurm's parse.c)."""
    for index, (value, (name, low, high)) in enumerate(zip(fields, _FIELDS)):
        if value.lower()[:3] in _NAMES.get(index, ()) and len(value) == 3:
            continue
        match = _RANGE.match(value)
        if not match:
            return f"{name} {value!r} is not *, a list of numbers/ranges, or a name"
        numbers = [int(n) for n in re.findall(r"\d+", match[1])]
        if any(not low <= n <= high for n in numbers):
            return f"{name} {value!r} is outside {low}-{high}"
        if match[6] is not None and not 1 < int(match[6]) <= high:
            return f"{name} step /{match[6]} must be 2..{high} (Slurm rejects /1)"
    return None


def parse_scrontab(text: str) -> tuple[list[CronEntry], list[str]]:
    """(entries, problems): comments, blank lines, #SCRON option lines and time-spec lines."""
    entries: list[CronEntry] = []
    problems: list[str] = []
    options: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#SCRON"):
            options.extend(line[len("#SCRON"):].split())  # split on blanks: no quoting in scrontab
            continue
        if not line or line.startswith("#"):
            continue
        words = line.split()
        n_spec = 1 if words[0].startswith("@") else 5
        spec, command = words[:n_spec], " ".join(words[n_spec:])
        problem = (None if spec[0] in _SHORTCUTS else f"unknown shortcut {spec[0]!r}") if n_spec == 1 \
            else cron_spec_problem(spec) if len(spec) == 5 else "fewer than five time fields"
        if problem or not command:
            problems.append(f"line {number}: {problem or 'no command'}: {raw!r}")
        entries.append(CronEntry(" ".join(spec), command, options))
        options = []  # options belong to one entry only
    if options:
        problems.append(f"#SCRON options {options} are followed by no entry")
    return entries, problems


@pytest.mark.parametrize("line, ok", [
    ("30 2 * * * run", True),
    ("@daily run", True),
    ("1-5,30 8-17/2 * * wed run", True),
    ("0 0 1 jan * run", True),
    ("*/15 * * * * run", True),
    ("*/1 * * * * run", False),  # Slurm's parser rejects a step of 1
    ("60 * * * * run", False),
    ("0 24 * * * run", False),
    ("0 0 0 * * run", False),
    ("* * * * run", False),
    ("@fortnightly run", False),
    ("30 2 * * *", False),  # no command
])
def test_cron_parser_follows_slurms_rules(line: str, ok: bool) -> None:
    entries, problems = parse_scrontab(line)
    assert (not problems) == ok, problems
    assert len(entries) == 1


def _check_with_sbatch(entry: CronEntry) -> None:
    proc = _run("sbatch", "--test-only", *entry.options, f"--wrap={entry.command}", cwd=_REPO)
    assert proc.returncode == 0, f"sbatch rejects the options of {entry.spec} {entry.command}: {proc.stderr}"
