"""The services the composition root builds and hands to the edges (Slack listeners, SMTP servers, jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.mail.domains import PlatformDomains
from bot.services.gateway import GatewayCredentials, SendingLimits
from bot.services.health import HealthService
from bot.services.identities import IdentityService
from bot.services.identities.sign_in import MailboxSignIn
from bot.services.limits import LimitService
from bot.services.policy import Policy
from bot.services.replay import ReplayGuard
from bot.services.verification import VerificationService


@dataclass(frozen=True)
class Services:
    domains: PlatformDomains
    policy: Policy
    identities: IdentityService
    verification: VerificationService
    limits: LimitService
    window: SendingLimits
    credentials: GatewayCredentials
    sign_in: MailboxSignIn
    replay: ReplayGuard
    health: HealthService
