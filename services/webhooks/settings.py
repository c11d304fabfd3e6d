"""Settings of the webhooks consumer: the shared `FEEDBACKLOOP_*` settings, and its port."""

from feedbackloop.settings import Settings

__all__ = ["Settings", "port"]


def port(settings: Settings) -> int:
    return settings.webhooks_port
