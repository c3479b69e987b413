"""The promote task moves the champion alias only from the champion the gate compared against.

Real SQLite files, real torch checkpoints, the real promote task and registry CLI, and real
processes for the concurrent case.
"""

from __future__ import annotations

import multiprocessing as mp
import shlex
from pathlib import Path
from typing import Any

import pytest

from cl_hpc.context import TaskContext
from cl_hpc.registry import ModelRegistry, RegistryError
from cl_hpc.registry.__main__ import main as registry_cli
from tests.unit.test_registry import make_checkpoint


def _champion_1_0(root: Path, tmp_path: Path) -> None:
    sha = make_checkpoint(tmp_path / "champ.pt", seed=0)
    with ModelRegistry.open(root) as reg:
        record = reg.register("m", tmp_path / "champ.pt", strategy="stateless", checkpoint_sha256=sha)
        reg.promote("m", record.version, reason="first model")


def _promote_task(root: Path, run_dir: Path, checkpoint: Path, sha: str, champion: str | None) -> dict[str, Any]:
    """Run the promote task of a run whose gate passed its challenger against ``champion``."""
    from cl_hpc.tasks import promote

    upstream = {
        "train": {"checkpoint_path": str(checkpoint), "checkpoint_sha256": sha, "strategy": "stateless",
                  "parent": None, "window_end": "2026-01-01T00:00:00", "train_rows": 10,
                  "strategy_reason": "test", "model_class": "cl_hpc.learn.tabular.TabularClassifier",
                  "init_args": {"n_features": 3, "n_classes": 2, "hidden": 8},
                  "datamodule_class": "cl_hpc.learn.tabular.TabularData", "signature": {}},
        "compare": {"passed": True, "reasons": [f"beats champion {champion}"], "champion": champion,
                    "metric": "accuracy", "challenger_metrics": {"accuracy": 0.9, "rows": 10},
                    "champion_metrics": {"accuracy": 0.8, "rows": 10}},
        "ingest": {"train_partitions": ["p0"], "train_digest": "d", "train_labels": 10, "eval_partitions": ["p1"]},
    }
    task_dir = run_dir / "tasks" / "promote"
    task_dir.mkdir(parents=True, exist_ok=True)
    ctx = TaskContext(run_dir.name, "promote", "promote", task_dir, run_dir, 1, upstream=upstream)
    return promote.run(ctx, registry={"root": str(root), "name": "m"})


def test_a_challenger_judged_against_a_champion_replaced_meanwhile_is_not_promoted(tmp_path: Path) -> None:
    """The gate compared 2.0 with champion 1.0; meanwhile 1.1 was promoted by hand: 2.0 must not
    replace 1.1, which it was never compared with."""
    root = tmp_path / "store"
    _champion_1_0(root, tmp_path)
    hotfix_sha = make_checkpoint(tmp_path / "hotfix.pt", seed=1)
    with ModelRegistry.open(root) as reg:
        reg.register("m", tmp_path / "hotfix.pt", strategy="stateful", parent="1.0", checkpoint_sha256=hotfix_sha)
    assert registry_cli(["--store-root", str(root), "promote", "1.1", "--reason", "hotfix by hand"]) == 0
    sha = make_checkpoint(tmp_path / "challenger.pt", seed=2)

    out = _promote_task(root, tmp_path / "run", tmp_path / "challenger.pt", sha, champion="1.0")

    assert out["version"] == "2.0" and out["promoted"] is False
    assert "judged while champion pointed at 1.0, but champion now points at 1.1" in out["reasons"][-1]
    assert "hotfix by hand" in out["reasons"][-1]
    with ModelRegistry.open(root) as reg:
        assert str(reg.resolve("m", "champion")) == "1.1"
        assert "stale-gate" in reg.get("m", "2.0").tags  # registered, and why it is not the champion
        assert [str(e.to_version) for e in reg.events("m")] == ["1.0", "1.1"]


def test_a_challenger_judged_against_the_current_champion_is_promoted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _champion_1_0(root, tmp_path)
    sha = make_checkpoint(tmp_path / "challenger.pt", seed=2)
    out = _promote_task(root, tmp_path / "run", tmp_path / "challenger.pt", sha, champion="1.0")
    assert out["promoted"] is True and out["compared_with"] == "1.0"
    with ModelRegistry.open(root) as reg:
        assert str(reg.resolve("m", "champion")) == "2.0"


