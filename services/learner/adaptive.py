"""Learning between refits, checking before serving, noticing change. Pure: numpy and scipy.

Incremental updates (`incremental_update`): the previous version's Laplace posterior
`N(m, S)` is the prior for the choices since, and a few Newton steps on

    -sum_i w_i log P(chosen_i | shown_i; theta) + 1/2 (theta - m)' S^-1 (theta - m)

from `m` give the new MAP; its covariance is the inverse Hessian there. This is the Laplace
(extended Kalman) filter of the conditional logit: exact for a Gaussian likelihood and, since
the posterior after hundreds of choices is nearly Gaussian, within a few percent of the full
refit on the same choices (the unit tests compare them). `beta >= 0` is kept by clipping
after each step. Session weights are normalised within the batch (see `pack_choices`), which
is what a full refit over the same choices does only approximately; the full refit batched
behind the increments removes the difference.

Shift detection (`batch_score`, `detect_shift`): every batch is scored against the posterior
*before* it is absorbed (an out-of-sample check). Under the model, the score
`U = sum_i w_i (x_chosen - E[x])` over the factor coefficients has mean 0 and variance
`V = I + I S I` (I the choices' information, `sum w_i^2 Cov_i(x)`, S the posterior covariance,
which accounts for the model's own uncertainty). Over the segment's recent batches, for each
split point the suffix sums give `T = U' V^-1 U` (V of the whole suffix, see `detect_shift`),
chi-square with k degrees of freedom when nothing changed.
The largest `T` over the splits is compared with the chi-square quantile at `alpha / splits`
(Bonferroni over the splits); when it is exceeded the preferences shifted, and the split that
maximised `T` is the estimated change point. A shifted segment forgets: its fits use only
choices from the change point on (a window), see `refits/incremental.py`.

Off-policy checks (`top_choice_estimates`, `promotion_decision`): what a candidate version
would achieve on logged sessions, as the *top-choice rate*: the share of decided sessions in
which the customer took the option ranked first. A policy ranks deterministically by its
coefficients; on a logged session it agrees with the log when its first option is the one
logged at rank 1, whose propensity `p` of being shown there was logged. Self-normalised IPS:
`sum(match / p * r) / sum(match / p)`. Doubly robust: `q(s, pi(s)) + match / p * (r - q(s,
logged))`, `q` the candidate's own choice model (the probability that the option is taken
when placed first, its rank effect swapped with the displaced option's). Both with normal
95% intervals (the SNIPS one by linearisation). A candidate is not promoted when the paired
DR difference to the current version has a 95% upper bound below `-margin`. The logged
sessions are the ones the candidate was fitted on (it has seen them), which flatters it a
little; what the gate catches is a candidate that is plainly worse (a bad batch, a wrong
factor, a fit gone astray). With deterministic logging (no exploration) a candidate is only
evaluated on the sessions where it agrees with the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import chi2

from services.learner.choice_data import ChoiceData, ObservedChoice, pack_choices
from services.learner.learning import Posterior, _hessian, _objective

NEWTON_STEPS = 4


def incremental_update(
    posterior: Posterior, data: ChoiceData, *, steps: int = NEWTON_STEPS
) -> Posterior | None:
    """The posterior after the new choices in `data`, from `posterior` as the prior. None when
    the choices carry a factor the posterior does not know (a full refit is then needed)."""
    if data.factors != posterior.factors or data.rank_terms != posterior.rank_terms:
        return None
    k = len(posterior.factors)
    size = posterior.mean.size
    prior_precision = np.linalg.pinv(posterior.covariance, hermitian=True)
    no_prior = np.zeros(size)
    theta = posterior.mean.copy()
    for _ in range(steps):
        _, gradient = _objective(theta, data, no_prior, no_prior)
        hessian = _hessian(theta, data, no_prior) + prior_precision
        gradient = gradient + prior_precision @ (theta - posterior.mean)
        theta = theta - np.linalg.solve(hessian, gradient)
        theta[:k] = np.maximum(theta[:k], 0.0)
    hessian = _hessian(theta, data, no_prior) + prior_precision
    covariance = np.linalg.pinv(hessian, hermitian=True)
    return Posterior(
        posterior.factors, posterior.rank_terms, theta, covariance, True,
        max(posterior.max_rank, data.max_rank),
    )


@dataclass(frozen=True)
class BatchScore:
    """A batch's score, its variance from the choices' randomness (`information`), and the
    covariance of the factor coefficients of the posterior it was checked against."""

    score: np.ndarray
    information: np.ndarray
    covariance: np.ndarray
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score.tolist(), "information": self.information.tolist(),
                "covariance": self.covariance.tolist(), "size": self.size}

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> BatchScore:
        return cls(np.array(stored["score"], dtype=float),
                   np.array(stored["information"], dtype=float),
                   np.array(stored["covariance"], dtype=float), int(stored["size"]))


def batch_score(posterior: Posterior, data: ChoiceData) -> BatchScore:
    """The factor coefficients' score of the batch and its variance (see the module doc)."""
    k = len(posterior.factors)
    utility = np.where(data.mask, data.design @ posterior.mean, -np.inf)
    probability = np.exp(utility - logsumexp(utility, axis=1)[:, None])
    x = data.design[:, :, :k]
    expected = np.einsum("nj,njp->np", probability, x)
    chosen = x[np.arange(data.size), data.chosen]
    score = (data.weights[:, None] * (chosen - expected)).sum(axis=0)
    # The score's variance: each choice's covariance of x, times its weight squared.
    squared = data.weights**2
    second = np.einsum("n,nj,njp,njq->pq", squared, probability, x, x)
    information = second - np.einsum("n,np,nq->pq", squared, expected, expected)
    return BatchScore(score, information, posterior.beta_covariance.copy(), data.size)


