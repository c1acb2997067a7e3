"""Mail leaving as an identity: gateway credentials, the suppression list, the per-identity sending window, and the
submission decisions the SMTP gateway asks for."""

from bot.services.gateway.credentials import GatewayCredentials, IssuedCredential
from bot.services.gateway.outgoing import SentMail
from bot.services.gateway.submission import (
    GatewayLogin,
    IdentityRelay,
    Outcome,
    Relay,
    SenderVerdict,
    Submission,
    Submitted,
)
from bot.services.gateway.suppressions import Suppressions, address_key
from bot.services.gateway.window import LimitDecision, SendingLimits

__all__ = [
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
    "Submission",
    "Submitted",
    "Suppressions",
    "address_key",
]
