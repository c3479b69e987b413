"""A drifting, entity-keyed stream of simulated users (``data.generator: users``) for the feature store.

Each user has persistent latent traits, drawn once from ``data.seed`` (one random stream per trait, so
user u keeps the same traits in every partition, and when ``n_users`` grows): an activity rate
(lognormal, heavy-tailed: a few users make most of the events), an engagement level and a spending
level (standard normal), and a pace. In each partition a share ``burst_share`` of the users is in a
burst, ``burst_factor`` times as active as usual for that hour, so a user's last hour and last day
differ. A row is one event of one user:

- ``ts``: a timestamp in the partition's span [start + i * freq, start + (i + 1) * freq), sorted,
  at microsecond resolution; ``user_id`` (int64): the user, drawn in proportion to their activity;
- ``amount`` (float64, >= 0, rounded to cents): lognormal around the user's spending level;
- ``duration`` (float64 seconds, > 0): lognormal around the user's pace and engagement;
- ``clicked`` (int64 0/1): Bernoulli(sigmoid(1.5 * engagement));
- ``data.label_col`` (int64 0/1, ``y`` in conf/data/users.yaml): whether the user converts.

The label reads the traits, never the row: y ~ Bernoulli(sigmoid(w . z)) with z = (engagement,
spending, burst standardised over events) of the user at that hour, and w = (2.0, 1.5, 1.0) signed by
the concept. A single row shows the traits only as one noisy draw, so a user's windowed aggregates
(click rate and mean amount over 24h, event count over 1h against 24h) predict y clearly better than
the row's own columns: on conf/data/users.yaml with one concept, a logistic regression on the 1h and
24h aggregates of conf/features/user_activity.yaml reaches a ROC AUC of about 0.82, on the row's
amount, duration and clicked about 0.70. ``data.noise`` is the share of labels flipped.

Concepts (``data.concepts``, integers 0..7) flip the label's weights: bit 0 flips engagement's sign,
bit 1 spending's, bit 2 the burst's, so any two concepts disagree on at least one weight and a model
fitted before a drift degrades after it. Drift follows ``data.drift_at`` / ``data.drift_width`` as the
token stream's does (cl_hpc/data/tokens.py): concept k+1 takes over at partition ``drift_at[k]``.

A partition holds exactly ``rows_per_partition`` events and is drawn from its own seed (``data.seed``
and its index), so any slice of the stream gives the same files and appending leaves earlier ones
untouched. ``data.generator_params`` (defaults in :data:`DEFAULTS`):

- ``n_users`` (int >= 1): users, ids 0 .. n_users - 1;
- ``burst_share`` (0..1): chance that a user is in a burst in a given partition;
- ``burst_factor`` (>= 1): how many times more active a user is during a burst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cl_hpc.config.ml import DataConf, generator_params
from cl_hpc.data.tokens import _row_concepts  # the same drift schedule as the token stream
from cl_hpc.errors import ConfigError

COLUMNS = ("user_id", "amount", "duration", "clicked")  # after the timestamp, before the label
DEFAULTS: dict[str, float] = {"n_users": 2000, "burst_share": 0.1, "burst_factor": 8.0}
# Label weights of (engagement, spending, burst) under concept 0; a concept's bits flip their signs.
WEIGHTS = np.array([2.0, 1.5, 1.0])
N_CONCEPTS = 2 ** len(WEIGHTS)
_ACTIVITY_SIGMA = 1.0  # lognormal spread of activity: the top 10% of users make ~40% of the events
# Salts of the seed sequences, so that traits and partitions never share a random stream.
_TRAIT_SALT, _ROWS_SALT = 15485863, 32452843
_TRAITS = ("activity", "engagement", "spending", "pace")


@dataclass(frozen=True)
class UserParams:
    """``data.generator_params`` of the users stream."""

    n_users: int = int(DEFAULTS["n_users"])
    burst_share: float = DEFAULTS["burst_share"]
    burst_factor: float = DEFAULTS["burst_factor"]


@dataclass(frozen=True)
class Traits:
    """Per-user latent traits, each an array of n_users."""

    activity: np.ndarray
    engagement: np.ndarray
    spending: np.ndarray
    pace: np.ndarray


def users_params(conf: DataConf) -> UserParams:
    """The stream's parameters from ``data.generator_params``; unknown keys and bad values are ConfigErrors."""
    given = generator_params(conf, DEFAULTS, "users stream", "conf/data/users.yaml, cl_hpc/data/users.py")
    n_users = given.get("n_users", DEFAULTS["n_users"])
    _need(isinstance(n_users, int) and not isinstance(n_users, bool) and n_users >= 1,
          f"data.generator_params.n_users={n_users!r} must be an integer >= 1")
    share = _number(given, "burst_share")
    _need(0.0 <= share <= 1.0, f"data.generator_params.burst_share={share!r} must be in [0, 1]")
    factor = _number(given, "burst_factor")
    _need(factor >= 1.0, f"data.generator_params.burst_factor={factor!r} must be >= 1")
    _check_concepts_and_columns(conf)
    return UserParams(int(n_users), share, factor)