@dataclass(frozen=True)
class ShiftTest:
    statistic: float
    threshold: float
    detected: bool
    change_batch: int  # index of the first batch after the estimated change point
    choices_tested: int

    def to_json(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "threshold": self.threshold,
                "detected": self.detected, "change_batch": self.change_batch,
                "choices_tested": self.choices_tested}


def detect_shift(batches: Sequence[BatchScore], *, alpha: float = 1e-3,
                 min_choices: int = 20) -> ShiftTest:
    """The sequential test over the batches, oldest first (see the module docstring). Splits
    leaving fewer than `min_choices` choices after them are not tested.

    The suffix's variance is `I + I S I` with `I` the suffix's summed information and `S` the
    coefficients' covariance when its first batch was checked: the posterior's error is shared
    by every later batch (they were checked against posteriors that all carry it), so it adds
    to their sum coherently, not batch by batch."""
    best, best_at, splits = 0.0, 0, 0
    size = batches[-1].score.size if batches else 0
    score = np.zeros(size)
    information = np.zeros((size, size))
    after = 0
    for index in range(len(batches) - 1, -1, -1):
        score = score + batches[index].score
        information = information + batches[index].information
        after += batches[index].size
        if after < min_choices:
            continue
        splits += 1
        variance = information + information @ batches[index].covariance @ information
        statistic = float(score @ np.linalg.pinv(variance, hermitian=True) @ score)
        if statistic > best:
            best, best_at = statistic, index
    total = sum(batch.size for batch in batches)
    if splits == 0:
        return ShiftTest(0.0, float("inf"), False, 0, total)
    threshold = float(chi2.isf(alpha / splits, df=size))
    return ShiftTest(best, threshold, best > threshold, best_at, total)


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class PolicyEstimates:
    snips: Estimate
    doubly_robust: Estimate
    matched: int
    effective_sessions: float
    terms: np.ndarray  # per-session DR terms, for paired comparisons

    def to_json(self) -> dict[str, Any]:
        return {"snips": self.snips.to_json(), "doubly_robust": self.doubly_robust.to_json(),
                "matched_sessions": self.matched,
                "effective_sessions": self.effective_sessions}


@dataclass(frozen=True)
class LoggedSessions:
    """Decided sessions packed for evaluation: `data` (ranked by logged rank) and the logged
    propensity of the option shown first."""

    data: ChoiceData
    first_propensity: np.ndarray


def pack_logged(choices: Sequence[ObservedChoice], factors: Sequence[str],
                max_rank_terms: int = 10) -> LoggedSessions:
    usable = [
        choice for choice in choices
        if len(choice.options) >= 2
        and any(option.get("item_id") == choice.chosen_item_id for option in choice.options)
    ]
    data = pack_choices(usable, factors, max_rank_terms=max_rank_terms)
    first = np.array([
        float(min(choice.options, key=lambda option: int(option.get("rank", 1))).get(
            "propensity") or 1.0)
        for choice in usable
    ])
    return LoggedSessions(data, np.maximum(first, 1e-3))


