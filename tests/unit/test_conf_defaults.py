"""conf/trigger and conf/drift spell out the defaults of dataclasses that the login-side schema
cannot import (they pull in scipy): keep the two in step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from cl_hpc.learn.drift import DriftConf
from cl_hpc.learn.triggers import TriggerConf

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_trigger_yaml_is_the_trigger_defaults() -> None:
    assert yaml.safe_load((CONF / "trigger" / "default.yaml").read_text()) == dataclasses.asdict(TriggerConf())


def test_drift_yaml_is_the_drift_defaults() -> None:
    assert yaml.safe_load((CONF / "drift" / "default.yaml").read_text()) == dataclasses.asdict(DriftConf())
