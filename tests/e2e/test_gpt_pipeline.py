"""The GPT workload through the continual loop at its tiny CPU size, in local mode: `pipeline=continual
model=gpt data=tokens`. Bootstrap 1.0 on the drifting token stream; then partitions of the new concept
arrive and a stateful 1.1 is fine-tuned from 1.0. The gate judges the per-token loss, lower is better,
and the train task's profile carries the MFU inputs (the analytic transformer FLOPs) and a stall fraction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Launcher

pytestmark = pytest.mark.e2e

# conf/data/tokens.yaml (sequences of 32 + 1 tokens, train 8 and eval 4 partitions) at 128 sequences a
# partition, with one drift: concept 1 from partition 10. 1.0 trains on 0-7 (concept 0) and is judged on
# 8-11 against the unigram baseline; 1.1 fine-tunes on 8-11 (new to it, two of them of concept 1) plus a
# replay sample, and is judged on 12-15 (concept 1) against 1.0. The forgetting guard is in the metric's
# units (nats): after a real concept change the old chain's loss rises by design, so it is loosened.
DATA = ["data.rows_per_partition=128", "data.concepts=[0,1]", "data.drift_at=[10]",
        "pipeline.tasks.compare.params.gate.max_forgetting=1.0"]


def launch(launcher: Launcher, landing: Path, partitions: int) -> tuple[Path, dict[str, dict[str, Any]]]:
    result = launcher("pipeline=continual", "model=gpt", "data=tokens", f"data.landing_dir={landing}",
                      f"data.n_partitions={partitions}", *DATA, timeout=600)
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    return run, {name: result.outputs(name, run) for name in ("ingest", "train", "compare", "promote")}


def test_gpt_bootstrap_then_stateful_update_gated_on_loss(launcher: Launcher, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    run, first = launch(launcher, landing, 12)
    assert first["ingest"]["label_col"] is None and first["ingest"]["train_labels"] == {}
    assert first["train"]["model_class"] == "cl_hpc.learn.gpt.GPT" and first["train"]["strategy"] == "stateless"
    assert first["train"]["init_args"]["vocab_size"] == 256 and first["train"]["init_args"]["seq_len"] == 32
    assert first["compare"]["metric"] == "loss" and first["compare"]["direction"] == "lower", first["compare"]
    assert first["promote"]["version"] == "1.0" and first["promote"]["promoted"], first["promote"]

    profile = json.loads((run / "tasks" / "train" / "profile.json").read_text())
    compute, steps = profile["compute"], profile["steps"]
    assert compute["flops_method"] == "analytic-transformer" and compute["flops_per_step"] > 0
    assert compute["achieved_flops_per_s"] > 0 and compute["mfu_ceiling"] is not None  # CPU: vs the matmul ceiling
    assert 0.0 <= profile["stall"]["fraction"] <= 1.0 and steps["stall_fraction"] == profile["stall"]["fraction"]

    _, second = launch(launcher, landing, 16)  # four partitions arrived, two of them of the new concept
    train, compare, promote = second["train"], second["compare"], second["promote"]
    assert train["strategy"] == "stateful" and train["parent"] == "1.0", train["strategy_reason"]
    assert compare["metric"] == "loss" and compare["direction"] == "lower"
    assert compare["challenger_metrics"]["loss"] < compare["champion_metrics"]["loss"], compare
    assert compare["challenger_metrics"]["perplexity"] < compare["champion_metrics"]["perplexity"]
    assert promote["version"] == "1.1" and promote["promoted"], promote["reasons"]
