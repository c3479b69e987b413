"""The backtest engine on a tiny generated landing zone (12 partitions x 300 rows, SEA with two
abrupt drifts): every strategy at two cadences plus the trigger cadence, real Lightning fits on CPU
of the bundled tabular workload built from its ``_target_`` configs, as any model's would be.
Checks the prequential order, the retrain counts, the compute sums, the freshness table, the
recommendation rule, determinism and the corrupted-period exclusion; the Slurm scripts are rendered
(the real submission is in tests/test_backtest_cli.py)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cl_hpc.backtest.conf import BacktestConf, Cell, backtest_conf, cells, excluded_partitions, workload_conf
from cl_hpc.backtest.history import History, load_history
from cl_hpc.backtest.replay import run_cell
from cl_hpc.backtest.report import build_report, cell_summary, freshness, recommend
from cl_hpc.backtest.slurm import render_jobs
from cl_hpc.config.ml import DataConf
from cl_hpc.errors import ConfigError, DataError

N, ROWS, WINDOW = 12, 300, 3
FIRST = WINDOW - 1  # the warm-up model is trained after this window
BATCH = 64
MODEL = workload_conf({"_target_": "cl_hpc.learn.tabular.TabularClassifier", "hidden": 16, "layers": 2},
                      {"_target_": "cl_hpc.learn.tabular.TabularData", "label_col": "y", "batch_size": BATCH},
                      {"max_epochs": 2})
CADENCES = (1, 3)
CONF = BacktestConf(cadences=[*CADENCES, "trigger"], strategy={"hybrid_every_k": 2})


def data_conf(root: Path) -> DataConf:
    return DataConf(landing_dir=str(root), n_partitions=N, rows_per_partition=ROWS, drift_at=[4, 8],
                    train_window=WINDOW, eval_window=1)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return load_history(data_conf(tmp_path_factory.mktemp("zone")))


@pytest.fixture(scope="module")
def grid(history: History) -> list[dict[str, Any]]:
    return [run_cell(history, cell, MODEL, CONF, WINDOW) for cell in cells(CONF)]


def by_name(grid: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in grid if r["cell"]["name"] == name)


# --- the replay -----------------------------------------------------------------------------------


def test_every_window_after_the_warm_up_is_scored_by_a_model_that_never_saw_it(grid: list[dict[str, Any]]) -> None:
    assert len(grid) == 9
    for result in grid:
        windows = [e["window"] for e in result["evaluations"]]
        assert windows == list(range(FIRST + 1, N)), result["cell"]["name"]
        trainings = {t["version"]: t for t in result["trainings"]}
        for e in result["evaluations"]:
            model = trainings[e["model"]]
            assert model["at"] == e["trained_at"] < e["window"]
            assert max(model["partitions"]) <= model["at"], "trained on a partition from after its training time"
            assert e["staleness"] == e["window"] - model["at"] - 1


@pytest.mark.parametrize("strategy", ["stateless", "stateful", "hybrid"])
@pytest.mark.parametrize("cadence", CADENCES)
def test_a_fixed_cadence_retrains_every_k_windows(grid: list[dict[str, Any]], cadence: int, strategy: str) -> None:
    result = by_name(grid, f"every-{cadence}/{strategy}")
    # windows FIRST+1 .. N-2 may retrain (a model trained after the last window would score nothing)
    assert [t["at"] for t in result["trainings"]] == list(range(FIRST, N - 1, cadence))
    assert cell_summary(result)["retrains"] == (N - 2 - FIRST) // cadence


def test_each_strategy_trains_as_decide_says(grid: list[dict[str, Any]]) -> None:
    modes = {s: [t["mode"] for t in by_name(grid, f"every-1/{s}")["trainings"]] for s in CONF.strategies}
    assert modes["stateless"] == ["stateless"] * 9  # after windows 2..10
    assert modes["stateful"] == ["stateless"] + ["stateful"] * 8
    # hybrid_every_k=2: two fine-tunes, then a model from scratch
    assert modes["hybrid"] == ["stateless", "stateful", "stateful"] * 3
    versions = [t["version"] for t in by_name(grid, "every-1/hybrid")["trainings"]]
    assert versions[:4] == ["1.0", "1.1", "1.2", "2.0"]


def test_a_fine_tune_learns_the_new_partitions_plus_a_replay_sample(grid: list[dict[str, Any]]) -> None:
    update = by_name(grid, "every-1/stateful")["trainings"][1]  # after window FIRST + 1
    assert update["new_partitions"] == [FIRST + 1]
    assert update["replay_partitions"] == [FIRST - 1, FIRST]  # the window's partitions it had seen
    assert update["replay_rows"] == round(0.2 * ROWS) and update["rows"] == ROWS + update["replay_rows"]
    # cadence 3 = train_window: every partition of the window is new, nothing left to replay
    later = by_name(grid, "every-3/stateful")["trainings"][1]
    assert later["new_partitions"] == [FIRST + 1, FIRST + 2, FIRST + 3] and later["replay_rows"] == 0


def test_a_trigger_driven_cell_retrains_only_when_a_trigger_fired(grid: list[dict[str, Any]],
                                                                   history: History) -> None:
    for strategy in CONF.strategies:
        for training in by_name(grid, f"trigger/{strategy}")["trainings"][1:]:
            assert training["why"].startswith("trigger: ") and training["triggers"]
            assert all(t["fired"] for t in training["triggers"])
    calm = BacktestConf(cadences=["trigger"], triggers={"performance": {"max_drop": 0.99, "detector": None},
                                                        "drift": {"enabled": False},
                                                        "time": {"enabled": False}, "volume": {"enabled": False}})
    result = run_cell(history, Cell(0, None, "stateful"), MODEL, calm, WINDOW)
    assert len(result["trainings"]) == 1, "no trigger can fire: only the warm-up model"


def shifted_zone(root: Path, shift_from: int) -> DataConf:
    """Own files (generator=none): the same labelling rule throughout, features moved by 3 sd from
    partition ``shift_from`` on, so the drift trigger (not the performance one) has something to see."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, start in enumerate(pd.date_range("2026-01-01", periods=N, freq="1h")):
        x = rng.normal(3.0 if i >= shift_from else 0.0, 1.0, size=(ROWS, 2))
        frame = pd.DataFrame({"ts": start, "x0": x[:, 0], "x1": x[:, 1], "y": (x[:, 0] > x[:, 1]).astype(int)})
        frame.to_parquet(root / f"part-{start:%Y%m%dT%H%M%S}.parquet", index=False)
    return DataConf(landing_dir=str(root), generator="none", train_window=WINDOW, eval_window=1)


