"""What the refits are told: thresholds, limits and the fit options, from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from feedbackloop.settings import Settings
from services.learner.learning import FitOptions, WeightBounds

GLOBAL_SEGMENT = "global"


@dataclass(frozen=True)
class RefitConfig:
    min_new_choices: int = 50
    interval_seconds: float = 300.0
    poll_seconds: float = 1.0
    max_choices: int = 20_000
    min_choices: int = 30
    fit: FitOptions = field(default_factory=FitOptions)
    incremental: bool = True
    incremental_max_choices: int = 5_000
    offpolicy_sessions: int = 2_000
    offpolicy_min_sessions: int = 30
    offpolicy_margin: float = 0.0
    shift_alpha: float = 1e-3
    shift_batches: int = 40
    shift_min_choices: int = 20
    # No shift is tested for until the posterior rests on this many choices: an early posterior
    # moves a lot between batches, and its tests raised most of the false alarms simulated.
    shift_min_history: int = 200
    customer_min_choices: int = 50
    customer_pooling_sd: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> RefitConfig:
        return cls(
            min_new_choices=settings.learner_refit_min_new_choices,
            interval_seconds=settings.learner_refit_interval_seconds,
            poll_seconds=settings.learner_refit_poll_seconds,
            max_choices=settings.learner_refit_max_choices,
            min_choices=settings.learner_min_choices,
            fit=FitOptions(
                pooling_sd=settings.learner_pooling_sd,
                bounds=WeightBounds(settings.learner_min_weight, settings.learner_max_weight),
            ),
            incremental=settings.learner_incremental,
            offpolicy_sessions=settings.learner_offpolicy_sessions,
            offpolicy_min_sessions=settings.learner_offpolicy_min_sessions,
            offpolicy_margin=settings.learner_offpolicy_margin,
            shift_alpha=settings.learner_shift_alpha,
            customer_min_choices=settings.learner_customer_min_choices,
            customer_pooling_sd=settings.learner_customer_pooling_sd,
        )
