"""`python -m cl_hpc.registry` end to end: real subprocesses on a real SQLite store with real checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cl_hpc.registry import ModelRegistry
from tests.conftest import REPO, _env
from tests.unit.test_registry import MLP, TABULAR, corrupt, make_checkpoint, make_workload


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.registry", "--store-root", str(store), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60, env=_env())


def _ok(store: Path, *args: str) -> str:
    proc = _cli(store, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """retrain 1.0 -> 1.1 (fine-tuned on a later window) and 2.0 (retrained, bigger)."""
    root = tmp_path / "store"
    specs = [("stateless", None, 32, ["p1", "p2"], 0.80), ("stateful", "1.0", 32, ["p2", "p3"], 0.83),
             ("stateless", "1.1", 64, ["p2", "p3"], 0.86)]
    with ModelRegistry.open(root) as reg:
        for seed, (strategy, parent, hidden, window, acc) in enumerate(specs):
            path = tmp_path / f"run{seed}" / "model.pt"
            sha = make_checkpoint(path, seed, hidden)
            workload = make_workload(seed, hidden)
            reg.register("retrain", path, strategy=strategy, parent=parent, checkpoint_sha256=sha, workdir=REPO,
                         config={"model": {"_target_": MLP, "hidden": hidden, "lr": 0.01},
                                 "datamodule": {"_target_": TABULAR, "features": ["a", "b", "c"]},
                                 "fit": {"max_epochs": 8}},
                         window_partitions=window, window_digest="-".join(window), metrics={"accuracy": acc},
                         run_id=f"run{seed}", task_key="train", model_class=MLP,
                         init_args=workload.model_target.args, datamodule_class=TABULAR,
                         signature=workload.signature.to_dict())
    return root


def test_promote_rollback_history_and_show(store: Path) -> None:
    assert "champion: promote (new) -> 1.0" in _ok(store, "promote", "1.0", "--reason", "first model")
    _ok(store, "promote", "1.1", "--reason", "fine-tuned on p3")
    assert "already points at 1.1; nothing changed" in _ok(store, "promote", "1.1", "--reason", "again")
    assert "rollback 1.1 -> 1.0" in _ok(store, "rollback", "--reason", "accuracy dropped")
    history = json.loads(_ok(store, "history", "--json"))
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == \
        [("promote", None, "1.0"), ("promote", "1.0", "1.1"), ("rollback", "1.1", "1.0")]
    shown = json.loads(_ok(store, "show", "champion", "--json"))
    assert shown["version"] == "1.0" and shown["aliases"] == ["champion"] and shown["run_id"] == "run0"
    table = _ok(store, "show", "1.1")
    assert "fine-tuned on p3" in table and "config model.hidden" in table and "package torch" in table
    assert MLP in table and TABULAR in table and "hidden=32" in table and "n_features=3" in table
    assert "a: float64" in table and "probs: float32[2]" in table  # the signature's inputs and outputs
    _ok(store, "promote", "2.0", "--alias", "challenger", "--reason", "shadow")
    _ok(store, "rollback", "--to", "1.1", "--reason", "explicit")
    assert "rollback-to" in _ok(store, "history", "--alias", "champion")


def test_list_tag_and_diff(store: Path) -> None:
    _ok(store, "promote", "1.1", "--reason", "r")
    assert "retrain 1.1 tags: nightly, eu" in _ok(store, "tag", "1.1", "nightly", "eu", "--name", "retrain")
    listing = json.loads(_ok(store, "list", "--json"))["retrain"]
    assert listing["aliases"] == {"champion": "1.1"}
    assert [(v["version"], v["parent"], v["tags"]) for v in listing["versions"]] == \
        [("1.0", None, []), ("1.1", "1.0", ["nightly", "eu"]), ("2.0", "1.1", [])]
    table = _ok(store, "list")
    assert "champion" in table and "accuracy=0.83" in table and "nightly" in table
    diff = json.loads(_ok(store, "diff", "champion", "2.0", "--json"))
    assert {"key": "model.hidden", "old": 32, "new": 64, "change": "changed"} in diff["config"]
    assert {"key": "init_args.hidden", "old": 32, "new": 64, "change": "changed"} in diff["model"], diff["model"]
    (accuracy,) = diff["metrics"]
    assert accuracy["delta"] == pytest.approx(0.03)
    assert diff["window"]["same_data"] and diff["window"]["partitions_added"] == []
    assert [c["key"] for c in diff["lineage"]] == ["checkpoint_sha256", "parent", "run_id", "strategy"]
    assert diff["code"] == [] and diff["deps"] == []
    text = _ok(store, "diff", "1.0", "2.0")
    assert "model.hidden: 32 -> 64" in text and "accuracy: 0.8 -> 0.86  (+0.06)" in text
    assert "added: p3" in text and "removed: p1" in text


def test_errors_name_what_exists_and_exit_2(store: Path, tmp_path: Path) -> None:
    cases = [
        (("show", "9.9"), "model 'retrain' has no version '9.9'; versions: 1.0, 1.1, 2.0; aliases: none"),
        (("show", "canary"), "no version or alias 'canary'"),
        (("show", "1.0", "--name", "other"), "no model named 'other' in"),
        (("list", "--name", "other"), "models: retrain"),
        (("rollback", "--reason", "x"), "alias 'champion' of model 'retrain' was never set"),
        (("promote", "1.x", "--reason", "x"), "no version or alias '1.x'"),
        (("diff", "1.0", "3.0"), "has no version '3.0'"),
    ]
    for args, message in cases:
        proc = _cli(store, *args)
        assert (proc.returncode, message in proc.stderr) == (2, True), (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    missing = _cli(tmp_path / "nowhere", "list")
    assert missing.returncode == 2 and "no store at" in missing.stderr
    assert _cli(store, "promote", "1.0").returncode == 2  # --reason is required


def test_a_corrupted_checkpoint_cannot_be_promoted_from_the_cli(store: Path) -> None:
    path = Path(json.loads(_ok(store, "show", "2.0", "--json"))["checkpoint_path"])
    corrupt(path)
    first = _cli(store, "promote", "2.0", "--reason", "ship it")
    assert first.returncode == 2 and "now marked unpromotable" in first.stderr and str(path) in first.stderr
    again = _cli(store, "promote", "2.0", "--reason", "ship it")
    assert again.returncode == 2 and "quarantined and can never be promoted" in again.stderr
    assert "quarantined" in _ok(store, "list")


def test_several_models_need_name(store: Path, tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    make_checkpoint(path, 42)
    with ModelRegistry.open(store) as reg:
        reg.register("fraud", path, strategy="stateless", workdir=tmp_path)
    proc = _cli(store, "show", "1.0")
    assert proc.returncode == 2 and "2 models are registered (fraud, retrain): pass --name" in proc.stderr
    assert json.loads(_ok(store, "--name", "fraud", "show", "1.0", "--json"))["git_commit"] is None
    assert set(json.loads(_ok(store, "list", "--json"))) == {"fraud", "retrain"}
