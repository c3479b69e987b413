"""The experiment report on a real prediction log and labelled partitions: per-arm figures, the
sample-ratio check (an injected mismatch is caught), the accuracy z-test and shadow agreement."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportions_ztest

from cl_hpc.data.predictions import PredictionBatch, Role, Stream, predictions_table, shard_path, write_shard
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.records import Action, Arm, Experiment, ExperimentEvent, ExperimentKind, ExperimentState
from cl_hpc.rollout.report import SRM_GRACE_S, build

T0 = time.time() - 600
ARMS = (Arm("challenger", "2.0"), Arm("champion", "1.0"))


def _experiment(kind: ExperimentKind = ExperimentKind.AB, unit: UnitKind = UnitKind.USER) -> Experiment:
    return Experiment(id=7, name="m", kind=kind, unit=unit, salt="s", arms=ARMS, config={"alpha": 0.05, "mde": 0.05},
                      created=T0, reason="test")


def _events(weights: dict[str, float]) -> list[ExperimentEvent]:
    return [ExperimentEvent(1, 7, T0, Action.START, ExperimentState.RUNNING, weights, "start")]


def _log(log_dir: Path, counts: dict[str, int], role: Role = Role.LIVE, answers: dict[str, int] | None = None,
         start: float = T0 + SRM_GRACE_S + 1, tag: str = "") -> None:
    """``counts[arm]`` requests of distinct users on each arm (one row each) from ``start``, logged as the
    server does."""
    seq = 0
    for arm, n in counts.items():
        version = "2.0" if arm == "challenger" else "1.0"
        batches = [PredictionBatch(f"{arm}-{tag}{i}", start + i * 0.001, "m", version, role,
                                   1.0 + (arm == "challenger"), {"x": np.array([0.5])},
                                   {"label": np.array([(answers or {}).get(arm, 1)])}, f"user-{arm}-{tag}{i}", 7, arm)
                   for i in range(n)]
        write_shard(shard_path(log_dir, Stream.PREDICTIONS, start, f"w-{role.value}{tag}", seq),
                    predictions_table(batches))
        seq += 1


def test_an_injected_sample_ratio_mismatch_is_caught(tmp_path: Path) -> None:
    _log(tmp_path, {"challenger": 300, "champion": 700})  # the weights say 50/50
    report = build(_experiment(), _events({"challenger": 0.5, "champion": 0.5}), tmp_path)
    assert report.srm is not None and report.srm.mismatch and report.srm.counts == (300, 700)
    fair = build(_experiment(), _events({"challenger": 0.3, "champion": 0.7}), tmp_path)
    assert fair.srm is not None and not fair.srm.mismatch
    by_arm = {a.arm: a for a in report.arms}
    assert (by_arm["challenger"].requests, by_arm["challenger"].units, by_arm["champion"].requests) == (300, 300, 700)
    assert report.latency is not None and report.latency.estimate == pytest.approx(1.0)  # 2 ms vs 1 ms


def test_users_seen_while_the_servers_still_route_by_the_old_weights_are_not_counted(tmp_path: Path) -> None:
    # the weights moved to 30/70 at T0; in the seconds before the servers' next poll, 900 users still met
    # the old split (all champion): counted, they would make a fair 300/700 look like a mismatch
    _log(tmp_path, {"champion": 900}, start=T0 + 0.5, tag="lag")
    _log(tmp_path, {"challenger": 300, "champion": 700})
    report = build(_experiment(), _events({"challenger": 0.3, "champion": 0.7}), tmp_path)
    assert report.srm is not None and not report.srm.mismatch and report.srm.counts == (300, 700)


def test_ranking_answers_stay_out_of_the_latency_comparison(tmp_path: Path) -> None:
    _log(tmp_path, {"challenger": 50, "champion": 50})  # 2 ms vs 1 ms
    slow = [PredictionBatch(f"rank-{i}", T0 + SRM_GRACE_S + 2 + i * 0.01, "m", "1.0", Role.LIVE, 500.0,
                            {"x": np.array([0.5, 0.6])}, {"item": np.array(["a", "b"]), "score": np.array([0.9, 0.1])},
                            f"user-r-{i}", 7, "champion") for i in range(50)]
    write_shard(shard_path(tmp_path, Stream.PREDICTIONS, T0 + 1, "w-rank", 0), predictions_table(slow))
    report = build(_experiment(), _events({"challenger": 0.5, "champion": 0.5}), tmp_path)
    assert report.latency is not None and report.latency.estimate == pytest.approx(1.0)


def test_accuracy_from_joined_labels_matches_statsmodels(tmp_path: Path) -> None:
    log_dir, labels = tmp_path / "log", tmp_path / "labels"
    _log(log_dir, {"challenger": 50, "champion": 50})
    labels.mkdir()
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"ts": pd.to_datetime(T0 + np.arange(400), unit="s"), "x": rng.normal(size=400),
                         "y": [1] * 400, "_experiment": 7, "_arm": ["champion"] * 200 + ["challenger"] * 200,
                         "_output.label": np.r_[rng.random(200) < 0.7, rng.random(200) < 0.85].astype(int)})
    rows.to_parquet(labels / "part-20261205T000000.parquet")
    report = build(_experiment(), _events({"challenger": 0.5, "champion": 0.5}), log_dir, labels)
    correct = {a.arm: a.correct for a in report.arms}
    assert {a.arm: a.labelled for a in report.arms} == {"challenger": 200, "champion": 200}
    _, p = proportions_ztest([correct["challenger"], correct["champion"]], [200, 200])
    assert report.accuracy is not None and report.accuracy.p_value == pytest.approx(p)
    assert report.accuracy.estimate == pytest.approx((correct["challenger"] - correct["champion"]) / 200)
    assert report.plan is not None and report.plan.n_a > 0


def test_a_shadow_reports_agreement_and_no_split(tmp_path: Path) -> None:
    experiment = _experiment(ExperimentKind.SHADOW, UnitKind.REQUEST)
    _log(tmp_path, {"champion": 40}, Role.LIVE, {"champion": 1})
    # the copies answered by the challenger: the same request ids, 30 agreeing and 10 not
    batches = [PredictionBatch(f"champion-{i}", T0 + 2, "m", "2.0", Role.SHADOW, 3.0, {"x": np.array([0.5])},
                               {"label": np.array([1 if i < 30 else 0])}, None, 7, "challenger") for i in range(40)]
    write_shard(shard_path(tmp_path, Stream.PREDICTIONS, T0 + 2, "shadow", 0), predictions_table(batches))
    report = build(experiment, _events({"challenger": 0.0, "champion": 1.0}), tmp_path)
    assert report.agreement == pytest.approx(0.75) and report.srm is None


def test_nothing_logged_yet_gives_notes_not_errors(tmp_path: Path) -> None:
    report = build(_experiment(), _events({"challenger": 0.5, "champion": 0.5}), tmp_path)
    assert [a.requests for a in report.arms] == [0, 0] and report.srm is None and report.accuracy is None
    assert any("sample-ratio check not run" in n for n in report.notes)
