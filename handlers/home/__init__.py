"""The App Home: the team's identities with their state and buttons, New identity, and managers' pending requests;
republished when what it shows changes (refresh.py)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers.errors import ack_only, guarded
from handlers.home.ids import HOME_OPENED
from handlers.home.ids import Home as H
from handlers.home.listeners import HomeListeners
from handlers.home.refresh import HomeAwareNotifier, HomeRefresh
from handlers.identity.command import IdentityCommand
from handlers.limits.listeners import LimitListeners

__all__ = ["HomeAwareNotifier", "HomeRefresh", "register"]


def register(app: AsyncApp, services: Services, refresh: HomeRefresh, limits: LimitListeners) -> None:
    home = HomeListeners(services, refresh, IdentityCommand(services, limits))
    app.event(HOME_OPENED)(guarded(home.opened))
    app.action(H.page)(guarded(home.page))
    app.action(H.new_identity)(guarded(home.new_identity))
    app.action(H.show)(guarded(home.show))
    app.action(H.verify)(guarded(home.verify))
    app.action(H.edit)(guarded(home.edit))
    app.view(H.show_callback)(ack_only)
