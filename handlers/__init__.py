"""The Slack edge: listeners (thin: parse, ack fast, call a service, render), Block Kit views, and the Slack side of
the services' ports (the notifier, the managers' directory). One package per feature, each with its ids, listeners
and views; `register(app, services)` is the one list of everything the app listens to."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.services.registry import Services
from handlers import credentials, health, home, identity, limits, verification
from handlers.errors import on_error
from handlers.identity.edit import open_edit_form
from handlers.replay import ignore_replays


def register(app: AsyncApp, services: Services, home_refresh: home.HomeRefresh | None = None) -> None:
    """Wire every listener to the app. `home_refresh` republishes Home tabs (the composition root also hands it to
    the notifier); without one, the Home tab is published when opened only."""
    app.error(on_error)
    app.use(ignore_replays(services.replay))
    limit_listeners = limits.register(app, services)
    verification.register(app, services)
    health.register(app, services, open_edit_form)
    identity.register(app, services, limit_listeners)
    credentials.register(app, services)
    if home_refresh is None:
        home_refresh = home.HomeRefresh(app.client)
        home_refresh.bind(services)
    home.register(app, services, home_refresh, limit_listeners)