def test_a_cold_start_gate_does_not_replace_a_champion_promoted_meanwhile(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _champion_1_0(root, tmp_path)
    sha = make_checkpoint(tmp_path / "challenger.pt", seed=2)
    out = _promote_task(root, tmp_path / "run", tmp_path / "challenger.pt", sha, champion=None)
    assert out["promoted"] is False and "judged while champion was unset (a cold start)" in out["reasons"][-1]


def _racer(root: str, run_dir: str, checkpoint: str, sha: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=60)  # both runs reach promote at once
    results.put(_promote_task(Path(root), Path(run_dir), Path(checkpoint), sha, champion="1.0"))


def test_two_concurrent_promotions_judged_against_one_champion_promote_only_one(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _champion_1_0(root, tmp_path)
    shas = [make_checkpoint(tmp_path / f"c{i}.pt", seed=10 + i) for i in range(2)]
    ctx = mp.get_context("spawn")  # fresh processes, like two runs' jobs on different nodes
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(root), str(tmp_path / f"run{i}"), str(tmp_path / f"c{i}.pt"),
                                             shas[i], barrier, results)) for i in range(2)]
    for proc in procs:
        proc.start()
    outs = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    winner = [o for o in outs if o["promoted"]]
    loser = [o for o in outs if not o["promoted"]]
    assert len(winner) == 1 and len(loser) == 1
    assert f"champion now points at {winner[0]['version']}" in loser[0]["reasons"][-1]
    with ModelRegistry.open(root) as reg:
        assert str(reg.resolve("m", "champion")) == winner[0]["version"]
        log = [(str(e.from_version), str(e.to_version)) for e in reg.events("m")]
        assert log == [("None", "1.0"), ("1.0", winner[0]["version"])]  # nothing replaced it unseen


def test_registry_promote_by_hand_with_expect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store"
    _champion_1_0(root, tmp_path)
    for seed, parent in ((1, "1.0"), (2, "1.1")):
        sha = make_checkpoint(tmp_path / f"v{seed}.pt", seed=seed)
        with ModelRegistry.open(root) as reg:
            reg.register("m", tmp_path / f"v{seed}.pt", strategy="stateful", parent=parent, checkpoint_sha256=sha)
    base = ["--store-root", str(root), "promote"]
    assert registry_cli([*base, "1.1", "--reason", "by hand"]) == 0  # without --expect: as before
    assert registry_cli([*base, "1.2", "--expect", "1.0", "--reason", "compared with 1.0"]) == 2
    assert "1.2 was not promoted: it was judged while champion pointed at 1.0, but champion now points at 1.1" in \
        capsys.readouterr().err
    assert registry_cli([*base, "1.2", "--expect", "1.1", "--reason", "compared with 1.1"]) == 0
    with ModelRegistry.open(root) as reg:
        assert str(reg.resolve("m", "champion")) == "1.2"
        with pytest.raises(RegistryError, match="is not a model version"):
            reg.promote("m", "1.0", reason="r", expect="champion")


def _separating_challenger(path: Path) -> str:
    """A real tabular checkpoint over four features (the champion has three) that predicts y = (a > 0)."""
    import torch

    from cl_hpc.learn.checkpoint import save_workload
    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.workload import Workload, data_from, model_for

    data_target = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "features": list("abcd")})
    data = data_from(data_target)
    window = path.with_suffix(".fit.parquet")
    _window(window, 400)
    import pandas as pd

    data.fit_state(pd.read_parquet(window))
    model, built = model_for(Target("cl_hpc.learn.tabular.TabularClassifier",
                                    {"hidden": 2, "layers": 1, "dropout": 0.0}), data)
    scale = torch.tensor(data.moments.std[0], dtype=torch.float32)
    shift = torch.tensor(data.moments.mean[0], dtype=torch.float32)
    net = model.net
    with torch.no_grad():  # relu(+a) and relu(-a) of the raw feature a, so class 1 <- a > 0
        net.body[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]) * scale)
        net.body[0].bias.copy_(torch.tensor([1.0, -1.0]) * shift)
        net.body[3].weight.copy_(torch.tensor([[0.0, 10.0], [10.0, 0.0]]))
        net.body[3].bias.zero_()
    return save_workload(path, Workload(model, data, built, data_target), {"window_digest": "w-new"})


def _window(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)).astype("float32"), columns=list("abcd"))
    frame["y"] = (frame["a"] > 0).astype("int64")
    frame["ts"] = pd.date_range("2026-01-01", periods=rows, freq="min")
    frame.to_parquet(path)