def _check_concepts_and_columns(conf: DataConf) -> None:
    bad = [c for c in conf.concepts if not 0 <= c < N_CONCEPTS]
    _need(not bad, f"data.concepts={conf.concepts}: a users-stream concept is 0..{N_CONCEPTS - 1} "
                   f"(bits flip the label weights of engagement, spending, burst)")
    clash = {conf.timestamp_col, conf.label_col} & set(COLUMNS)
    _need(not clash and conf.timestamp_col != conf.label_col,
          f"data.timestamp_col={conf.timestamp_col!r} / data.label_col={conf.label_col!r} clash with the "
          f"users stream's columns {list(COLUMNS)} or with each other")


def _number(given: dict[str, object], key: str) -> float:
    value = given.get(key, DEFAULTS[key])
    _need(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
          f"data.generator_params.{key}={value!r} must be a number")
    return float(value)  # type: ignore[arg-type]


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def traits(conf: DataConf, n_users: int) -> Traits:
    """The users' latent traits: they depend only on ``data.seed`` (a user's do not change with n_users)."""
    draws = {name: np.random.default_rng([conf.seed, _TRAIT_SALT, k]).standard_normal(n_users)
             for k, name in enumerate(_TRAITS)}
    draws["activity"] = np.exp(_ACTIVITY_SIGMA * draws["activity"])
    return Traits(**draws)


def concept_signs(concept: int) -> np.ndarray:
    """+1/-1 per label weight: bit j of the concept flips weight j."""
    return np.where((concept >> np.arange(len(WEIGHTS))) & 1, -1.0, 1.0)


def users_frame(conf: DataConf, first: int = 0, count: int | None = None) -> pd.DataFrame:
    """Partitions ``first .. first + count - 1`` (default: up to ``n_partitions``) of the users stream."""
    count = conf.n_partitions - first if count is None else count
    if count < 1:
        raise ConfigError(f"no rows to generate for partitions {first}..{first + count - 1}; count must be >= 1")
    p = users_params(conf)
    people = traits(conf, p.n_users)
    parts = [_partition(conf, p, people, index) for index in range(first, first + count)]
    return pd.concat(parts, ignore_index=True)


def _partition(conf: DataConf, p: UserParams, people: Traits, index: int) -> pd.DataFrame:
    """The ``rows_per_partition`` events of partition ``index``, from its own seed. Every draw is taken
    whatever the settings (noise, drift), so one setting never shifts another's draws."""
    n = conf.rows_per_partition
    rng = np.random.default_rng([conf.seed, _ROWS_SALT, index])
    burst = rng.random(p.n_users) < p.burst_share
    rate = people.activity * np.where(burst, p.burst_factor, 1.0)
    user = rng.choice(p.n_users, size=n, p=rate / rate.sum())
    ts = _timestamps(conf, index, rng)
    concept = np.asarray(conf.concepts)[_row_concepts(conf, index, rng)]
    frame = pd.DataFrame({conf.timestamp_col: ts, **_behaviour(people, user, rng)})
    frame[conf.label_col] = _labels(conf, p, people, user, burst, concept, rng)
    return frame


def _timestamps(conf: DataConf, index: int, rng: np.random.Generator) -> pd.DatetimeIndex:
    """Sorted event times within [start + index * freq, start + (index + 1) * freq), in microseconds."""
    step = pd.Timedelta(conf.freq)
    span_us = step // pd.Timedelta(1, "us")
    _need(span_us >= 1, f"data.freq={conf.freq!r} must be at least 1us for the users stream")
    offsets = np.sort(rng.integers(0, span_us, conf.rows_per_partition))
    times = pd.Timestamp(conf.start) + index * step + pd.to_timedelta(offsets, unit="us")
    return times.as_unit("ns")  # the unit of the other generators' timestamps


def _behaviour(people: Traits, user: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The observed columns: each a noisy draw around the user's traits."""
    n = len(user)
    engagement = people.engagement[user]
    amount = np.round(np.exp(3.0 + 0.8 * people.spending[user] + 1.0 * rng.standard_normal(n)), 2)
    duration = np.exp(4.0 + 0.3 * people.pace[user] + 0.3 * engagement + 0.4 * rng.standard_normal(n))
    clicked = (rng.random(n) < _sigmoid(1.5 * engagement)).astype(np.int64)
    return {"user_id": user.astype(np.int64), "amount": amount, "duration": duration, "clicked": clicked}


def _labels(conf: DataConf, p: UserParams, people: Traits, user: np.ndarray, burst: np.ndarray,
            concept: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """y ~ Bernoulli(sigmoid(signed weights . traits)), then a ``data.noise`` share flipped."""
    # Bursting users make a larger share of the events than of the users: standardise the burst over
    # events, so that flipping its weight changes who converts, not how many do.
    share = p.burst_share * p.burst_factor / (p.burst_share * p.burst_factor + 1.0 - p.burst_share)
    spread = math.sqrt(share * (1.0 - share)) or 1.0  # no burst variance: the term is 0
    z = np.stack([people.engagement[user], people.spending[user], (burst[user] - share) / spread], axis=1)
    signs = np.stack([concept_signs(c) for c in range(N_CONCEPTS)])[concept]
    y = rng.random(len(user)) < _sigmoid((z * signs * WEIGHTS).sum(axis=1))
    flip = rng.random(len(user)) < conf.noise
    return (y ^ flip).astype(np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
