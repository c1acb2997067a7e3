"""Mail leaving as an identity: gateway credentials, the suppression list, the per-identity sending window (one slot
per recipient), one-click unsubscribe, the copies that go out (signed for platform mail), the reports about refused
recipients, and the submission decisions the SMTP gateway asks for."""

# Names are loaded on first use (bot/services/lazy.py): the inbound door imports only the parts it needs.
from __future__ import annotations

from typing import TYPE_CHECKING

from bot.services.lazy import exports

if TYPE_CHECKING:
    from bot.services.gateway.credentials import GatewayCredentials, IssuedCredential
    from bot.services.gateway.dispatch import Dispatcher, Relay
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

_EXPORTS = {
    "GatewayCredentials": "bot.services.gateway.credentials",
    "IssuedCredential": "bot.services.gateway.credentials",
    "Dispatcher": "bot.services.gateway.dispatch",
    "Relay": "bot.services.gateway.dispatch",
    "DeliveryReports": "bot.services.gateway.reports",
    "GatewayLogin": "bot.services.gateway.submission",
    "IdentityRelay": "bot.services.gateway.submission",
    "Outcome": "bot.services.gateway.submission",
    "SenderVerdict": "bot.services.gateway.submission",
    "Slot": "bot.services.gateway.submission",
    "Submission": "bot.services.gateway.submission",
    "Submitted": "bot.services.gateway.submission",
    "Suppressions": "bot.services.gateway.suppressions",
    "address_key": "bot.services.gateway.suppressions",
    "Unsubscribed": "bot.services.gateway.unsubscribe",
    "Unsubscribes": "bot.services.gateway.unsubscribe",
    "LimitDecision": "bot.services.gateway.window",
    "SendingLimits": "bot.services.gateway.window",
}
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


__getattr__ = exports(__name__, _EXPORTS)
