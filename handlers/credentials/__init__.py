"""Sending credentials from Slack: Get SMTP credentials (the panel and the Home tab) and its modals."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers.credentials.ids import Credentials as C
from handlers.credentials.listeners import CredentialListeners
from handlers.errors import ack_only, guarded


def register(app: AsyncApp, services: Services) -> None:
    credentials = CredentialListeners(services)
    app.action(C.open)(guarded(credentials.open))
    app.view(C.confirm_callback)(guarded(credentials.replace))
    app.view(C.shown_callback)(ack_only)
