"""Settings of the profiles consumer: the shared `FEEDBACKLOOP_*` settings, and its port."""

from feedbackloop.settings import Settings

__all__ = ["Settings", "port"]


def port(settings: Settings) -> int:
    return settings.profiles_port