def _first_choice_probability(model: Posterior, data: ChoiceData) -> np.ndarray:
    """`q[i, j]`: the model's probability that option j is taken when placed first, the
    option logged first taking j's place."""
    k = len(model.factors)
    base = np.where(data.mask, data.design[:, :, :k] @ model.beta, -np.inf)
    rank = data.design[:, :, k:] @ model.gamma  # position term of each option's logged rank
    n, width = data.mask.shape
    q = np.zeros((n, width))
    for j in range(width):
        utility = base + rank
        swapped = utility.copy()
        swapped[:, j] = base[:, j] + rank[:, 0]
        swapped[:, 0] = base[:, 0] + rank[:, j]
        swapped = np.where(data.mask, swapped, -np.inf)
        q[:, j] = np.exp(swapped[:, j] - logsumexp(swapped, axis=1))
    return np.where(data.mask, q, 0.0)


def top_choice_estimates(logged: LoggedSessions, policy: Posterior,
                         model: Posterior) -> PolicyEstimates:
    """SNIPS and DR estimates of the top-choice rate were `policy` ranking (see the doc)."""
    data = logged.data
    k = len(policy.factors)
    scores = np.where(data.mask, data.design[:, :, :k] @ policy.beta, -np.inf)
    first = np.argmax(scores, axis=1)
    match = (first == 0).astype(float)
    reward = (data.chosen == 0).astype(float)
    weight = match / logged.first_propensity
    n = max(data.size, 1)
    total = weight.sum()
    if total > 0:
        snips = float((weight * reward).sum() / total)
        linear = weight * (reward - snips) / (total / n)
        snips_se = float(linear.std(ddof=1) / np.sqrt(n)) if n > 1 else 1.0
    else:
        snips, snips_se = 0.0, 1.0
    q = _first_choice_probability(model, data)
    rows = np.arange(data.size)
    terms = q[rows, first] + weight * (reward - q[:, 0])
    dr = float(terms.mean()) if data.size else 0.0
    dr_se = float(terms.std(ddof=1) / np.sqrt(n)) if data.size > 1 else 1.0
    effective = float(total**2 / max((weight**2).sum(), 1e-12))
    return PolicyEstimates(
        Estimate(snips, snips - 1.96 * snips_se, snips + 1.96 * snips_se),
        Estimate(dr, dr - 1.96 * dr_se, dr + 1.96 * dr_se),
        int(match.sum()), effective, terms,
    )


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    reason: str
    candidate: PolicyEstimates | None
    current: PolicyEstimates | None
    difference: Estimate | None
    sessions: int

    def to_json(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "sessions": self.sessions,
            "candidate": self.candidate.to_json() if self.candidate else None,
            "current": self.current.to_json() if self.current else None,
            "difference": self.difference.to_json() if self.difference else None,
        }


def promotion_decision(
    logged: LoggedSessions, candidate: Posterior, current: Posterior | None, *,
    min_sessions: int = 30, margin: float = 0.0,
) -> Promotion:
    """Whether `candidate` may replace `current` (see the module docstring)."""
    n = logged.data.size
    if current is None:
        return Promotion(True, "first version of the segment", None, None, None, n)
    if n < min_sessions or current.factors != candidate.factors:
        why = (f"{n} logged sessions, fewer than {min_sessions}" if n < min_sessions
               else "the factors changed")
        return Promotion(True, f"not checked: {why}", None, None, None, n)
    mine = top_choice_estimates(logged, candidate, candidate)
    theirs = top_choice_estimates(logged, current, candidate)
    paired = mine.terms - theirs.terms
    mean = float(paired.mean())
    se = float(paired.std(ddof=1) / np.sqrt(n))
    difference = Estimate(mean, mean - 1.96 * se, mean + 1.96 * se)
    dr, now = mine.doubly_robust.value, theirs.doubly_robust.value
    if difference.high < -margin:
        reason = (f"estimated worse than the current version: top-choice rate {dr:.3f} "
                  f"against {now:.3f} (doubly robust), difference {mean:+.3f} "
                  f"[{difference.low:+.3f}, {difference.high:+.3f}] on {n} logged sessions")
        return Promotion(False, reason, mine, theirs, difference, n)
    reason = (f"not worse than the current version: top-choice rate {dr:.3f} against "
              f"{now:.3f} (doubly robust), difference {mean:+.3f} [{difference.low:+.3f}, "
              f"{difference.high:+.3f}] on {n} logged sessions")
    return Promotion(True, reason, mine, theirs, difference, n)
