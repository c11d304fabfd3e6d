"""Learning segment weights from customer choices. Pure: numpy and scipy, no I/O.

The model is a conditional (multinomial) logit over the options shown in one session:

    P(option j chosen | options shown) = softmax_j( beta . x_j + gamma[rank_j] )

- `x_j` are the option's per-factor scores. A factor an option does not carry takes the mean of
  that factor over the options shown with it, so it moves no option up or down (a conditional
  logit only sees differences within a session).
- `gamma[rank]` is a position term per shown rank, estimated jointly with `beta`, so that
  "customers take rank 1" is explained by the position and does not leak into the factor
  weights. Rank 1 is the reference (gamma = 0); ranks from `max_rank_terms` on share one term.
- Propensities weight each session (see `choice_data`: clipped, self-normalised inverse
  propensities of the arrangement shown).
- Priors are Gaussian. The global fit (every choice of the tenant) has a weak prior
  (`beta ~ N(0, 5^2)`, `gamma ~ N(0, 2^2)`); each segment is then fitted with its prior centred
  on the global fit (`N(global, pooling_sd^2)`), so a segment with few choices stays near the
  global weights and one with many moves to its own.
- `beta >= 0` (a better score never makes an option less attractive): the MAP is found with
  L-BFGS-B under that bound. The Laplace approximation is the Gaussian at the MAP with the
  inverse Hessian of the negative log posterior as covariance.
- Weights served are `beta / sum(beta)`, projected onto the capped simplex
  `min_weight <= w_k <= max_weight, sum w = 1` (`WeightBounds`), so no factor is ever ignored
  entirely nor allowed to decide alone. Intervals are the 2.5% and 97.5% quantiles of the
  normalised weights over draws from the Laplace posterior (draws clipped at 0 like the MAP),
  before the bounds are applied. Confidence is `1 - mean interval width / 0.5`, clipped to
  [0, 1]: 0 while the posterior says little (widths of half the simplex or more), 1 as the
  intervals close. It rises with data as the widths shrink like 1/sqrt(n). A factor whose
  score never differs between the options shown cannot be learned: its weight stays at the
  prior and keeps the confidence low, which is the honest answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from services.learner.choice_data import ChoiceData, ObservedChoice, factors_of, pack_choices

REFERENCE_WIDTH = 0.5
GLOBAL_BETA_SD = 5.0
GLOBAL_RANK_SD = 2.0
INTERVAL_DRAWS = 2_000


@dataclass(frozen=True)
class WeightBounds:
    """Where a served weight may lie. Infeasible bounds for few factors (say one factor and a
    cap of 0.8) are widened to `1 / n_factors` so the weights can still sum to 1."""

    min_weight: float = 0.02
    max_weight: float = 0.8

    def for_factors(self, count: int) -> tuple[float, float]:
        equal = 1.0 / count
        return min(self.min_weight, equal), max(self.max_weight, equal)


@dataclass(frozen=True)
class FitOptions:
    pooling_sd: float = 1.0
    max_rank_terms: int = 10
    bounds: WeightBounds = field(default_factory=WeightBounds)
    seed: int = 0


@dataclass(frozen=True)
class Posterior:
    """The Laplace approximation: MAP parameters and their covariance."""

    factors: tuple[str, ...]
    rank_terms: int
    mean: np.ndarray
    covariance: np.ndarray
    converged: bool
    max_rank: int

    @property
    def beta(self) -> np.ndarray:
        return self.mean[: len(self.factors)]

    @property
    def gamma(self) -> np.ndarray:
        return self.mean[len(self.factors) :]

    @property
    def beta_covariance(self) -> np.ndarray:
        k = len(self.factors)
        return self.covariance[:k, :k]

    def to_json(self) -> dict[str, Any]:
        return {
            "factors": list(self.factors),
            "rank_terms": self.rank_terms,
            "mean": self.mean.tolist(),
            "covariance": self.covariance.tolist(),
            "max_rank": self.max_rank,
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Posterior:
        return cls(
            tuple(stored["factors"]),
            int(stored["rank_terms"]),
            np.array(stored["mean"], dtype=float),
            np.array(stored["covariance"], dtype=float),
            True,
            int(stored["max_rank"]),
        )


@dataclass(frozen=True)
class SegmentWeights:
    """What a fit yields for serving: bounded normalised weights, their intervals, one
    confidence score, the rank effects, and the raw posterior (for Thompson sampling)."""

    factors: tuple[str, ...]
    weights: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    confidence: float
    sample_size: int
    rank_effects: dict[int, float]
    coefficients: dict[str, float]
    covariance: list[list[float]]
    converged: bool
    posterior: Posterior | None = None


def _objective(
    theta: np.ndarray, data: ChoiceData, prior_mean: np.ndarray, prior_precision: np.ndarray
) -> tuple[float, np.ndarray]:
    utility = data.design @ theta
    utility = np.where(data.mask, utility, -np.inf)
    log_norm = logsumexp(utility, axis=1)
    rows = np.arange(data.size)
    log_lik = utility[rows, data.chosen] - log_norm
    probability = np.exp(utility - log_norm[:, None])
    expected = np.einsum("nj,njp->np", probability, data.design)
    chosen = data.design[rows, data.chosen]
    gradient = -(data.weights[:, None] * (chosen - expected)).sum(axis=0)
    delta = theta - prior_mean
    value = -float(data.weights @ log_lik) + 0.5 * float(delta @ (prior_precision * delta))
    return value, gradient + prior_precision * delta


def _hessian(theta: np.ndarray, data: ChoiceData, prior_precision: np.ndarray) -> np.ndarray:
    utility = np.where(data.mask, data.design @ theta, -np.inf)
    probability = np.exp(utility - logsumexp(utility, axis=1)[:, None])
    expected = np.einsum("nj,njp->np", probability, data.design)
    second = np.einsum("n,nj,njp,njq->pq", data.weights, probability, data.design, data.design)
    outer = np.einsum("n,np,nq->pq", data.weights, expected, expected)
    return second - outer + np.diag(prior_precision)


def fit_posterior(
    data: ChoiceData,
    *,
    prior_mean: np.ndarray,
    prior_sd: np.ndarray,
    start: np.ndarray | None = None,
) -> Posterior:
    """The MAP under `beta >= 0` and its Laplace covariance. `start` warm-starts the search
    (a previous fit), which is what keeps a batched refit cheap."""
    k = len(data.factors)
    precision = 1.0 / np.square(prior_sd)
    initial = np.array(start if start is not None else prior_mean, dtype=float)
    initial[:k] = np.maximum(initial[:k], 0.0)
    result = minimize(
        _objective,
        initial,
        args=(data, prior_mean, precision),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * k + [(None, None)] * data.rank_terms,
    )
    hessian = _hessian(result.x, data, precision)
    covariance = np.linalg.pinv(hessian, hermitian=True)
    return Posterior(
        data.factors, data.rank_terms, result.x, covariance, bool(result.success), data.max_rank
    )


def project_to_bounds(weights: np.ndarray, bounds: WeightBounds) -> np.ndarray:
    """The Euclidean projection onto `{lo <= w <= hi, sum w = 1}`: `clip(w - t, lo, hi)` with
    the shift `t` found by bisection (the sum is monotone in `t`)."""
    low, high = bounds.for_factors(weights.size)
    below, above = float(weights.min()) - high - 1.0, float(weights.max()) - low + 1.0
    for _ in range(100):
        shift = 0.5 * (below + above)
        if np.clip(weights - shift, low, high).sum() > 1.0:
            below = shift
        else:
            above = shift
    projected = np.clip(weights - 0.5 * (below + above), low, high)
    return projected / projected.sum()


def normalize(beta: np.ndarray) -> np.ndarray:
    """`beta / sum(beta)`; equal weights when every coefficient is 0 (nothing matters yet)."""
    clipped = np.maximum(beta, 0.0)
    total = clipped.sum(axis=-1, keepdims=True)
    equal = np.full_like(clipped, 1.0 / clipped.shape[-1])
    return np.where(total > 0, clipped / np.where(total > 0, total, 1.0), equal)


def summarize(posterior: Posterior, sample_size: int, options: FitOptions) -> SegmentWeights:
    """Served weights, intervals and confidence from a posterior (see the module docstring)."""
    rng = np.random.default_rng(options.seed)
    draws = rng.multivariate_normal(
        posterior.beta, posterior.beta_covariance, size=INTERVAL_DRAWS, method="eigh"
    )
    normalized = normalize(draws)
    low, high = np.quantile(normalized, [0.025, 0.975], axis=0)
    confidence = float(np.clip(1.0 - (high - low).mean() / REFERENCE_WIDTH, 0.0, 1.0))
    served = project_to_bounds(normalize(posterior.beta), options.bounds)
    names = posterior.factors
    return SegmentWeights(
        factors=names,
        weights={name: float(value) for name, value in zip(names, served, strict=True)},
        intervals={
            name: (float(lo), float(hi)) for name, lo, hi in zip(names, low, high, strict=True)
        },
        confidence=confidence,
        sample_size=sample_size,
        # Ranks never shown have only their prior to say; they are left out.
        rank_effects={1: 0.0}
        | {
            index + 2: float(value)
            for index, value in enumerate(posterior.gamma)
            if index + 2 <= posterior.max_rank
        },
        coefficients={name: float(v) for name, v in zip(names, posterior.beta, strict=True)},
        covariance=posterior.beta_covariance.tolist(),
        converged=posterior.converged,
        posterior=posterior,
    )


@dataclass(frozen=True)
class SegmentedFit:
    """The global fit and one fit per segment that has choices."""

    global_fit: SegmentWeights
    segments: dict[str, SegmentWeights]


def fit_segments(
    choices_by_segment: Mapping[str, Sequence[ObservedChoice]],
    options: FitOptions | None = None,
    *,
    start: Mapping[str, Mapping[str, float]] | None = None,
) -> SegmentedFit | None:
    """Fit the global model on every choice, then each segment with its prior centred on the
    global fit. `start` maps a segment (or "global") to previous raw coefficients, used to
    warm-start. None when there is nothing to learn from (no factor, no usable choice)."""
    options = options or FitOptions()
    everything = [choice for run in choices_by_segment.values() for choice in run]
    factors = factors_of(everything)
    if not factors:
        return None
    data = pack_choices(everything, factors, max_rank_terms=options.max_rank_terms)
    if data.size == 0:
        return None
    k, rank_terms = len(factors), data.rank_terms
    global_sd = np.concatenate([np.full(k, GLOBAL_BETA_SD), np.full(rank_terms, GLOBAL_RANK_SD)])
    overall = fit_posterior(
        data,
        prior_mean=np.zeros(k + rank_terms),
        prior_sd=global_sd,
        start=_start(start, "global", factors, rank_terms),
    )
    # The global fit is estimated from the same choices, so its own uncertainty is added to
    # the pooling variance: with little data the prior is loose and the segment is not
    # credited twice for the same evidence.
    pooled_sd = np.sqrt(options.pooling_sd**2 + np.clip(np.diag(overall.covariance), 0.0, None))
    segments: dict[str, SegmentWeights] = {}
    for segment, run in choices_by_segment.items():
        packed = pack_choices(run, factors, max_rank_terms=options.max_rank_terms)
        if packed.size == 0:
            continue
        posterior = fit_posterior(
            packed,
            prior_mean=overall.mean,
            prior_sd=pooled_sd,
            start=_start(start, segment, factors, rank_terms),
        )
        segments[segment] = summarize(posterior, packed.size, options)
    return SegmentedFit(summarize(overall, data.size, options), segments)


def fit_customer(
    choices: Sequence[ObservedChoice], segment: Posterior, options: FitOptions, *,
    pooling_sd: float,
) -> SegmentWeights | None:
    """One customer's weights, shrunk toward their segment: the segment's posterior mean is
    the prior mean, and the prior's spread is `pooling_sd` plus the segment's own uncertainty
    (the hierarchy global -> segment -> customer). The rank effects are the segment's, held
    close (their prior keeps the segment's covariance): one customer says little about
    position."""
    data = pack_choices(choices, segment.factors,
                        max_rank_terms=segment.rank_terms + 1)
    if data.size == 0:
        return None
    k = len(segment.factors)
    spread = np.sqrt(np.clip(np.diag(segment.covariance), 0.0, None))
    prior_sd = np.concatenate([np.sqrt(pooling_sd**2 + spread[:k] ** 2),
                               np.maximum(spread[k:], 1e-3)])
    posterior = fit_posterior(data, prior_mean=segment.mean, prior_sd=prior_sd,
                              start=segment.mean)
    return summarize(posterior, data.size, options)


def _start(
    start: Mapping[str, Mapping[str, float]] | None,
    segment: str,
    factors: Sequence[str],
    rank_terms: int,
) -> np.ndarray | None:
    previous = (start or {}).get(segment)
    if not previous:
        return None
    beta = [float(previous.get(name, 0.0)) for name in factors]
    return np.concatenate([np.array(beta), np.zeros(rank_terms)])


def default_weights(factors: Sequence[str]) -> dict[str, float]:
    """The weights served until a segment has enough choices: every factor alike."""
    return {name: 1.0 / len(factors) for name in factors} if factors else {}
