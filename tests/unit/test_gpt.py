"""The GPT workload (cl_hpc/learn/gpt.py) with its data module, fitted by a real Lightning Trainer on CPU."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from cl_hpc.config.ml import data_conf
from cl_hpc.data.tokens import token_frame
from cl_hpc.errors import ConfigError
from cl_hpc.learn.contract import Direction, directions, signature_of
from cl_hpc.learn.gpt import GPT, transformer_spec_of
from cl_hpc.learn.tokens import TokenData
from cl_hpc.profile.flops import flops_per_step, transformer_flops_per_token

SIZE = {"d_model": 32, "n_layers": 2, "n_heads": 4, "lr": 0.01, "weight_decay": 0.0}


def stream(root: Path) -> pd.DataFrame:
    """One concept, vocab 32, 12 + 1 tokens a row: 4 partitions of 64 rows."""
    conf = data_conf({"landing_dir": str(root), "generator": "tokens", "label_col": None, "noise": 0.05,
                      "generator_params": {"vocab_size": 32, "seq_len": 12, "branching": 2}, "concepts": [0],
                      "drift_at": [], "n_partitions": 4, "rows_per_partition": 64, "train_window": 3,
                      "eval_window": 1})
    return token_frame(conf)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    frame = stream(tmp_path_factory.mktemp("tokens"))
    train, held_out = frame.iloc[:192], frame.iloc[192:]
    data = TokenData(vocab_size=32, batch_size=16, seed=0)
    data.fit_state(train)
    data.use(train)
    pl.seed_everything(0, verbose=False)
    model = GPT(**data.model_args(), **SIZE)
    inputs, targets = data.to_batch(held_out)
    before = model.evaluate_batch(inputs, targets)["loss"].mean().item()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data.train_dataloader())
    model.eval()
    return {"model": model, "data": data, "held_out": held_out, "inputs": inputs, "targets": targets,
            "before": before, "steps": trainer.global_step}


def test_a_short_cpu_fit_beats_the_unigram_baseline(fitted: dict[str, Any]) -> None:
    model, data = fitted["model"], fitted["data"]
    assert fitted["steps"] == 24  # 2 epochs of 192 rows in batches of 16
    assert fitted["before"] == pytest.approx(math.log(32), abs=0.3)  # an untrained model is near uniform
    per_row = {k: v.numpy() for k, v in model.evaluate_batch(fitted["inputs"], fitted["targets"]).items()}
    scores = model.summarize(per_row)
    baseline = data.baseline_rows(fitted["held_out"])
    assert scores["loss"] < baseline["loss"].mean() - 0.5, (scores, baseline["loss"].mean())
    assert scores["token_accuracy"] > baseline["token_accuracy"].mean()
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))


def test_outputs_match_the_signature(fitted: dict[str, Any]) -> None:
    model, data, inputs = fitted["model"], fitted["data"], fitted["inputs"]
    signature = signature_of(model, data)
    assert [s.name for s in signature.inputs] == [f"tok_{i:03d}" for i in range(12)]
    out = model.predict_batch(inputs)
    assert [(s.name, s.dtype, s.shape) for s in signature.outputs] == [
        (name, str(t.numpy().dtype), tuple(t.shape[1:])) for name, t in out.items()]
    prob = out["next_token_prob"]
    assert out["next_token"].shape == prob.shape == (64,) and bool(((prob > 0) & (prob <= 1)).all())
    logits = model(inputs)[:, -1]
    assert torch.equal(out["next_token"], logits.argmax(dim=-1))
    request, none = data.to_batch(fitted["held_out"][[s.name for s in signature.inputs]])
    assert none is None and torch.equal(model.predict_batch(request)["next_token"], out["next_token"])
    shorter = model.predict_batch(inputs[:, :5])  # a causal model also answers a shorter context
    assert shorter["next_token"].shape == (64,)
    rows = model.evaluate_batch(inputs, fitted["targets"])
    assert set(rows) <= set(model.metrics) and all(v.shape == (64,) for v in rows.values())


def test_metrics_say_which_way_is_better(fitted: dict[str, Any]) -> None:
    assert directions(fitted["model"]) == {"loss": Direction.LOWER, "perplexity": Direction.LOWER,
                                           "token_accuracy": Direction.HIGHER}
    assert next(iter(GPT.metrics)) == "loss"  # the primary metric: the gate's when none is configured


def test_flops_are_analytic_from_the_transformer_spec(fitted: dict[str, Any]) -> None:
    model, inputs, targets = fitted["model"], fitted["inputs"], fitted["targets"]
    spec = model.transformer_spec
    assert spec == transformer_spec_of(model) and (spec.seq_len, spec.head_dim, spec.n_layers) == (12, 8, 2)
    assert spec.n_params - spec.non_embedding_params == 32 * 32 + 12 * 32  # token + position embeddings
    step = flops_per_step(model, (inputs[:16], targets[:16]))
    assert step.method == "analytic-transformer" and step.batch_size == 16
    assert step.flops == transformer_flops_per_token(spec) * 16 * 12

    class Counted(GPT):
        transformer_spec = None  # type: ignore[assignment]

    counted = Counted(vocab_size=32, seq_len=12, **SIZE)
    counted.load_state_dict(model.state_dict())
    check = flops_per_step(counted, (inputs[:16], targets[:16]))
    assert check.method == "counted" and check.flops == pytest.approx(step.flops, rel=0.05)


def test_weights_load_back_with_weights_only(fitted: dict[str, Any]) -> None:
    model, inputs = fitted["model"], fitted["inputs"]
    assert "mask" not in model.state_dict()  # derived from seq_len, never stored
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = GPT(vocab_size=32, seq_len=12, **SIZE)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    assert torch.equal(fresh.predict_batch(inputs)["next_token"], model.predict_batch(inputs)["next_token"])


def test_evaluation_bounds_its_memory_by_chunks(fitted: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    model, inputs, targets = fitted["model"], fitted["inputs"], fitted["targets"]
    whole = model.evaluate_batch(inputs, targets)
    monkeypatch.setattr("cl_hpc.learn.gpt._LOGITS_PER_CHUNK", 12 * 32 * 5)  # 5 rows a forward
    chunked = model.evaluate_batch(inputs, targets)
    assert all(np.allclose(whole[k].numpy(), chunked[k].numpy(), atol=1e-5) for k in whole)


@pytest.mark.parametrize("args, match", [
    ({"d_model": 30, "n_heads": 4}, "multiple of n_heads"),
    ({"lr": 0.0}, "lr=0.0"),
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"seq_len": 0}, "seq_len=0"),
])
def test_bad_init_args_are_config_errors(args: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GPT(**{"vocab_size": 32, "seq_len": 12, **SIZE, **args})
