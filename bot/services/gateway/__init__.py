"""Mail leaving as an identity: gateway credentials, the suppression list, the per-identity sending window (one slot
per recipient), one-click unsubscribe, the copies that go out (signed for platform mail), the reports about refused
recipients, and the submission decisions the SMTP gateway asks for."""

from bot.services.gateway.credentials import GatewayCredentials, IssuedCredential
from bot.services.gateway.dispatch import Dispatcher, Relay
from bot.services.gateway.outgoing import SentMail
from bot.services.gateway.reports import DeliveryReports
from bot.services.gateway.submission import (
    GatewayLogin,
    IdentityRelay,
    Outcome,
    SenderVerdict,
    Slot,
    Submission,
    Submitted,
)
from bot.services.gateway.suppressions import Suppressions, address_key
from bot.services.gateway.unsubscribe import Unsubscribed, Unsubscribes
from bot.services.gateway.window import LimitDecision, SendingLimits

__all__ = [
    "DeliveryReports",
    "Dispatcher",
    "GatewayCredentials",
    "GatewayLogin",
    "IdentityRelay",
    "IssuedCredential",
    "LimitDecision",
    "Outcome",
    "Relay",
    "SentMail",
    "SenderVerdict",
    "SendingLimits",
    "Slot",
    "Submission",
    "Submitted",
    "Suppressions",
    "Unsubscribed",
    "Unsubscribes",
    "address_key",
]
