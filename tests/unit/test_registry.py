"""The model registry: version arithmetic, lineage, the alias log and rollback, checksum refusal,
and concurrent registration from real processes, on real SQLite files and real torch checkpoints."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path
from typing import Any, Optional

import pytest

from cl_hpc.errors import ChecksumError, DataError
from cl_hpc.registry import ModelRegistry, RegistryError, Version, parse_version
from cl_hpc.registry.records import AliasEvent, rollback_target
from cl_hpc.registry.versions import (
    check_alias,
    check_name,
    next_stateful,
    next_stateless,
    sort_versions,
    strategy_kind,
)

REPO = Path(__file__).resolve().parents[2]
V = parse_version


MLP = "cl_hpc.learn.tabular.TabularClassifier"
TABULAR = "cl_hpc.learn.tabular.TabularData"


def make_workload(seed: int = 0, hidden: int = 8, model_class: Optional[str] = None) -> Any:
    """A tiny real tabular workload (TabularClassifier + TabularData fitted on 20 rows of a, b, c).
    Torch is imported here, not at module level, so spawned registry workers start fast."""
    import numpy as np
    import pandas as pd
    import torch

    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.workload import Workload, data_from, model_for

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=20), "b": rng.normal(size=20), "c": rng.normal(size=20),
                          "y": [0, 1] * 10})
    data_target = Target(TABULAR, {"label_col": "y", "features": ["a", "b", "c"]})
    data = data_from(data_target)
    data.fit_state(frame)
    torch.manual_seed(seed)
    model, built = model_for(Target(model_class or MLP, {"hidden": hidden, "layers": 1, "dropout": 0.0}), data)
    return Workload(model, data, built, data_target)


def make_checkpoint(path: Path, seed: int = 0, hidden: int = 8, model_class: Optional[str] = None) -> str:
    """A tiny real checkpoint written with the project's save_workload; returns its sha256."""
    from cl_hpc.learn.checkpoint import save_workload

    return save_workload(path, make_workload(seed, hidden, model_class), {"window_digest": f"w{seed}"})


# ---- version arithmetic ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("1.0", Version(1, 0)), ("3.12", Version(3, 12)),
                                            (" 10.0 ", Version(10, 0)), ("2.007", Version(2, 7))])
def test_parse_version(text: str, expected: Version) -> None:
    assert parse_version(text) == expected and str(parse_version(text)) == f"{expected.major}.{expected.minor}"


@pytest.mark.parametrize("text", ["1", "1.2.3", "v1.2", "0.3", "-1.0", "1.x", "", "champion"])
def test_parse_version_refuses_what_is_not_x_dot_y(text: str) -> None:
    with pytest.raises(RegistryError, match="is not a model version: expected X.Y"):
        parse_version(text)


def test_versions_order_numerically_not_as_text() -> None:
    assert [str(v) for v in sort_versions(map(V, ["1.10", "2.0", "1.9", "1.0", "10.0", "1.2"]))] == \
        ["1.0", "1.2", "1.9", "1.10", "2.0", "10.0"]


@pytest.mark.parametrize("existing, expected", [([], "1.0"), (["1.0", "1.1"], "2.0"),
                                                (["1.0", "3.2", "2.0"], "4.0"), (["9.0", "10.4"], "11.0")])
def test_next_stateless(existing: list[str], expected: str) -> None:
    assert str(next_stateless(map(V, existing))) == expected


@pytest.mark.parametrize("parent, existing, expected", [("1.0", ["1.0"], "1.1"), ("1.2", ["1.0", "1.1", "1.2"], "1.3"),
                                                        ("2.9", ["1.0", "2.9", "1.10"], "2.10")])
def test_next_stateful(parent: str, existing: list[str], expected: str) -> None:
    assert str(next_stateful(V(parent), map(V, existing))) == expected


def test_a_second_fine_tune_of_one_parent_is_refused_naming_the_existing_version() -> None:
    with pytest.raises(RegistryError, match=r"1\.2 already exists.*newest of major 1 is 1\.3.*fine-tune 1\.3.*2\.0"):
        next_stateful(V("1.1"), map(V, ["1.0", "1.1", "1.2", "1.3"]))


@pytest.mark.parametrize("strategy, kind", [("stateless", "stateless"), ("hybrid-stateless", "stateless"),
                                            ("stateful", "stateful"), ("hybrid-stateful", "stateful")])
def test_strategy_kind(strategy: str, kind: str) -> None:
    assert strategy_kind(strategy) == kind


