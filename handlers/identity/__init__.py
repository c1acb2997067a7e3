"""The identity feature in Slack: the /identity command and the identity modal (new and edit)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers.errors import ack_only, guarded
from handlers.identity.command import IdentityCommand
from handlers.identity.form import IdentityFormListeners
from handlers.identity.ids import COMMAND
from handlers.identity.ids import IdentityForm as F
from handlers.identity.ids import Lifecycle as LC
from handlers.identity.lifecycle import LifecycleListeners
from handlers.identity.sign_in import SignInListeners
from handlers.limits.listeners import LimitListeners


def register(app: AsyncApp, services: Services, limits: LimitListeners) -> None:
    form = IdentityFormListeners(services)
    app.command(COMMAND)(guarded(IdentityCommand(services, limits).handle))
    app.action(F.auto_create)(guarded(form.auto_create))
    app.action(F.kind_changed)(guarded(form.kind_changed))
    app.action(F.provider_changed)(guarded(form.provider_changed))
    app.action(F.test_setup)(guarded(form.test_setup))
    sign_in = SignInListeners(form)
    app.action(F.sign_in)(guarded(sign_in.clicked))
    app.action(F.use_password)(guarded(sign_in.use_password))
    app.view(F.callback)(guarded(form.save))
    app.view(F.saved_callback)(ack_only)
    lifecycle = LifecycleListeners(services)
    app.view(LC.delete_callback)(guarded(lifecycle.confirm_delete))
    app.view(LC.deleted_callback)(ack_only)