def test_severe_feature_drift_makes_hybrid_retrain_from_scratch(tmp_path: Path) -> None:
    history = load_history(shifted_zone(tmp_path / "own", shift_from=6))
    conf = BacktestConf(cadences=["trigger"], triggers={"performance": {"enabled": False}, "time": {"enabled": False},
                                                        "volume": {"enabled": False}})
    result = run_cell(history, Cell(0, None, "hybrid"), MODEL, conf, WINDOW)
    # nothing fires before the shift; after it, until the training window holds shifted rows only
    assert [t["at"] for t in result["trainings"]] == [FIRST, 6, 7, 8]
    for t in result["trainings"][1:]:
        assert t["mode"] == "stateless" and "severe drift" in t["reason"]
        assert [(r["name"], r["severe"]) for r in t["triggers"]] == [("drift", True)]


def test_compute_is_flops_per_row_times_rows_seen_summed_over_trainings(grid: list[dict[str, Any]]) -> None:
    result = by_name(grid, "every-1/hybrid")
    # MLP 3 -> 16 -> 16 -> 2, per row: forward 2 x weights; backward 2x more, except the first layer,
    # whose input needs no gradient (PaLM's convention: matmuls only)
    first, rest = 3 * 16, 16 * 16 + 16 * 2
    assert result["flops_per_row"] == 4 * first + 6 * rest
    for t in result["trainings"]:
        assert t["flops"] == t["rows"] * t["epochs"] * result["flops_per_row"]
        assert t["steps"] == t["epochs"] * -(-t["rows"] // BATCH)
    summary = cell_summary(result)
    assert summary["flops"] == sum(t["flops"] for t in result["trainings"])
    assert summary["seconds"] == pytest.approx(sum(t["seconds"] for t in result["trainings"]))
    rarely, often = (cell_summary(by_name(grid, f"every-{k}/stateless")) for k in (3, 1))
    assert rarely["flops"] < often["flops"]


def test_the_same_inputs_give_the_same_numbers(history: History, grid: list[dict[str, Any]]) -> None:
    again = run_cell(history, Cell(5, 3, "hybrid"), MODEL, CONF, WINDOW)
    first = by_name(grid, "every-3/hybrid")
    assert again["evaluations"] == first["evaluations"]
    strip = [{k: v for k, v in t.items() if k != "seconds"} for t in again["trainings"]]
    assert strip == [{k: v for k, v in t.items() if k != "seconds"} for t in first["trainings"]]


# --- the report -----------------------------------------------------------------------------------


def test_freshness_has_one_row_per_staleness_the_cadences_produce(grid: list[dict[str, Any]]) -> None:
    for cadence in CADENCES:
        result = by_name(grid, f"every-{cadence}/stateless")
        assert {e["staleness"] for e in result["evaluations"]} == set(range(cadence))
    fixed = [r for r in grid if r["cell"]["cadence"] != "trigger"]
    rows = freshness(fixed)
    for strategy in ("stateless", "stateful", "hybrid", "all"):
        mine = [r for r in rows if r["strategy"] == strategy]
        assert [r["staleness"] for r in mine] == list(range(max(CADENCES)))
    total = sum(r["windows"] for r in rows if r["strategy"] == "all")
    assert total == sum(cell_summary(r)["windows_scored"] for r in fixed)


def summary(name: str, mean: float, flops: float, retrains: int, index: int) -> dict[str, Any]:
    return {"name": name, "mean_accuracy": mean, "flops": flops, "retrains": retrains, "index": index,
            "cadence": 1, "strategy": "stateless"}


def test_the_recommendation_is_the_cheapest_cell_within_the_tolerance_of_the_best() -> None:
    rows = [summary("best", 0.900, 100.0, 9, 0), summary("close", 0.8915, 20.0, 4, 1),
            summary("closer-same-cost", 0.899, 20.0, 2, 2), summary("cheap-but-worse", 0.890, 1.0, 1, 3)]
    pick = recommend(rows, tolerance=0.01)  # floor 0.891
    assert pick["cell"] == "closer-same-cost", pick["why"]  # 'close' costs the same but retrains more
    assert pick["floor"] == pytest.approx(0.891) and pick["best_cell"] == "best"
    assert recommend(rows, tolerance=0.0)["cell"] == "best"
    assert recommend(rows, tolerance=0.02)["cell"] == "cheap-but-worse"


def test_the_report_follows_the_rule_on_real_cells(grid: list[dict[str, Any]]) -> None:
    report = build_report(grid, CONF.tolerance, {"backtest": {}})
    summaries, pick = report["summary"], report["recommendation"]
    best = max(s["mean_accuracy"] for s in summaries)
    eligible = [s for s in summaries if s["mean_accuracy"] >= best * (1 - CONF.tolerance)]
    assert pick["cell"] in {s["name"] for s in eligible}
    assert next(s for s in summaries if s["name"] == pick["cell"])["flops"] == min(s["flops"] for s in eligible)
    assert "recommendation" in report["rules"] and "exclusion" in report["rules"]


# --- corrupted periods ----------------------------------------------------------------------------


STARTS = list(pd.date_range("2026-01-01", periods=N, freq="1h"))


@pytest.mark.parametrize("items,expected", [
    ([5], {5}), (["5-7"], {5, 6, 7}), ([0, "11"], {0, 11}),
    (["2026-01-01T05:00/2026-01-01T07:00"], {5, 6}),
    (["2026-01-01T05:30/2026-01-01T06:10"], {5, 6}),  # overlapping partitions count, whole
    (["2026-01-01T11:30/2026-01-02T00:00"], {11}),
])
def test_exclude_takes_indices_ranges_and_time_periods(items: list[Any], expected: set[int]) -> None:
    assert excluded_partitions(items, STARTS) == expected


@pytest.mark.parametrize("items,fragment", [
    ([12], "indices run 0..11"), (["7-5"], "low before high"), (["soon"], "not a partition index"),
    (["2026-01-01T07:00/2026-01-01T05:00"], "ends before it starts"),
])
def test_bad_exclude_items_say_what_is_valid(items: list[Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        excluded_partitions(items, STARTS)


def test_excluded_partitions_are_never_trained_on_and_scored_only_on_request(history: History) -> None:
    excluded = frozenset({5, 6})
    for score in (False, True):
        conf = BacktestConf(cadences=[1], score_excluded=score)
        result = run_cell(history, Cell(0, 1, "stateful"), MODEL, conf, WINDOW, excluded)
        assert all(not excluded & {*t["partitions"], *t["new_partitions"]} for t in result["trainings"])
        marked = {e["window"]: e for e in result["evaluations"] if e["excluded"]}
        assert set(marked) == excluded
        assert all(e["scored"] is score and (e["accuracy"] is not None) is score for e in marked.values())
        assert cell_summary(result)["windows_scored"] == N - WINDOW - (0 if score else 2)
    # at window 5 nothing new is usable: no retrain until window 7 brings a partition
    assert [t["at"] for t in result["trainings"]] == [2, 3, 4, 7, 8, 9, 10]


def test_an_excluded_window_fires_no_trigger(history: History) -> None:
    eager = BacktestConf(cadences=["trigger"], triggers={"performance": {"max_drop": 0.001, "min_labelled": 1},
                                                         "time": {"enabled": False}, "volume": {"enabled": False}})
    result = run_cell(history, Cell(0, None, "stateful"), MODEL, eager, WINDOW, frozenset({6}))
    assert 6 not in [t["at"] for t in result["trainings"]]


def test_a_partition_with_nulls_must_be_excluded(tmp_path: Path) -> None:
    data = data_conf(tmp_path / "zone")
    load_history(data)
    victim = sorted((tmp_path / "zone").glob("part-*.parquet"))[4]
    frame = pd.read_parquet(victim)
    frame.loc[3, frame.columns[1]] = np.nan
    frame.to_parquet(victim, index=False)
    history = load_history(data)
    with pytest.raises(DataError, match=r"partitions \['4 \(part-.*\)'\] hold null.*backtest.exclude=\[4\]"):
        run_cell(history, Cell(0, 4, "stateless"), MODEL, BacktestConf(), WINDOW)
    scored = BacktestConf(score_excluded=True)
    result = run_cell(history, Cell(0, 4, "stateless"), MODEL, scored, WINDOW, frozenset({4}))
    assert next(e for e in result["evaluations"] if e["window"] == 4)["accuracy"] is None  # unreadable: not scored


# --- config and Slurm -----------------------------------------------------------------------------


@pytest.mark.parametrize("params,fragment", [
    ({"cadences": [0]}, "integer >= 1"), ({"cadences": ["weekly"]}, "'trigger'"),
    ({"strategies": ["lazy"]}, "not one of"), ({"strategy": {"kind": "stateful"}}, "set per cell"),
    ({"strategy": {"every": 2}}, "unknown key"), ({"tolerance": 1.5}, "tolerance"),
    ({"cadense": [1]}, "unknown backtest key"), ({"triggers": {"performance": {"max_dorp": 0.1}}}, "max_dorp"),
    ({"triggers": {"performance": {"detector": "cusum"}}}, "detector='cusum'"), ({"drift": {"alfa": 0.1}}, "alfa"),
])
def test_bad_backtest_settings_are_rejected(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        backtest_conf(params)


def test_the_grid_is_one_job_array_plus_a_merge_that_waits_for_it(tmp_path: Path) -> None:
    conf = BacktestConf(cadences=[1, "trigger"], threads=2)
    n = len(cells(conf))
    array, merge = render_jobs(conf, n, tmp_path, ["model.hidden=16", "backtest.exclude=[1, 2]"],
                               {"partition": "debug", "setup": ["module load python"]})
    assert f"#SBATCH --array={','.join(map(str, range(n)))}" in array and "#SBATCH --partition=debug" in array
    assert "#SBATCH --cpus-per-task=2" in array and "module load python" in array
    command = array.strip().splitlines()[-1]
    assert command.startswith("exec ") and "--only-cell $SLURM_ARRAY_TASK_ID" in command
    assert shlex.split(command)[-2:] == ["model.hidden=16", "backtest.exclude=[1, 2]"]
    assert "--dependency='afterok:{array_job}'" in merge and "--merge" in merge and "--array" not in merge


# --- any model: a language model on a label-less token stream ----------------------------------------


def test_a_language_model_is_replayed_on_its_loss_where_lower_is_better(tmp_path: Path) -> None:
    data = DataConf(landing_dir=str(tmp_path / "tokens"), generator="tokens", label_col=None, noise=0.0,
                    generator_params={"vocab_size": 16, "seq_len": 8, "branching": 2}, concepts=[0, 1],
                    drift_at=[4], n_partitions=7, rows_per_partition=128, train_window=2, eval_window=1)
    gpt = workload_conf({"_target_": "cl_hpc.learn.gpt.GPT", "d_model": 16, "n_layers": 1, "n_heads": 2, "lr": 0.01},
                        {"_target_": "cl_hpc.learn.tokens.TokenData", "vocab_size": 16, "batch_size": 32},
                        {"max_epochs": 3})
    history = load_history(data)
    assert history.label is None and history.features[0] == "tok_000"
    conf = BacktestConf(cadences=[1, "trigger"], strategies=["stateful"],
                        triggers={"time": {"enabled": False}, "volume": {"enabled": False}, "drift": {"enabled": False},
                                  "performance": {"max_drop": 0.5, "detector": None, "min_labelled": 50}})
    results = [run_cell(history, cell, gpt, conf, 2) for cell in cells(conf)]
    every, triggered = results
    assert (every["metric"], every["direction"]) == ("loss", "lower")
    assert [t["mode"] for t in every["trainings"]] == ["stateless"] + ["stateful"] * 4
    assert all(e["loss"] > 0 for e in every["evaluations"]) and "train_loss" in every["trainings"][0]
    assert every["flops_per_row"] > 0  # the model's analytic transformer FLOPs
    # the chain switches at partition 4: the loss rises (it falls elsewhere), so the performance trigger
    # (lower is better) fires there alone
    assert [(t["at"], t["why"]) for t in triggered["trainings"][1:]] == [(4, "trigger: performance")]
    assert triggered["trainings"][1]["triggers"][0]["value"] > 0.5
    summary = cell_summary(every)
    losses = [e["loss"] for e in every["evaluations"]]
    assert summary["worst_loss"] == max(losses) and summary["mean_loss"] == pytest.approx(np.mean(losses))
    report = build_report(results, 0.01, {})
    assert "mean loss <=" in report["recommendation"]["why"] and report["metric"] == "loss"
    best = min(s["mean_loss"] for s in report["summary"])
    assert report["recommendation"]["floor"] == pytest.approx(best * 1.01)
