"""Settings of the learner consumer: the shared `FEEDBACKLOOP_*` settings, and its port."""

from feedbackloop.settings import Settings

__all__ = ["Settings", "port"]


def port(settings: Settings) -> int:
    return settings.learner_port
