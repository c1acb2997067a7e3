"""Serving Slack: HTTP (`POST /slack/events`, and `GET /healthz` in both modes) and the Socket Mode connection, plus
the start-up check that Slack accepts our tokens."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.config import ConfigError

log = logging.getLogger(__name__)

REJECTED_TOKEN = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "not_allowed_token_type"}


async def check_tokens(app: AsyncApp, app_token: str | None) -> None:
    """Refuse to start with a token Slack rejects (one line naming it, exit 2) instead of retrying forever.
    If Slack can't be reached at all, start anyway: it may be a passing network problem."""
    checks = [("SLACK_BOT_TOKEN", app.client.auth_test())]
    if app_token:
        checks.append(("SLACK_APP_TOKEN", app.client.apps_connections_open(app_token=app_token)))
    for variable, call in checks:
        try:
            await call
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in REJECTED_TOKEN:
                raise ConfigError(variable, f"Slack refused it ({error})") from None
            log.warning("could not check %s with Slack: %s", variable, error)
        except Exception as exc:  # unreachable: log, and let the runtime retry as it does
            log.warning("could not reach Slack to check %s: %s", variable, type(exc).__name__)


class SlackServer:
    """The app's HTTP listener and, with an app token, its Socket Mode connection."""

    def __init__(
        self,
        app: AsyncApp,
        *,
        host: str,
        port: int,
        app_token: str | None,
        healthy: Callable[[], Awaitable[bool]],
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.app_token = app_token
        self.healthy = healthy
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._socket_handler: object | None = None

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    async def start(self) -> None:
        if self.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            handler = AsyncSocketModeHandler(self.app, self.app_token)
            await handler.connect_async()
            self._socket_handler = handler
            log.info("connected to Slack in Socket Mode")
        web_app = web.Application()
        web_app.router.add_get("/healthz", self._healthz)
        if not self.socket_mode:
            web_app.router.add_post("/slack/events", self._slack_events)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        routes = "GET /healthz" if self.socket_mode else "POST /slack/events, GET /healthz"
        log.info("listening on %s (%s)", self.url, routes)

    async def stop(self) -> None:
        if self._socket_handler is not None:
            await self._socket_handler.close_async()  # type: ignore[attr-defined]
            self._socket_handler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _slack_events(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _healthz(self, _request: web.Request) -> web.Response:
        if not await self.healthy():
            return web.json_response({"ok": False, "database": "unreachable"}, status=503)
        return web.json_response({"ok": True})
