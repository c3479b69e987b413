"""The mixture sequential probability ratio test (mSPRT): an always-valid p-value for continuous peeking.

Source: R. Johari, P. Koomen, L. Pekelis, D. Walsh, "Always Valid Inference: Continuous Monitoring of
A/B Tests", Operations Research 70(3), 2022 (arXiv:1512.04922), section 4. For an estimate
theta_hat_n ~ N(theta, V_n) of the difference of means and a normal mixture N(theta_0, tau^2) over the
alternative, the mixture likelihood ratio is

    Lambda_n = sqrt(V_n / (V_n + tau^2)) * exp(tau^2 (theta_hat_n - theta_0)^2 / (2 V_n (V_n + tau^2)))

(with n paired observations of variance V, V_n = V / n gives the paper's form
sqrt(V / (V + n tau^2)) exp(n^2 tau^2 (..)^2 / (2 V (V + n tau^2)))). The always-valid p-value is
p_n = min(p_{n-1}, 1 / Lambda_n), p_0 = 1: rejecting when p_n < alpha at *any* look keeps the type-I
error below alpha (Ville's inequality on the martingale Lambda_n). The matching confidence sequence is
the set of theta_0 with Lambda_n(theta_0) < 1/alpha, intersected over the looks.

V_n is the plug-in variance, as in the paper's deployment: per-arm sample variances (two streams),
the variance of the paired differences (paired), or the pooled Bernoulli variance p(1-p)(1/n_a + 1/n_b)
(the normal approximation for rates). A look with fewer than two observations per arm or zero variance
carries no evidence and leaves p unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

import numpy as np
from numpy.typing import ArrayLike

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.stats import TestName, TestResult, check_probability


class StreamKind(str, Enum):
    """How the two arms' observations arrive."""

    PAIRED = "paired"  # one observation of each arm per unit: the test runs on the differences B - A
    TWO_SAMPLE = "two_sample"  # two independent streams of a continuous metric
    BERNOULLI = "bernoulli"  # two independent streams of 0/1 outcomes (pooled variance)


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations of a stream, merged batch by batch (Chan et al. 1979)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def merge(self, values: np.ndarray) -> Moments:
        if values.size == 0:
            return self
        n_b, mean_b = int(values.size), float(values.mean())
        m2_b = float(((values - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        return Moments(n, self.mean + delta * n_b / n, self.m2 + m2_b + delta * delta * self.n * n_b / n)

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan


def log_mixture_lr(theta_hat: float, v_n: float, tau2: float, theta0: float = 0.0) -> float:
    """log Lambda_n for an estimate of variance ``v_n`` under the N(theta0, tau2) mixture (Johari et al. 2022)."""
    return 0.5 * math.log(v_n / (v_n + tau2)) + tau2 * (theta_hat - theta0) ** 2 / (2.0 * v_n * (v_n + tau2))


def _half_width(v_n: float, tau2: float, alpha: float) -> float:
    """Half-width of {theta0 : Lambda_n(theta0) < 1/alpha}, solved from the formula above."""
    return math.sqrt(2.0 * v_n * (v_n + tau2) / tau2 * (math.log(1.0 / alpha) + 0.5 * math.log((v_n + tau2) / v_n)))


def _as_batch(values: ArrayLike, arm: str, kind: StreamKind) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(arr).all():
        raise DataError(f"mSPRT arm {arm}: a batch must hold finite numbers; drop NaN/inf before update()")
    if kind is StreamKind.BERNOULLI and not np.isin(arr, (0.0, 1.0)).all():
        raise DataError(f"mSPRT arm {arm}: a bernoulli stream takes 0/1 outcomes only")
    return arr


@dataclass
class MSPRT:
    """Stateful always-valid test of mean(B) - mean(A): ``update`` after each batch, read ``p_value`` any time.

    ``tau2`` is the mixture variance in the metric's squared units; a good choice is about the square of
    the effect one hopes to detect (Johari et al., section 4.3). The state is a few numbers, persisted with
    ``to_dict`` / ``from_dict`` (JSON-safe).
    """

    kind: StreamKind
    tau2: float
    alpha: float = 0.05
    theta0: float = 0.0
    a: Moments = field(default_factory=Moments)  # arm A, or the paired differences B - A
    b: Moments = field(default_factory=Moments)  # arm B (unused when paired)
    p_value: float = 1.0
    ci_low: float = -math.inf  # the confidence sequence, intersected over the looks
    ci_high: float = math.inf
    looks: int = 0  # updates that carried evidence

    def __post_init__(self) -> None:
        self.kind = StreamKind(self.kind)
        if not (isinstance(self.tau2, (int, float)) and math.isfinite(self.tau2) and self.tau2 > 0):
            raise ConfigError(f"mSPRT mixture variance tau2 must be a finite number > 0, got {self.tau2!r}")
        check_probability("alpha", self.alpha)

    def update(self, batch_a: ArrayLike, batch_b: ArrayLike) -> float:
        """Add one batch of each arm (equal lengths when paired), look once, and return the new p-value."""
        xa, xb = _as_batch(batch_a, "A", self.kind), _as_batch(batch_b, "B", self.kind)
        if self.kind is StreamKind.PAIRED:
            if xa.shape != xb.shape:
                raise DataError(f"paired mSPRT needs batches of equal length, got A={xa.size}, B={xb.size}")
            self.a = self.a.merge(xb - xa)
        else:
            self.a, self.b = self.a.merge(xa), self.b.merge(xb)
        self._look()
        return self.p_value

    def estimate(self) -> tuple[float, float]:
        """(theta_hat, V_n) now; V_n is NaN while there is not yet enough data."""
        if self.kind is StreamKind.PAIRED:
            return self.a.mean, self.a.variance / self.a.n if self.a.n > 1 else math.nan
        if min(self.a.n, self.b.n) < 2:
            return self.b.mean - self.a.mean, math.nan
        if self.kind is StreamKind.BERNOULLI:
            pooled = (self.a.mean * self.a.n + self.b.mean * self.b.n) / (self.a.n + self.b.n)
            v_n = pooled * (1.0 - pooled) * (1.0 / self.a.n + 1.0 / self.b.n)
        else:
            v_n = self.a.variance / self.a.n + self.b.variance / self.b.n
        return self.b.mean - self.a.mean, v_n

    def log_lambda(self) -> float:
        """log Lambda_n at the current data (0 while there is no evidence yet)."""
        theta_hat, v_n = self.estimate()
        if not (v_n > 0):
            return 0.0
        return log_mixture_lr(theta_hat, v_n, self.tau2, self.theta0)

    def result(self, metric: str = "value") -> TestResult:
        """The state as a :class:`TestResult` (estimate B - A, the confidence sequence, log Lambda, p)."""
        n_b = self.a.n if self.kind is StreamKind.PAIRED else self.b.n
        return TestResult(metric, TestName.MSPRT, self.a.n, n_b, self.estimate()[0], self.ci_low, self.ci_high,
                          self.log_lambda(), self.p_value, self.alpha)

    @property
    def rejected(self) -> bool:
        return self.p_value < self.alpha

    def _look(self) -> None:
        theta_hat, v_n = self.estimate()
        if not (v_n > 0):
            return
        self.looks += 1
        self.p_value = min(self.p_value, math.exp(-log_mixture_lr(theta_hat, v_n, self.tau2, self.theta0)))
        half = _half_width(v_n, self.tau2, self.alpha)
        self.ci_low, self.ci_high = max(self.ci_low, theta_hat - half), min(self.ci_high, theta_hat + half)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (infinite interval ends as None)."""
        def end(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {"kind": self.kind.value, "tau2": self.tau2, "alpha": self.alpha, "theta0": self.theta0,
                "a": [self.a.n, self.a.mean, self.a.m2], "b": [self.b.n, self.b.mean, self.b.m2],
                "p_value": self.p_value, "ci": [end(self.ci_low), end(self.ci_high)], "looks": self.looks}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> MSPRT:
        try:
            low, high = state["ci"]
            return cls(StreamKind(state["kind"]), float(state["tau2"]), float(state["alpha"]), float(state["theta0"]),
                       Moments(int(state["a"][0]), float(state["a"][1]), float(state["a"][2])),
                       Moments(int(state["b"][0]), float(state["b"][1]), float(state["b"][2])),
                       float(state["p_value"]), -math.inf if low is None else float(low),
                       math.inf if high is None else float(high), int(state["looks"]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"not a saved mSPRT state ({exc!r}); expected the keys of MSPRT.to_dict()") from exc