def test_unknown_strategy_and_bad_alias_are_clear_errors() -> None:
    with pytest.raises(RegistryError, match="'online' is not one of stateless, stateful, hybrid-stateless"):
        strategy_kind("online")
    with pytest.raises(RegistryError, match="alias '1.2' is not valid: a letter"):
        check_alias("1.2")


@pytest.mark.parametrize("text", ["champion\n", "champion\r", " champion", "champ ion", "", "1.2"])
def test_an_alias_with_a_trailing_newline_or_other_stray_character_is_refused(text: str) -> None:
    with pytest.raises(RegistryError, match="is not valid: a letter"):
        check_alias(text)


@pytest.mark.parametrize("text", ["retrain\n", "retrain/x", "../retrain", ".retrain", ""])
def test_a_model_name_with_a_trailing_newline_or_a_path_character_is_refused(text: str, tmp_path: Path) -> None:
    sha = make_checkpoint(tmp_path / "m.pt")
    with ModelRegistry.open(tmp_path / "store") as reg, pytest.raises(RegistryError, match="is not valid"):
        reg.register(text, tmp_path / "m.pt", strategy="stateless", checkpoint_sha256=sha)


def test_model_names_follow_the_run_id_rule() -> None:
    """One definition of the safe set (cl_hpc/dag/names.py), not a copy that can drift."""
    from cl_hpc.dag.names import RUN_ID
    from cl_hpc.registry import versions

    assert versions._NAME is RUN_ID
    assert check_name("retrain-v2.eu") == "retrain-v2.eu"


def _events(*moves: tuple[str, str | None, str]) -> list[AliasEvent]:
    return [AliasEvent(i, float(i), "m", "champion", action, V(old) if old else None, V(new), "r")
            for i, (action, old, new) in enumerate(moves, 1)]


@pytest.mark.parametrize("moves, expected", [
    ([("promote", None, "1.0")], None),
    ([("promote", None, "1.0"), ("promote", "1.0", "1.1")], "1.0"),
    ([("promote", None, "1.0"), ("promote", "1.0", "1.1"), ("rollback", "1.1", "1.0")], None),
    ([("promote", None, "1.0"), ("promote", "1.0", "1.1"), ("promote", "1.1", "1.2"), ("rollback", "1.2", "1.1")],
     "1.0"),
    ([("promote", None, "1.0"), ("promote", "1.0", "2.0"), ("rollback-to", "2.0", "1.0")], "2.0"),
])
def test_rollback_undoes_changes_like_a_stack(moves: list[tuple[str, str | None, str]], expected: str | None) -> None:
    target = rollback_target(_events(*moves))
    assert (str(target) if target else None) == expected


# ---- the registry on a real store --------------------------------------------------------------

@pytest.fixture
def registry(tmp_path: Path) -> Any:
    with ModelRegistry.open(tmp_path / "store") as reg:
        yield reg


def _register(reg: ModelRegistry, tmp: Path, seed: int, strategy: str = "stateless", parent: str | None = None,
              **extra: Any) -> Any:
    path = tmp / f"ckpt-{seed}" / "model.pt"
    sha = make_checkpoint(path, seed)
    return reg.register("retrain", path, strategy=strategy, parent=parent, checkpoint_sha256=sha,
                        workdir=REPO, **extra)


def test_lineage_and_what_each_version_records(registry: ModelRegistry, tmp_path: Path) -> None:
    workload = make_workload(0)
    signature = workload.signature.to_dict()
    first = _register(registry, tmp_path, 0, config={"model": {"hidden": 8}}, window_partitions=["p1", "p2"],
                      window_digest="d1", metrics={"accuracy": 0.8}, tags=["nightly"], run_id="r0", task_key="train",
                      model_class=MLP, init_args=workload.model_target.args, datamodule_class=TABULAR,
                      signature=signature)
    one = _register(registry, tmp_path, 1, "stateful", parent="1.0")
    two = _register(registry, tmp_path, 2, "hybrid-stateful", parent="1.1")
    fresh = _register(registry, tmp_path, 3, "hybrid-stateless", parent="1.2")
    made = [(str(r.version), str(r.parent) if r.parent else None) for r in (first, one, two, fresh)]
    assert made == [("1.0", None), ("1.1", "1.0"), ("1.2", "1.1"), ("2.0", "1.2")]
    stored = registry.get("retrain", "1.0")
    assert stored == first  # everything round-trips through SQLite
    assert stored.config == {"model": {"hidden": 8}} and stored.window_partitions == ["p1", "p2"]
    assert stored.metrics == {"accuracy": 0.8} and stored.tags == ["nightly"] and stored.run_id == "r0"
    assert (stored.model_class, stored.datamodule_class, stored.signature) == (MLP, TABULAR, signature)
    assert stored.init_args == {"n_features": 3, "n_classes": 2, "hidden": 8, "layers": 1, "dropout": 0.0}
    assert one.model_class is None and one.init_args == {} and one.signature == {}  # not given: not invented
    assert len(stored.git_commit or "") == 40 and isinstance(stored.git_dirty, bool)
    assert {"torch", "numpy", "cl_hpc"} <= set(stored.packages) and stored.python and stored.promotable
    assert [str(r.version) for r in registry.versions("retrain")] == ["1.0", "1.1", "1.2", "2.0"]


