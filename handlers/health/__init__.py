"""The health feature in Slack: the health message's buttons (Re-run checks, Resume, Edit / Sign in again); the
messages themselves are posted by the notifier (views.py)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers.errors import guarded
from handlers.health.ids import Health as H
from handlers.health.listeners import HealthListeners, OpenEdit


def register(app: AsyncApp, services: Services, open_edit: OpenEdit) -> None:
    listeners = HealthListeners(services, open_edit)
    app.action(H.rerun)(guarded(listeners.rerun))
    app.action(H.resume)(guarded(listeners.resume))
    app.action(H.edit)(guarded(listeners.edit))