def test_a_challenger_of_another_signature_allowed_by_config_is_promoted(tmp_path: Path) -> None:
    """allow_signature_change=true: the challenger (other features than champion 1.0) is judged
    against the baseline, and promote still moves champion from 1.0, where the alias pointed when
    the gate ran: the verdict's champion is that version, not None (a cold start)."""
    from cl_hpc.tasks import compare

    root, run_dir = tmp_path / "store", tmp_path / "run"
    _champion_1_0(root, tmp_path)
    sha = _separating_challenger(tmp_path / "challenger.pt")
    _window(tmp_path / "eval.parquet", 400)
    _window(tmp_path / "train.parquet", 400)
    ingest = {"eval_path": str(tmp_path / "eval.parquet"), "train_path": str(tmp_path / "train.parquet"),
              "timestamp_col": "ts"}
    upstream = {"train": {"checkpoint_path": str(tmp_path / "challenger.pt"), "checkpoint_sha256": sha},
                "ingest": ingest}
    (run_dir / "tasks" / "compare").mkdir(parents=True)
    ctx = TaskContext(run_dir.name, "compare", "compare", run_dir / "tasks" / "compare", run_dir, 1,
                      upstream=upstream)
    verdict = compare.run(ctx, registry={"root": str(root), "name": "m"}, allow_signature_change=True)
    assert verdict["passed"] is True, verdict["reasons"]
    assert verdict["champion"] == "1.0" and verdict["scored_against"] is None
    assert verdict["reasons"][0].startswith("not comparable: champion 1.0's signature differs from the challenger's")
    assert "input 'd': absent vs d: float64" in verdict["reasons"][0]

    out = _promote_task(root, run_dir, tmp_path / "challenger.pt", sha, champion=verdict["champion"])

    assert out["promoted"] is True, out["reasons"]
    with ModelRegistry.open(root) as reg:
        assert str(reg.resolve("m", "champion")) == "2.0"
        assert "stale-gate" not in reg.get("m", "2.0").tags


def test_a_gate_metric_the_model_does_not_report_is_an_error_naming_the_ones_it_does(tmp_path: Path) -> None:
    from cl_hpc.learn.contract import ContractError
    from cl_hpc.tasks import compare

    run_dir = tmp_path / "run"
    sha = _separating_challenger(tmp_path / "challenger.pt")
    _window(tmp_path / "eval.parquet", 100)
    upstream = {"train": {"checkpoint_path": str(tmp_path / "challenger.pt"), "checkpoint_sha256": sha},
                "ingest": {"eval_path": str(tmp_path / "eval.parquet"), "train_path": str(tmp_path / "eval.parquet"),
                           "timestamp_col": "ts"}}
    (run_dir / "tasks" / "compare").mkdir(parents=True)
    ctx = TaskContext(run_dir.name, "compare", "compare", run_dir / "tasks" / "compare", run_dir, 1, upstream=upstream)
    with pytest.raises(ContractError, match=r"metric 'brier' is not reported by model "
                                            r"cl_hpc.learn.tabular.TabularClassifier; it reports \['accuracy', "):
        compare.run(ctx, gate={"metric": "brier"})
    assert not (run_dir / "tasks" / "compare" / "verdict.json").exists()


def _hand_command(message: str) -> list[str]:
    """The registry CLI arguments of the hand promotion an AliasMoved message suggests."""
    words = shlex.split(message.split("promote it by hand: ", 1)[1])
    assert words[:3] == ["python", "-m", "cl_hpc.registry"] and "--reason" in words, words
    return [*words[3:words.index("--reason")], "--reason", "checked by hand"]


def test_the_hand_promotion_a_stale_gate_suggests_works_on_a_registry_that_is_not_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is not ./store and holds two models: the suggested command names both."""
    root = tmp_path / "elsewhere"
    _champion_1_0(root, tmp_path)
    other, hotfix = (make_checkpoint(tmp_path / f"{n}.pt", seed=s) for n, s in (("other", 5), ("hotfix", 1)))
    with ModelRegistry.open(root) as reg:
        reg.register("other", tmp_path / "other.pt", strategy="stateless", checkpoint_sha256=other)
        reg.register("m", tmp_path / "hotfix.pt", strategy="stateful", parent="1.0", checkpoint_sha256=hotfix)
        reg.promote("m", "1.1", reason="by hand meanwhile")
    sha = make_checkpoint(tmp_path / "challenger.pt", seed=2)
    out = _promote_task(root, tmp_path / "run", tmp_path / "challenger.pt", sha, champion="1.0")
    assert out["promoted"] is False
    monkeypatch.chdir(tmp_path)  # where ./store does not exist: the command must name the registry

    assert registry_cli(_hand_command(out["reasons"][-1])) == 0

    with ModelRegistry.open(root) as reg:
        assert str(reg.resolve("m", "champion")) == "2.0"
        assert reg.events("m")[-1].reason == "checked by hand"


def test_an_alias_that_is_unset_is_named_so(tmp_path: Path) -> None:
    root = tmp_path / "store"
    sha = make_checkpoint(tmp_path / "v.pt", seed=0)
    with ModelRegistry.open(root) as reg:
        reg.register("m", tmp_path / "v.pt", strategy="stateless", checkpoint_sha256=sha)
        with pytest.raises(RegistryError) as caught:
            reg.promote("m", "1.0", reason="r", expect="1.0")
    message = str(caught.value)
    assert "judged while champion pointed at 1.0, but champion is unset (it was never set)" in message
    assert "judge it again (run the pipeline again)" in message and "champion  " not in message
    assert "--expect" not in _hand_command(message)