def test_outside_a_git_checkout_the_code_version_is_none(registry: ModelRegistry, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    make_checkpoint(path)
    record = registry.register("retrain", path, strategy="stateless", workdir=tmp_path)
    assert (record.git_commit, record.git_dirty) == (None, None)


def test_a_second_fine_tune_of_one_parent_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    _register(registry, tmp_path, 0)
    _register(registry, tmp_path, 1, "stateful", parent="1.0")
    with pytest.raises(RegistryError, match=r"1\.1 already exists.*fine-tune 1\.1"):
        _register(registry, tmp_path, 2, "stateful", parent="1.0")
    assert [str(r.version) for r in registry.versions("retrain")] == ["1.0", "1.1"]


def test_registering_the_same_checkpoint_again_returns_the_same_version(registry: ModelRegistry,
                                                                        tmp_path: Path) -> None:
    first = _register(registry, tmp_path, 0)
    again = _register(registry, tmp_path, 0)  # a retried task
    assert again.version == first.version and len(registry.versions("retrain")) == 1


def test_registration_errors_are_clear(registry: ModelRegistry, tmp_path: Path) -> None:
    _register(registry, tmp_path, 0)
    with pytest.raises(RegistryError, match=r"'stateful' fine-tunes an existing version: pass parent=X.Y "
                                            r"\(versions of 'retrain': 1.0\)"):
        _register(registry, tmp_path, 1, "stateful")
    with pytest.raises(RegistryError, match="has no parent version '4.0'; versions: 1.0"):
        _register(registry, tmp_path, 2, "stateful", parent="4.0")
    path = tmp_path / "other.pt"
    make_checkpoint(path, 9)
    with pytest.raises(ChecksumError,
                       match=f"checkpoint {path} has sha256 .* but training recorded 00ff.*nothing was registered"):
        registry.register("retrain", path, strategy="stateless", checkpoint_sha256="00ff")
    with pytest.raises(RegistryError, match="does not exist; nothing was registered"):
        registry.register("retrain", tmp_path / "missing.pt", strategy="stateless")


def test_unknown_versions_aliases_and_models_list_what_exists(registry: ModelRegistry, tmp_path: Path) -> None:
    _register(registry, tmp_path, 0)
    _register(registry, tmp_path, 1, "stateful", parent="1.0")
    registry.promote("retrain", "1.1", reason="first")
    with pytest.raises(RegistryError, match=r"no version '9.9'; versions: 1.0, 1.1; aliases: champion -> 1.1"):
        registry.get("retrain", "9.9")
    with pytest.raises(RegistryError, match=r"no version or alias 'canary'; versions: 1.0, 1.1"):
        registry.get("retrain", "canary")
    with pytest.raises(RegistryError, match=r"no model named 'retrian' in .*cl_hpc.db; models: retrain"):
        registry.get("retrian", "1.0")


def test_promote_and_rollback_keep_an_append_only_log(registry: ModelRegistry, tmp_path: Path) -> None:
    _register(registry, tmp_path, 0)
    _register(registry, tmp_path, 1, "stateful", parent="1.0")
    registry.promote("retrain", "1.0", reason="first model", actor="ci")
    registry.promote("retrain", "1.1", reason="better on the new window", run_id="r7")
    back = registry.rollback("retrain", reason="accuracy dropped in production")
    assert (back.action, str(back.from_version), str(back.to_version)) == ("rollback", "1.1", "1.0")
    assert registry.aliases("retrain") == {"champion": V("1.0")}
    log = [(e.action, str(e.from_version) if e.from_version else None, str(e.to_version), e.reason)
           for e in registry.events("retrain", "champion")]
    assert log == [("promote", None, "1.0", "first model"), ("promote", "1.0", "1.1", "better on the new window"),
                   ("rollback", "1.1", "1.0", "accuracy dropped in production")]
    events = registry.events("retrain")
    assert events[0].actor == "ci" and events[1].run_id == "r7" and "@" in (events[2].actor or "")
    with pytest.raises(RegistryError, match="no earlier version to roll back to.*--to X.Y"):
        registry.rollback("retrain", reason="again")
    with sqlite3.connect(registry.store.path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM alias_events")
    with sqlite3.connect(registry.store.path) as conn, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE alias_events SET reason = 'rewritten'")
    assert len(registry.events("retrain")) == 3


def test_rollback_to_an_explicit_version_and_other_aliases(registry: ModelRegistry, tmp_path: Path) -> None:
    for seed in range(3):
        _register(registry, tmp_path, seed, "stateful" if seed else "stateless",
                  parent=f"1.{seed - 1}" if seed else None)
    for version in ("1.0", "1.1", "1.2"):
        registry.promote("retrain", version, reason=f"to {version}")
    assert registry.promote("retrain", "1.2", reason="again") is None  # already there: no event
    registry.promote("retrain", "1.1", "challenger", reason="shadow it")
    to = registry.rollback("retrain", to="1.0", reason="straight back to the first")
    assert (to.action, str(to.to_version)) == ("rollback-to", "1.0")
    assert str(registry.rollback("retrain", reason="undo that").to_version) == "1.2"
    assert registry.aliases("retrain") == {"challenger": V("1.1"), "champion": V("1.2")}
    with pytest.raises(RegistryError,
                       match="alias 'canary' of model 'retrain' was never set; aliases: challenger -> 1.1"):
        registry.rollback("retrain", "canary", reason="x")
    with pytest.raises(RegistryError, match="a reason is required"):
        registry.promote("retrain", "1.0", reason="  ")


def corrupt(path: Path) -> bytes:
    """Flip one byte in the middle (same size, different content); returns the original bytes."""
    original = path.read_bytes()
    middle = len(original) // 2
    path.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1:])
    return original


