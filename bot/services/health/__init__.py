"""Identities that stay healthy after verification: scheduled re-checks (the SMTP login, the tracking probe, DNS),
the bounce and complaint rates that pause a damaging identity, a manager's Resume, and what the channel is told."""

from bot.services.health.checks import DomainSettings, HealthChecks
from bot.services.health.scheduler import HealthScheduler
from bot.services.health.service import HealthService

__all__ = [
    "DomainSettings",
    "HealthChecks",
    "HealthScheduler",
    "HealthService",
]
