"""Strategies and the pieces the continual tasks build on them: decisions, feature moments, scales."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cl_hpc.config.ml import model_conf
from cl_hpc.data.partitions import utc_naive
from cl_hpc.learn.strategies import Moments, StrategyConf, decide, to_model_scale
from cl_hpc.tasks.train import _incompatible


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
    # the features task stores std 1.0 for a constant feature; its true spread (0) is what merges
    parent = Moments.from_std(1000, [7.0, 0.0], [1.0, 2.0], constant=[True, False])
    merged = parent.merge(Moments(200, (7.0, 0.0), (0.0, 4.0 * 199)))
    assert merged.m2[0] == 0.0 and merged.std[0] == 1.0  # centred, never divided by zero


def test_to_model_scale_moves_large_valued_features_too() -> None:
    x = np.zeros((1, 1), dtype=np.float32)  # a row at the window's mean
    out = to_model_scale(x, [1_000_000.0], [1.0], {"mean": [1_000_008.0], "std": [1.0]})
    assert out[0, 0] == pytest.approx(-8.0)


def test_utc_naive_makes_zoned_and_naive_times_comparable() -> None:
    zoned = pd.Series(pd.to_datetime(["2026-01-01T01:00:00+01:00"]))
    naive = pd.Timestamp("2026-01-01T00:00:00")
    assert (utc_naive(zoned) == naive).all() and utc_naive(pd.Timestamp("2026-01-01T01:00+01:00")) == naive


@pytest.mark.parametrize("payload_change,words", [
    ({"features": ["x0", "x2"]}, "trained on features"),
    ({"classes": [0, 1, 2]}, "predicts classes"),
    ({"net": {"hidden": 128, "layers": 2}}, "architecture"),
])
def test_a_champion_of_another_shape_is_not_fine_tuned(payload_change: dict, words: str) -> None:
    feats = {"features": ["x0", "x1"], "classes": [0, 1]}
    payload = {"features": ["x0", "x1"], "classes": [0, 1], "net": {"hidden": 64, "layers": 2}}
    conf = model_conf({"hidden": 64, "layers": 2})
    assert _incompatible(payload, feats, conf) is None
    assert words in (_incompatible({**payload, **payload_change}, feats, conf) or "")


def test_a_requeued_segment_keeps_its_first_decision_and_parent(tmp_path) -> None:
    """The champion moved between two segments of one attempt: the resumed segment still fine-tunes
    the parent its first segment chose (its weights are what the resume checkpoint continues)."""
    import torch

    from cl_hpc.learn.checkpoint import save_checkpoint
    from cl_hpc.learn.nets import MLP
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.tasks.train import _plan_inputs

    hp = {"n_features": 2, "n_classes": 2, "hidden": 8, "layers": 1, "dropout": 0.0}
    meta = {"features": ["x0", "x1"], "classes": [0, 1], "label_col": "y", "window_digest": "d",
            "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    with ModelRegistry.open(tmp_path / "store") as reg:
        for seed, strategy in ((0, "stateless"), (1, "stateless")):
            torch.manual_seed(seed)
            path = tmp_path / f"m{seed}.pt"
            save_checkpoint(path, MLP(**hp), hp, meta)
            record = reg.register("m", path, strategy=strategy, metrics={"window_end": "2026-01-01T00:00:00",
                                                                         "train_rows": 10})
            reg.promote("m", record.version, reason="test")  # 1.0, then 2.0 becomes the champion
        first_state = torch.load(tmp_path / "m0.pt", weights_only=True)["state_dict"]
    times = pd.Series(pd.date_range("2026-01-01T01:00", periods=10, freq="1min"))
    x, y = np.zeros((10, 2), dtype=np.float32), np.array([0, 1] * 5)
    feats = {"features": ["x0", "x1"], "classes": [0, 1], "mean": [0.0, 0.0], "std": [1.0, 1.0], "train_rows": 10}
    registry = {"root": str(tmp_path / "store"), "name": "m"}
    pinned = {"mode": "stateful", "parent": "1.0", "reason": "hybrid: fine-tune champion 1.0 (update 1 of 4)"}
    inputs = _plan_inputs(x, y, times, feats, model_conf({"hidden": 8, "layers": 1}), {"kind": "hybrid"},
                          registry, False, pinned)
    assert inputs.decision.mode == "stateful" and inputs.parent == "1.0" and "resumed" in inputs.decision.reason
    assert all(torch.equal(inputs.init_state[k], first_state[k]) for k in first_state)
