"""A drifting token stream for the language-model workload (``data.generator: tokens``).

Each concept is a sparse random Markov chain over the vocabulary: every token has ``branching``
possible successors (drawn with replacement) with Dirichlet(1) probabilities, so the next token is
far more predictable from the current one (a bigram model reaches about log(branching) nats) than
from the token frequencies alone (about log(vocab_size) nats). ``data.noise`` is the share of
tokens replaced by a uniformly drawn one. A concept's chain depends only on ``data.seed`` and its
number in ``data.concepts``, so concept 1 is the same chain in every zone of the same seed.

A partition holds ``rows_per_partition`` sequences of ``seq_len + 1`` tokens, one integer column
per position (``tok_000`` .. ``tok_<seq_len>``, zero-padded to sort in order) after the timestamp
column, and no label: a model reads positions ``[:-1]`` and predicts ``[1:]``. Each partition is
drawn from its own seed (``data.seed`` and its index), so the files are the same whichever slice
of the stream is generated, and appending partitions later leaves the earlier ones untouched.

Drift follows ``data.drift_at`` as SEA's does: concept k+1 takes over at partition ``drift_at[k]``,
exactly at its first row by default, or blended over ``data.drift_width`` rows with river's
ConceptDriftStream probability (a row is of the new concept with chance sigmoid(4 (row - start) / width)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cl_hpc.config.ml import DataConf, generator_params
from cl_hpc.errors import ConfigError

TOKEN_PREFIX = "tok_"
DEFAULTS: dict[str, int] = {"vocab_size": 256, "seq_len": 32, "branching": 4}
# Salts of the seed sequences, so that chains and partitions never share a random stream.
_CHAIN_SALT, _ROWS_SALT = 7919, 104729


@dataclass(frozen=True)
class TokenParams:
    """``data.generator_params`` of the token stream."""

    vocab_size: int = DEFAULTS["vocab_size"]  # token ids are 0 .. vocab_size - 1
    seq_len: int = DEFAULTS["seq_len"]  # tokens a model reads per row; a row stores seq_len + 1
    branching: int = DEFAULTS["branching"]  # successors per token in a concept's Markov chain


@dataclass(frozen=True)
class Chain:
    """One concept: successors [vocab, branching] and their cumulative probabilities."""

    successors: np.ndarray
    cumulative: np.ndarray

    def bigram(self) -> np.ndarray:
        """The transition matrix [vocab, vocab] (noise left out): for tests and inspection."""
        vocab = len(self.successors)
        probs = np.diff(self.cumulative, axis=1, prepend=0.0)
        out = np.zeros((vocab, vocab))
        np.add.at(out, (np.repeat(np.arange(vocab), self.successors.shape[1]), self.successors.ravel()),
                  probs.ravel())
        return out


def token_params(conf: DataConf) -> TokenParams:
    """The stream's parameters from ``data.generator_params``; unknown keys and bad values are ConfigErrors."""
    given = generator_params(conf, DEFAULTS, "token stream", "conf/data/tokens.yaml")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"data.generator_params.{key}={value!r} must be an integer >= 1")
    params = TokenParams(**{**DEFAULTS, **given})
    if params.vocab_size < 2:
        raise ConfigError(f"data.generator_params.vocab_size={params.vocab_size} must be >= 2")
    if any(c < 0 for c in conf.concepts):
        raise ConfigError(f"data.concepts={conf.concepts}: a token-stream concept is a chain seed, an integer >= 0")
    return params


def token_columns(seq_len: int, prefix: str = TOKEN_PREFIX) -> list[str]:
    """The ``seq_len + 1`` column names of a row, zero-padded so that name order is position order."""
    width = max(3, len(str(seq_len)))
    return [f"{prefix}{i:0{width}d}" for i in range(seq_len + 1)]


def chain(conf: DataConf, concept: int) -> Chain:
    """The Markov chain of one concept (a number of ``data.concepts``)."""
    p = token_params(conf)
    rng = np.random.default_rng([conf.seed, _CHAIN_SALT, concept])
    successors = rng.integers(0, p.vocab_size, (p.vocab_size, p.branching))
    cumulative = np.cumsum(rng.dirichlet(np.ones(p.branching), size=p.vocab_size), axis=1)
    cumulative[:, -1] = 1.0  # rounding must never leave a draw above the last successor
    return Chain(successors, cumulative)


def token_frame(conf: DataConf, first: int = 0, count: int | None = None) -> pd.DataFrame:
    """Partitions ``first .. first + count - 1`` (default: up to ``n_partitions``) with timestamps."""
    count = conf.n_partitions - first if count is None else count
    if count < 1:
        raise ConfigError(f"no rows to generate for partitions {first}..{first + count - 1}; count must be >= 1")
    p = token_params(conf)
    chains = [chain(conf, c) for c in conf.concepts]
    rows = np.concatenate([_partition(conf, p, chains, index) for index in range(first, first + count)])
    frame = pd.DataFrame(rows, columns=token_columns(p.seq_len))
    if conf.timestamp_col in frame.columns:
        raise ConfigError(f"data.timestamp_col={conf.timestamp_col!r} clashes with a token column")
    per = conf.rows_per_partition
    step = pd.Timedelta(conf.freq) / per
    begin = pd.Timestamp(conf.start) + first * per * step
    frame.insert(0, conf.timestamp_col, pd.date_range(begin, periods=len(frame), freq=step))
    return frame


def _partition(conf: DataConf, p: TokenParams, chains: list[Chain], index: int) -> np.ndarray:
    """The token rows [rows_per_partition, seq_len + 1] of partition ``index``, from its own seed."""
    n = conf.rows_per_partition
    rng = np.random.default_rng([conf.seed, _ROWS_SALT, index])
    concept = _row_concepts(conf, index, rng)
    successors = np.stack([c.successors for c in chains])
    cumulative = np.stack([c.cumulative for c in chains])
    out = np.empty((n, p.seq_len + 1), dtype=np.int64)
    out[:, 0] = rng.integers(0, p.vocab_size, n)
    for t in range(1, p.seq_len + 1):
        current, draw = out[:, t - 1], rng.random(n)
        pick = (cumulative[concept, current] < draw[:, None]).sum(axis=1)
        follow = successors[concept, current, np.minimum(pick, p.branching - 1)]
        # Both draws are taken whatever the noise, so the noise setting never shifts the other draws.
        noisy, uniform = rng.random(n) < conf.noise, rng.integers(0, p.vocab_size, n)
        out[:, t] = np.where(noisy, uniform, follow)
    return out


def _row_concepts(conf: DataConf, index: int, rng: np.random.Generator) -> np.ndarray:
    """Index into ``conf.concepts`` of each row of partition ``index`` (the latest drift wins, as
    river's nested ConceptDriftStream has it)."""
    per = conf.rows_per_partition
    position = index * per + np.arange(per)
    concept = np.zeros(per, dtype=np.int64)
    for k, start in enumerate(conf.drift_at, start=1):
        if conf.drift_width is None:
            moved = position >= start * per
        else:
            z = np.clip(-4.0 * (position - start * per) / conf.drift_width, -700.0, 700.0)
            moved = rng.random(per) < 1.0 / (1.0 + np.exp(z))
        concept = np.where(moved, k, concept)
    return concept

