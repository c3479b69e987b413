"""The data module of the language-model workload: fixed-length token sequences, no label.

Rows: one integer column per position, named ``<token_prefix><position>`` (``tok_000`` ..
``tok_032`` for 32 + 1 tokens; cl_hpc/data/tokens.py writes them), plus the timestamp column. A
training row holds ``seq_len + 1`` tokens: the model reads positions ``[:-1]`` and predicts
``[1:]``. A request to the server carries the ``seq_len`` context columns only (``tok_000`` ..
``tok_031``): that is the input signature, one int64 column per position, so a request is a plain
table like any other model's; the model answers the token that follows.

Preprocessing state (versioned with the checkpoint, loaded with ``weights_only=True``): the
vocabulary size, the token column names, and the unigram counts of every token the model was
trained on (a stateful update adds the new rows' counts). The counts make the cold-start baseline:
an add-one-smoothed unigram predictor, the gate's bar before any champion.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.base import LoopDataModule
from cl_hpc.learn.contract import CannotContinue, Spec


class TokenData(LoopDataModule):
    """Token sequences as (inputs [rows, seq_len], targets [rows, seq_len]) LongTensors."""

    def __init__(self, vocab_size: int, token_prefix: str = "tok_", timestamp_col: str = "ts",
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ConfigError(f"datamodule (TokenData): vocab_size={vocab_size!r} must be an integer >= 2 "
                              f"(conf/model/gpt.yaml; it must match data.generator_params.vocab_size)")
        if not token_prefix:
            raise ConfigError("datamodule (TokenData): token_prefix must not be empty (default 'tok_')")
        self.vocab_size, self.configured_vocab = vocab_size, vocab_size
        self.token_prefix, self.timestamp_col = token_prefix, timestamp_col
        self.columns: list[str] = []  # the training rows' token columns, in position order
        self.counts = torch.zeros(vocab_size, dtype=torch.int64)  # unigram counts of the training tokens

    @property
    def seq_len(self) -> int:
        """Tokens the model reads per row (a training row stores one more)."""
        if not self.columns:
            raise RuntimeError("TokenData: no state yet; call fit_state or load_state_dict first")
        return len(self.columns) - 1

    # ---- state ------------------------------------------------------------------------------

    def fit_state(self, frame: pd.DataFrame) -> None:
        columns = self.token_columns(frame)
        if len(columns) < 2:
            raise DataError(f"the training rows have {len(columns)} token column(s) {columns}; a row needs at least "
                            f"2 ({self.token_prefix}000, {self.token_prefix}001: one input and its next token)")
        self.vocab_size, self.columns = self.configured_vocab, columns  # a fresh fit: the config's vocabulary
        self.counts = self._count(frame)

    def update_state(self, frame: pd.DataFrame) -> None:
        if self.vocab_size != self.configured_vocab:
            raise CannotContinue(f"has a vocabulary of {self.vocab_size} tokens, datamodule.vocab_size is now "
                                 f"{self.configured_vocab}")
        columns = self.token_columns(frame)
        if columns != self.columns:
            raise CannotContinue(f"was trained on rows of {len(self.columns)} token columns "
                                 f"({_span(self.columns)}), the new rows have {len(columns)} ({_span(columns)})")
        self.counts = self.counts + self._count(frame)

    def state_dict(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "columns": list(self.columns), "counts": self.counts.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The stored vocabulary is the one the weights were trained with: it wins over the config.
        self.vocab_size = int(state_dict["vocab_size"])
        self.columns = [str(c) for c in state_dict["columns"]]
        self.counts = torch.as_tensor(state_dict["counts"], dtype=torch.int64).clone()

    # ---- the contract -----------------------------------------------------------------------

    def model_args(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len}

    def input_signature(self) -> list[Spec]:
        """The context a request carries: the first seq_len token columns, int64 each."""
        return [Spec(name, "int64") for name in self.columns[:-1]] if self.columns else self._no_state()

    def to_batch(self, frame: pd.DataFrame) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Training rows (seq_len + 1 tokens) give (inputs, targets); a request (seq_len tokens) gives
        (inputs, None). A token id outside [0, vocab_size) is a DataError naming its column."""
        tokens, has_targets = self._tokens(frame)
        if not has_targets:
            return torch.from_numpy(tokens), None
        return torch.from_numpy(tokens[:, :-1].copy()), torch.from_numpy(tokens[:, 1:].copy())

    def baseline_rows(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The add-one-smoothed unigram predictor of the training tokens: its per-row loss (nats) and
        token accuracy (it always predicts the most frequent token)."""
        tokens, has_targets = self._tokens(frame)
        if not has_targets:
            raise DataError(f"baseline rows need targets: rows of {len(self.columns)} token columns, got "
                            f"{tokens.shape[1]}")
        counts = self.counts.numpy().astype(np.float64)
        logp = np.log((counts + 1.0) / (counts.sum() + len(counts)))
        targets = tokens[:, 1:]
        return {"loss": -logp[targets].mean(axis=1),
                "token_accuracy": (targets == int(counts.argmax())).mean(axis=1).astype(np.float64)}

    # ---- rows -------------------------------------------------------------------------------

    def token_columns(self, frame: pd.DataFrame) -> list[str]:
        """The frame's ``<prefix><position>`` columns in position order; positions must run 0, 1, 2, ..."""
        found: dict[int, str] = {}
        for name in map(str, frame.columns):
            suffix = name[len(self.token_prefix):]
            if name.startswith(self.token_prefix) and suffix.isdigit():
                found[int(suffix)] = name
        positions = sorted(found)
        if positions != list(range(len(positions))):
            gaps = sorted(set(range(max(positions, default=-1) + 1)) - set(positions))
            raise DataError(f"token columns must be {self.token_prefix}<position> for positions 0, 1, 2, ... without "
                            f"gaps; positions {gaps[:10]} are missing (columns: {list(frame.columns)[:12]}...)")
        return [found[p] for p in positions]

    def _tokens(self, frame: pd.DataFrame) -> tuple[np.ndarray, bool]:
        """Token ids [rows, columns] as int64, checked, and whether they include the targets' column."""
        columns = self.token_columns(frame)
        if not self.columns:
            self._no_state()
        if columns not in (self.columns, self.columns[:-1]):
            raise DataError(f"rows have token columns {_span(columns)}; the model takes {_span(self.columns[:-1])} "
                            f"(a request) or {_span(self.columns)} (rows with their next token)")
        return self._checked(frame, columns), columns == self.columns

    def _checked(self, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
        values = frame[columns]
        not_int = [c for c in columns if not pd.api.types.is_integer_dtype(values[c].dtype)]
        if not_int:
            raise DataError(f"token column(s) {not_int[:5]} hold {values[not_int[0]].dtype} values; token ids are "
                            f"integers in [0, {self.vocab_size})")
        missing = values.isna().any()
        if missing.any():
            raise DataError(f"token column(s) {list(missing[missing].index)[:5]} hold nulls; every position of a "
                            f"row needs a token id")
        tokens = values.to_numpy(dtype=np.int64, copy=True)  # writable: torch.from_numpy shares it
        bad = (tokens < 0) | (tokens >= self.vocab_size)
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise DataError(f"token column {columns[col]!r} holds {int(tokens[row, col])} (row {row}, "
                            f"{int(bad.sum())} bad values in all); token ids must be in [0, {self.vocab_size}): "
                            f"vocab_size {self.vocab_size} (datamodule.vocab_size, data.generator_params.vocab_size)")
        return tokens

    def _count(self, frame: pd.DataFrame) -> torch.Tensor:
        tokens = self._checked(frame, self.columns)
        return torch.from_numpy(np.bincount(tokens.ravel(), minlength=self.vocab_size).astype(np.int64))

    def _no_state(self) -> Any:
        raise RuntimeError("TokenData: no state yet; call fit_state or load_state_dict first")


def _span(columns: list[str]) -> str:
    return f"{columns[0]} .. {columns[-1]}" if columns else "none"
