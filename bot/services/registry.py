"""The services the composition root builds and hands to the edges (Slack listeners, SMTP servers, jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.mail.domains import PlatformDomains
from bot.services.gateway import GatewayCredentials, SendingLimits
from bot.services.gateway.access import SmtpAccess
from bot.services.gateway.notices import LimitNotices
from bot.services.health import HealthService
from bot.services.home import HomeService
from bot.services.identities import IdentityService
from bot.services.identities.lifecycle import IdentityLifecycleService
from bot.services.identities.sign_in import MailboxSignIn
from bot.services.limits import LimitService
from bot.services.limits.time_boxes import TimeBoxes
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
    # Issue 13: disable/enable/delete, time-boxed increases, limit notices, SMTP credentials from Slack, the App Home.
    lifecycle: IdentityLifecycleService
    time_boxes: TimeBoxes
    notices: LimitNotices
    access: SmtpAccess
    home: HomeService
