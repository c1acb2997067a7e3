"""The limits feature in Slack: the Change limits modal and the managers' Approve / Deny buttons."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers.errors import ack_only, guarded
from handlers.limits.ids import Limits as L
from handlers.limits.listeners import LimitListeners


def register(app: AsyncApp, services: Services) -> LimitListeners:
    limits = LimitListeners(services)
    app.action(L.open)(guarded(limits.open_from_button))
    app.view(L.callback)(guarded(limits.submit))
    app.view(L.done_callback)(ack_only)
    app.action(L.approve)(guarded(limits.approve))
    app.action(L.deny)(guarded(limits.deny))
    app.action(L.end_increase)(guarded(limits.end_increase))
    app.action(L.request_increase)(guarded(limits.request_increase))
    return limits
