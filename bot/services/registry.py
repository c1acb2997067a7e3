"""The services the composition root builds and hands to the Slack layer."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import Settings
from bot.services.identities import IdentityService
from bot.services.limits import LimitService
from bot.services.verification import VerificationService


@dataclass
class Services:
    settings: Settings
    identities: IdentityService
    verification: VerificationService
    limits: LimitService
