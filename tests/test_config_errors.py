"""Config mistakes a user makes on the command line: each error names the key, the type it takes
and where it is documented, and the schemas are never offered as choices (issue 10, defects 13, 16)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cl_hpc.config.compose import compose_config
from cl_hpc.errors import ConfigError
from tests.conftest import REPO, Launcher, _env

WHERE = "(where to look)"

CASES = [
    # (overrides, fragments the error must hold)
    (["pipeline.tasks.train.resources.cpus=two"],
     ["pipeline.tasks.train.resources.cpus=two", "'two'", "takes an integer", "CPU cores per process",
      "Resources.cpus in cl_hpc/config/resources.py"]),
    (["launch.dry_run=maybe"], ["launch.dry_run=maybe", "takes true or false", "LaunchConf.dry_run"]),
    (["cluster.cpus=1.5"], ["takes an integer or null", "LocalClusterConf.cpus in cl_hpc/config/schema.py"]),
    (["data.features=x1"],
     ["data.features=x1", "takes a list, e.g. [a,b]", "DataConf.features in cl_hpc/config/ml.py"]),
    # Hydra's struct mode refuses a new key; +model.hiddn=3 adds it and meets the class check (below)
    (["model.hiddn=3"], ["model.hiddn=3: model has no key 'hiddn'", "did you mean model.hidden?", "model holds:"]),
    (["pipeline.tasks.trian.resources.cpus=2"],
     ["pipeline.tasks has no key 'trian'", "did you mean pipeline.tasks.train?", "ingest, train, evaluate"]),
    (["runroot=x"], ["Config has no key 'runroot'", "did you mean run_root?"]),
]


@pytest.mark.parametrize("overrides,fragments", CASES, ids=[c[0][0] for c in CASES])
def test_a_bad_override_says_what_is_wrong_what_is_valid_and_where_to_look(overrides: list[str],
                                                                            fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        compose_config(overrides, WHERE)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert message.endswith(WHERE)
    assert "Error merging override" not in message  # Hydra's words, which name no type


def test_the_launcher_prints_it_and_submits_nothing(launcher: Launcher) -> None:
    result = launcher("pipeline.tasks.train.resources.cpus=two")
    assert result.proc.returncode == 2
    assert "takes an integer" in result.output and "Nothing was submitted" in result.output
    assert "Traceback" not in result.output and result.runs() == []


@pytest.mark.parametrize("override,fragments", [
    ("model._target_=nope.Missing", ["pipeline.tasks.train.params.model._target_=nope.Missing",
                                     "no module named 'nope'", "model takes a LightningModule class"]),
    ("+model.hiddn=3", ["pipeline.tasks.train.params.model.hiddn=3 (also in task evaluate): TabularClassifier.__init__ "
                        "takes (n_features, n_classes, hidden, layers", "did you mean hidden?"]),
], ids=["no module", "init argument"])
def test_the_workload_classes_are_checked_from_source_before_anything_is_submitted(
        launcher: Launcher, override: str, fragments: list[str]) -> None:
    result = launcher(override)
    assert result.proc.returncode == 2, result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in:\n{result.output}"
    assert "Nothing was submitted" in result.output and "Traceback" not in result.output and result.runs() == []


def test_help_offers_only_choosable_options_and_a_schema_is_not_one() -> None:
    help_text = subprocess.run([sys.executable, "-m", "cl_hpc.launch", "--help"], cwd=REPO, env=_env(),
                               capture_output=True, text=True, timeout=120, check=True).stdout
    section = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    groups = dict(line.split(": ", 1) for line in section.splitlines() if ": " in line)
    groups = {k: v for k, v in groups.items() if k in ("cluster", "data", "model", "pipeline", "experiment", "serve")}
    assert groups == {"cluster": "inprocess, local, slurm", "data": "hyperplane, sea, tokens, users",
                      "model": "gpt, gpt_h100, mlp", "pipeline": "continual, features, features_train, labels, retrain",
                      "experiment": "ab, bandit, canary, interleave, shadow", "serve": "default"}, help_text
    with pytest.raises(ConfigError, match="Could not find 'cluster/slurm_schema'"):
        compose_config(["cluster=slurm_schema"], WHERE)


def test_every_group_option_still_composes_typed() -> None:
    for option in ("local", "inprocess", "slurm"):
        cfg = compose_config([f"cluster={option}"], WHERE)
        assert cfg.cluster.mode == option
    with pytest.raises(ConfigError, match="takes true or false"):  # the slurm schema types its fields
        compose_config(["cluster=slurm", "cluster.check_limits=perhaps"], WHERE)
    with pytest.raises(ConfigError, match="has no key 'hiden'"):
        compose_config(["data=hyperplane", "model.hiden=3"], WHERE)
