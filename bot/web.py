"""Serving Slack: HTTP (`POST /slack/events`, and `GET /healthz` in both modes) and the Socket Mode connection, plus
the start-up check that Slack accepts our tokens. The same HTTP server (in both modes) serves the one-click
unsubscribe links of relayed mail: `GET /unsubscribe/<token>` shows a confirm button and changes nothing, `POST`
unsubscribes (RFC 8058)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import pages
from bot.config import ConfigError
from bot.services.gateway import Unsubscribes

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
        unsubscribes: Unsubscribes | None = None,
    ) -> None:
        self.app = app
        self.unsubscribes = unsubscribes
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
        if self.unsubscribes is not None:
            web_app.router.add_get("/unsubscribe/{token}", self._unsubscribe_page)
            web_app.router.add_post("/unsubscribe/{token}", self._unsubscribe)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        routes = "GET /healthz" if self.socket_mode else "POST /slack/events, GET /healthz"
        routes += ", /unsubscribe/<token>" if self.unsubscribes is not None else ""
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

    async def _unsubscribe_page(self, request: web.Request) -> web.Response:
        """GET: a page with one confirm button. Link scanners follow links: nothing changes here."""
        assert self.unsubscribes is not None
        found = await self.unsubscribes.find(request.match_info["token"])
        if found is None:
            return _page(pages.unknown_link(), status=404)
        if await self.unsubscribes.suppression(found) is not None:
            return _page(pages.already_unsubscribed(found.recipient))
        return _page(pages.confirm(found.recipient))

    async def _unsubscribe(self, request: web.Request) -> web.Response:
        """POST (the confirm button, or a mail client's RFC 8058 one-click POST): unsubscribe at once, no login."""
        assert self.unsubscribes is not None
        done = await self.unsubscribes.unsubscribe(request.match_info["token"], via="link")
        if done is None:
            return _page(pages.unknown_link(), status=404)
        return _page(pages.unsubscribed(done.recipient))


def _page(html: str, *, status: int = 200) -> web.Response:
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",  # the token is in the URL
            "X-Robots-Tag": "noindex",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
            "frame-ancestors 'none'",
        },
    )
