"""A challenger of another signature (here: another feature set), allowed by config, is promoted end
to end (in-process): the gate judges it against the baseline, and promote moves champion from the version it pointed
at when the gate ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Launcher
from tests.e2e.test_continual_loop import _registry, _run

pytestmark = pytest.mark.e2e


def test_a_challenger_of_another_feature_set_allowed_by_config_is_promoted(launcher: Launcher, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    first = _run(launcher, landing, 16, "data.features=[x0,x1]")
    assert first["promote"]["version"] == "1.0" and first["promote"]["promoted"]
    second = _run(launcher, landing, 16, "pipeline.tasks.compare.params.allow_signature_change=true")
    assert second["compare"]["passed"], second["compare"]["reasons"]
    assert second["compare"]["reasons"][0].startswith("not comparable: champion 1.0's signature differs")
    assert second["compare"]["champion"] == "1.0" and second["compare"]["scored_against"] is None
    assert second["promote"]["version"] == "2.0" and second["promote"]["promoted"], second["promote"]["reasons"]
    listing = _registry(launcher, "--name", "continual", "list")["continual"]
    assert listing["aliases"]["champion"] == "2.0"