def test_a_corrupted_checkpoint_is_refused_and_quarantined_for_good(registry: ModelRegistry, tmp_path: Path) -> None:
    good = _register(registry, tmp_path, 0)
    loaded = registry.load_model("retrain", "1.0")
    assert loaded.datamodule.features == ["a", "b", "c"] and not loaded.model.training
    assert type(loaded.model).__module__ + "." + type(loaded.model).__name__ == MLP
    original = corrupt(Path(good.checkpoint_path))
    with pytest.raises(ChecksumError) as caught:
        registry.load_model("retrain", "1.0")
    message = str(caught.value)
    assert good.checkpoint_path in message and good.checkpoint_sha256 in message and "unpromotable" in message
    assert isinstance(caught.value, DataError)  # existing `except DataError` handlers still catch it
    assert f"not the registered {good.checkpoint_sha256}" in (registry.get("retrain", "1.0").quarantined or "")
    with pytest.raises(RegistryError, match="retrain 1.0 is quarantined and can never be promoted"):
        registry.promote("retrain", "1.0", reason="try anyway")
    Path(good.checkpoint_path).write_bytes(original)  # restored: loadable, yet still never promotable
    assert registry.load_payload("retrain", "1.0")["format"] == "cl_hpc.model/2"
    with pytest.raises(RegistryError, match="quarantined"):
        registry.promote("retrain", "1.0", reason="restored")
    assert registry.events("retrain") == []


class _SwapOnReopen:
    """A Python audit hook (real, not a mock: every open() reports to it before it happens) that
    replaces ``path`` with other bytes when it is opened a second time: a file swapped between a
    check and a load."""

    def __init__(self, path: Path, other: bytes) -> None:
        self.path, self.other, self.opens, self.armed = str(path), other, 0, True

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed or event != "open" or not isinstance(args[0], (str, Path)) or str(args[0]) != self.path:
            return
        self.opens += 1
        if self.opens == 2:
            Path(self.path).write_bytes(self.other)


