"""Agreement between reviewers who labelled the same responses. Pure.

Per label (question), each response's answers by distinct reviewers:

- two reviewers in all: Cohen's kappa over the responses both answered,
  `(p_o - p_e) / (1 - p_e)` with `p_e` from each reviewer's own marginals;
- three or more: Fleiss' kappa over the responses with at least two answers (the form for
  unequal numbers of raters per subject: `P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))`,
  `P_bar` their mean, `p_j = sum_i n_ij / sum_i n_i`, `P_e = sum_j p_j^2`), which is the
  textbook formula when every response has the same number of answers.

Kappa is undefined (None) when chance agreement is 1 (everyone used one category): the
observed agreement is still reported. A disagreement is a response whose answers differ.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' answers, one (first, second) pair per subject."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(1 for a, b in pairs if a == b) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in first.keys() | second.keys()) / (n * n)
    if expected >= 1:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(subjects: Sequence[Mapping[str, int]]) -> float | None:
    """Fleiss' kappa of count tables, one per subject: category -> how many raters chose it.
    Subjects with fewer than two ratings are left out."""
    rated = [counts for counts in subjects if sum(counts.values()) >= 2]
    if not rated:
        return None
    agreement = []
    totals: Counter[str] = Counter()
    ratings = 0
    for counts in rated:
        n_i = sum(counts.values())
        agreement.append((sum(c * c for c in counts.values()) - n_i) / (n_i * (n_i - 1)))
        totals.update(counts)
        ratings += n_i
    p_bar = sum(agreement) / len(agreement)
    p_e = sum((count / ratings) ** 2 for count in totals.values())
    if p_e >= 1:
        return None
    return (p_bar - p_e) / (1 - p_e)


@dataclass(frozen=True)
class LabelAgreement:
    label: str
    method: str  # "cohen", "fleiss" or "none" (fewer than two reviewers on any response)
    kappa: float | None
    observed: float | None  # the share of agreeing pairs of answers
    reviewers: list[str]
    items: int  # responses with at least two answers
    disagreements: list[str]  # their response ids whose answers differ


def label_agreement(label: str, answers: Mapping[str, Mapping[str, str]]) -> LabelAgreement:
    """`answers`: response id -> reviewer -> answer, for one label."""
    reviewers = sorted({reviewer for by in answers.values() for reviewer in by})
    shared = {rid: by for rid, by in answers.items() if len(by) >= 2}
    disagreements = sorted(rid for rid, by in shared.items() if len(set(by.values())) > 1)
    observed = _observed(shared.values()) if shared else None
    if len(reviewers) == 2:
        first, second = reviewers
        pairs = [(by[first], by[second]) for by in shared.values()]
        return LabelAgreement(label, "cohen", cohen_kappa(pairs), observed, reviewers,
                              len(shared), disagreements)
    if len(reviewers) > 2 and shared:
        tables = [Counter(by.values()) for by in shared.values()]
        return LabelAgreement(label, "fleiss", fleiss_kappa(tables), observed, reviewers,
                              len(shared), disagreements)
    return LabelAgreement(label, "none", None, observed, reviewers, len(shared), disagreements)


def _observed(subjects: Iterable[Mapping[str, str]]) -> float:
    agreeing = pairs = 0
    for by in subjects:
        counts = Counter(by.values())
        n = sum(counts.values())
        agreeing += sum(c * (c - 1) for c in counts.values())
        pairs += n * (n - 1)
    return agreeing / pairs
