"""Everything Slack-facing: listeners, Block Kit views and messages, and the Slack Notifier."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers.commands import IdentityCommand
from handlers.errors import guarded, on_error
from handlers.identity_form import AutoCreate, SaveIdentity
from handlers.ids import COMMAND
from handlers.ids import IdentityForm as F


def register(app: AsyncApp, services: Services) -> None:
    """Wire every listener to the app. The one place that names what the app listens to."""
    app.error(on_error)
    app.command(COMMAND)(guarded(IdentityCommand(services).handle))
    app.action(F.auto_create)(guarded(AutoCreate(services).handle))
    app.view(F.callback)(guarded(SaveIdentity(services).handle))
    app.view(F.saved_callback)(_ack_only)


async def _ack_only(ack) -> None:  # type: ignore[no-untyped-def]
    await ack()
