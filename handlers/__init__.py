"""Everything Slack-facing: listeners, Block Kit views and messages, and the Slack Notifier."""

from __future__ import annotations

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.services.registry import Services
from handlers.commands import IdentityCommand
from handlers.errors import guarded, on_error
from handlers.identity_form import IdentityFormListeners
from handlers.ids import COMMAND
from handlers.ids import IdentityForm as F
from handlers.ids import Limits as L
from handlers.ids import Verification as V
from handlers.limits import LimitListeners
from handlers.managers import ManagerDirectory
from handlers.verification import VerificationListeners


def register(app: AsyncApp, services: Services, managers: ManagerDirectory) -> None:
    """Wire every listener to the app. The one place that names what the app listens to."""
    form = IdentityFormListeners(services, managers)
    app.error(on_error)
    limits = LimitListeners(services, managers)
    app.command(COMMAND)(guarded(IdentityCommand(services, managers, limits).handle))
    app.action(F.auto_create)(guarded(form.auto_create))
    app.action(F.kind_changed)(guarded(form.kind_changed))
    app.action(F.provider_changed)(guarded(form.provider_changed))
    app.action(F.test_setup)(guarded(form.test_setup))
    app.view(F.callback)(guarded(form.save))
    app.view(F.saved_callback)(_ack_only)
    checks = VerificationListeners(services)
    app.action(V.send_test_email)(guarded(checks.send_test_email))
    app.action(V.send_otp)(guarded(checks.send_otp))
    app.action(V.enter_otp)(guarded(checks.enter_otp))
    app.action(V.send_response)(guarded(checks.send_response))
    app.view(V.otp_callback)(guarded(checks.submit_otp))
    app.view(V.otp_done_callback)(_ack_only)
    app.action(L.open)(guarded(limits.open_from_button))
    app.view(L.callback)(guarded(limits.submit))
    app.view(L.done_callback)(_ack_only)
    app.action(L.approve)(guarded(limits.approve))
    app.action(L.deny)(guarded(limits.deny))


async def _ack_only(ack: AsyncAck) -> None:
    await ack()
