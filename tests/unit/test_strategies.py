"""Strategies and the pieces the continual tasks build on them: decisions, feature moments, scales."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cl_hpc.data.partitions import utc_naive
from cl_hpc.learn.contract import CannotContinue, Target
from cl_hpc.learn.strategies import Decision, Moments, StrategyConf, decide, replay_index
from cl_hpc.learn.tabular import TabularData
from cl_hpc.learn.workload import Workload, model_for

MLP = "cl_hpc.learn.tabular.TabularClassifier"
TABULAR = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "features": ["x0", "x1"]})


def frame(rows: int = 10, classes: tuple[int, ...] = (0, 1), start: str = "2026-01-01T01:00") -> pd.DataFrame:
    rng = np.random.default_rng(rows)
    return pd.DataFrame({"ts": pd.date_range(start, periods=rows, freq="1min"), "x0": rng.normal(size=rows),
                         "x1": rng.normal(size=rows), "y": [classes[i % len(classes)] for i in range(rows)]})


def workload(hidden: int = 8, seed: int = 0) -> Workload:
    """A tiny real tabular workload (its data module fitted on ``frame()``)."""
    import torch

    data = TabularData(**TABULAR.args)
    data.fit_state(frame())
    torch.manual_seed(seed)
    model, built = model_for(Target(MLP, {"hidden": hidden, "layers": 1, "dropout": 0.0}), data)
    return Workload(model, data, built, TABULAR)


@pytest.mark.parametrize("kind,champion,updates,severe,block,mode,words", [
    ("hybrid", None, 0, False, None, "stateless", "no champion"),
    ("hybrid", "1.2", 2, False, None, "stateful", "update 3 of 4"),
    ("hybrid", "1.4", 4, False, None, "stateless", "4 stateful updates"),
    ("hybrid", "1.0", 0, True, None, "stateless", "severe drift"),
    ("stateful", "1.0", 9, True, None, "stateful", "fine-tune champion 1.0"),
    ("stateless", "3.1", 0, False, None, "stateless", "strategy stateless"),
    ("hybrid", "1.0", 0, False, "1.1 exists, a rejected fine-tune of it", "stateless", "rejected fine-tune"),
])
def test_decisions(kind: str, champion: str | None, updates: int, severe: bool, block: str | None, mode: str,
                   words: str) -> None:
    decision = decide(StrategyConf(kind=kind), champion, updates, severe, block)
    assert decision.mode == mode and words in decision.reason


def test_merged_moments_equal_the_moments_of_all_rows() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(2, 3, (500, 3)), rng.normal(-1, 0.5, (200, 3))
    merged = Moments.from_std(500, a.mean(0), a.std(0, ddof=1)).merge(
        Moments.from_std(200, b.mean(0), b.std(0, ddof=1)))
    both = np.vstack([a, b])
    assert np.allclose(merged.mean, both.mean(0)) and np.allclose(merged.std, both.std(0, ddof=1))


def test_a_constant_feature_carries_no_variance_forward() -> None:
    # the cl_hpc.mlp/1 checkpoints stored std 1.0 for a constant feature; its true spread (0) is what merges
    parent = Moments.from_std(1000, [7.0, 0.0], [1.0, 2.0], constant=[True, False])
    merged = parent.merge(Moments(200, (7.0, 0.0), (0.0, 4.0 * 199)))
    assert merged.m2[0] == 0.0 and merged.std[0] == 1.0  # centred, never divided by zero


def test_utc_naive_makes_zoned_and_naive_times_comparable() -> None:
    zoned = pd.Series(pd.to_datetime(["2026-01-01T01:00:00+01:00"]))
    naive = pd.Timestamp("2026-01-01T00:00:00")
    assert (utc_naive(zoned) == naive).all() and utc_naive(pd.Timestamp("2026-01-01T01:00+01:00")) == naive


def test_replay_index_is_a_seeded_sorted_sample_of_the_older_rows() -> None:
    idx = replay_index(100, 40, 0.5, seed=3)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20 and list(idx) == sorted(idx)
    assert 0 <= idx.min() and idx.max() < 100
    assert np.array_equal(idx, replay_index(100, 40, 0.5, seed=3))
    assert not np.array_equal(idx, replay_index(100, 40, 0.5, seed=4))
    assert len(replay_index(10, 40, 0.5, seed=0)) == 10  # at most all of them
    assert len(replay_index(0, 40, 0.5, seed=0)) == len(replay_index(100, 40, 0.0, seed=0)) == 0


def test_new_rows_of_another_shape_are_not_continued() -> None:
    from cl_hpc.errors import DataError

    data = TabularData(**TABULAR.args)
    data.fit_state(frame())
    with pytest.raises(CannotContinue, match=r"predicts classes \[0, 1\], the new rows bring \[2\]"):
        data.update_state(frame(classes=(0, 1, 2)))
    # the configured features are gone: no model of this config can train on these rows, continued or not
    with pytest.raises(DataError, match=r"feature column\(s\) \['x1'\] are not in the rows"):
        data.update_state(frame().rename(columns={"x1": "x2"}))


def test_a_champion_fitted_on_other_features_is_not_continued() -> None:
    data = TabularData(label_col="y")  # every column but y and ts: x0, x1
    data.fit_state(frame())
    with pytest.raises(CannotContinue, match=r"trained on features \['x0', 'x1'\], the new rows have"):
        data.update_state(frame().assign(x2=1.0))


def test_update_state_moves_the_scaling_and_the_class_counts_with_the_new_rows() -> None:
    data = TabularData(**TABULAR.args)
    old, new = frame(10), frame(30, start="2026-01-02")
    data.fit_state(old)
    data.update_state(new)
    both = pd.concat([old, new])
    assert data.moments is not None and data.moments.count == 40
    assert np.allclose(data.moments.mean, both[["x0", "x1"]].mean()) and np.allclose(
        data.moments.std, both[["x0", "x1"]].std())
    assert data.class_counts == [20, 20]


@pytest.mark.parametrize("config,words", [
    (Target(MLP, {"hidden": 16, "layers": 1, "dropout": 0.0}), "which the config's model cannot take over"),
    (Target("cl_hpc.learn.gpt.GPT", {}), "the config asks for cl_hpc.learn.gpt.GPT"),
])
def test_a_champion_of_another_shape_is_not_fine_tuned(tmp_path: Path, config: Target, words: str) -> None:
    from cl_hpc.learn.checkpoint import read_payload, save_workload
    from cl_hpc.tasks.train import _fine_tune_inputs

    sha = save_workload(tmp_path / "m.pt", workload(hidden=8), {})
    payload = read_payload(tmp_path / "m.pt", sha)
    same = (Target(MLP, {"hidden": 8, "layers": 1, "dropout": 0.0}), TABULAR)

    def fine_tune(targets: tuple[Target, Target], window_end: str) -> Any:
        return _fine_tune_inputs(frame(), "ts", targets, payload, "1.0", {"window_end": window_end},
                                 StrategyConf(replay_fraction=1.0), Decision("stateful", "test"), 0)

    inputs = fine_tune(same, "2026-01-01T01:04:00")
    assert inputs.parent == "1.0" and inputs.new_rows == 5 and inputs.replay_rows == 5  # the rows after window_end
    with pytest.raises(CannotContinue, match=words):
        fine_tune((config, TABULAR), "2026-01-01T01:04:00")
    with pytest.raises(CannotContinue, match="saw every row"):
        fine_tune(same, "2026-01-02")


def test_a_requeued_segment_keeps_its_first_decision_and_parent(tmp_path: Path) -> None:
    """The champion moved between two segments of one attempt: the resumed segment still fine-tunes
    the parent its first segment chose (its weights are what the resume checkpoint continues)."""
    import torch

    from cl_hpc.learn.checkpoint import save_workload
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.tasks.train import _plan_inputs

    with ModelRegistry.open(tmp_path / "store") as reg:
        for seed, strategy in ((0, "stateless"), (1, "stateless")):
            path = tmp_path / f"m{seed}.pt"
            champ = workload(seed=seed)
            sha = save_workload(path, champ, {})
            record = reg.register("m", path, strategy=strategy, checkpoint_sha256=sha,
                                  metrics={"window_end": "2026-01-01T00:00:00", "train_rows": 10},
                                  model_class=MLP, init_args=champ.model_target.args,
                                  datamodule_class=TABULAR.path, signature=champ.signature.to_dict())
            reg.promote("m", record.version, reason="test")  # 1.0, then 2.0 becomes the champion
        first_state = torch.load(tmp_path / "m0.pt", weights_only=True)["state_dict"]
    registry = {"root": str(tmp_path / "store"), "name": "m"}
    pinned = {"mode": "stateful", "parent": "1.0", "reason": "hybrid: fine-tune champion 1.0 (update 1 of 4)"}
    targets = (Target(MLP, {"hidden": 8, "layers": 1, "dropout": 0.0}), TABULAR)
    inputs = _plan_inputs(frame(), "ts", targets, {"kind": "hybrid"}, registry, False, 0, pinned)
    assert inputs.decision.mode == "stateful" and inputs.parent == "1.0" and "resumed" in inputs.decision.reason
    state = inputs.workload.model.state_dict()
    assert all(torch.equal(state[k], first_state[k]) for k in first_state)