def test_load_workload_reads_the_file_once_so_a_swap_after_the_check_is_never_loaded(tmp_path: Path) -> None:
    import sys

    from cl_hpc.learn.checkpoint import load_workload, read_payload

    path, other = tmp_path / "model.pt", tmp_path / "other.pt"
    sha = make_checkpoint(path, seed=0, hidden=8)
    make_checkpoint(other, seed=1, hidden=16)
    hook = _SwapOnReopen(path, other.read_bytes())
    sys.addaudithook(hook)  # audit hooks cannot be removed: disarmed below
    try:
        loaded = load_workload(path, sha)
    finally:
        hook.armed = False
    assert loaded.model_target.args["hidden"] == 8  # the bytes whose sha256 matched
    assert hook.opens == 1
    # read_payload too (the registry's load_payload): the meta is the first file's
    sha_other = make_checkpoint(path, seed=0, hidden=8)
    assert sha_other == sha  # the same bytes again: seeded
    hook2 = _SwapOnReopen(path, other.read_bytes())
    sys.addaudithook(hook2)
    try:
        payload = read_payload(path, sha)
    finally:
        hook2.armed = False
    assert payload["meta"]["window_digest"] == "w0" and payload["init_args"]["hidden"] == 8 and hook2.opens == 1


def test_promote_verifies_the_file_and_quarantines_on_mismatch(registry: ModelRegistry, tmp_path: Path) -> None:
    record = _register(registry, tmp_path, 0)
    corrupt(Path(record.checkpoint_path))
    with pytest.raises(ChecksumError,
                       match=r"retrain 1.0 has sha256 .* but .* was recorded .* now marked unpromotable"):
        registry.promote("retrain", "1.0", reason="ship it")
    assert not registry.get("retrain", "1.0").promotable and registry.aliases("retrain") == {}


def test_a_missing_checkpoint_is_refused_but_not_quarantined(registry: ModelRegistry, tmp_path: Path) -> None:
    record = _register(registry, tmp_path, 0)
    Path(record.checkpoint_path).unlink()
    with pytest.raises(RegistryError, match="does not exist .*not mounted"):
        registry.promote("retrain", "1.0", reason="ship it")
    assert registry.get("retrain", "1.0").promotable


# ---- concurrency: real processes ---------------------------------------------------------------

def _worker(root: str, path: str, strategy: str, parent: str | None, barrier: Any, results: Any) -> None:
    with ModelRegistry.open(root, busy_timeout_s=60) as reg:
        barrier.wait(timeout=60)  # all start registering at once
        try:
            results.put(str(reg.register("retrain", path, strategy=strategy, parent=parent, workdir=REPO).version))
        except RegistryError as exc:
            results.put(f"refused: {exc}")


def _race(root: Path, paths: list[Path], strategy: str, parent: str | None) -> list[str]:
    ctx = mp.get_context("spawn")  # fresh processes, like jobs on different nodes
    barrier, results = ctx.Barrier(len(paths)), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(root), str(p), strategy, parent, barrier, results)) for p in paths]
    for proc in procs:
        proc.start()
    out = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return out


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    paths = [tmp_path / f"m{i}.pt" for i in range(7)]
    for i, path in enumerate(paths):
        make_checkpoint(path, i)
    root = tmp_path / "store"
    ModelRegistry.open(root).close()  # migrate once up front, as the launcher does
    majors = _race(root, paths[:5], "stateless", None)
    assert sorted(majors) == ["1.0", "2.0", "3.0", "4.0", "5.0"]
    fine_tunes = _race(root, paths[5:], "stateful", "3.0")
    assert sorted(fine_tunes)[0] == "3.1" and sorted(fine_tunes)[1].startswith("refused: 3.1 already exists")
    with ModelRegistry.open(root) as reg:
        assert [str(r.version) for r in reg.versions("retrain")] == ["1.0", "2.0", "3.0", "3.1", "4.0", "5.0"]


def test_a_store_made_before_the_registry_is_upgraded_in_place(tmp_path: Path) -> None:
    from cl_hpc.store.db import DB_NAME, MIGRATIONS

    conn = sqlite3.connect(tmp_path / DB_NAME)
    for number, migration in enumerate(MIGRATIONS[:2], start=1):  # the store as it was before v3
        migration(conn)
        conn.execute(f"PRAGMA user_version={number}")
    conn.execute("INSERT INTO runs (run_id, state) VALUES ('r1', 'COMPLETED')")
    conn.commit()
    conn.close()
    with ModelRegistry.open(tmp_path) as reg:
        assert reg.store.version == len(MIGRATIONS) and reg.names() == []
        assert reg.store.rows("runs")[0]["run_id"] == "r1"
        reg.store.delete_run("r1")  # run bookkeeping leaves the registry tables alone
