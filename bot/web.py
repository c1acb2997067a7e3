"""Serving Slack: HTTP (`POST /slack/events`, and `GET /healthz` in both modes) and the Socket Mode connection, plus
the start-up check that Slack accepts our tokens. The same HTTP server (in both modes) serves the browser's pages:
the return from "Sign in with Microsoft / Google" (`/oauth/start`, `/oauth/callback`) and the one-click unsubscribe
links of relayed mail (`GET /unsubscribe/<token>` shows a confirm button and changes nothing, `POST` unsubscribes,
RFC 8058)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import pages
from bot.config import ConfigError
from bot.services.gateway import Unsubscribes
from bot.services.identities.sign_in import CALLBACK_PATH, START_PATH, MailboxSignIn, SignInRefused

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
        routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self.app = app
        self.routes = list(routes)  # served in both modes (e.g. the OAuth sign-in's return)
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
        web_app.add_routes(self.routes)
        if not self.socket_mode:
            web_app.router.add_post("/slack/events", self._slack_events)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        served = ["GET /healthz"] + ([] if self.socket_mode else ["POST /slack/events"])
        served += [f"{r.method} {r.path}" for r in self.routes if isinstance(r, web.RouteDef)]
        log.info("listening on %s (%s)", self.url, ", ".join(served))

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


# The browser's side of "Sign in with Microsoft / Google": the modal's button opens /oauth/start, the provider sends
# the browser back to /oauth/callback.


def sign_in_routes(sign_in: MailboxSignIn) -> list[web.RouteDef]:
    async def start(request: web.Request) -> web.StreamResponse:
        try:
            location = await sign_in.start(request.query.get("t", ""))
        except SignInRefused as exc:
            log.info("sign-in link refused: %s", exc.reason)
            return _page(400, pages.refused(exc.reason))
        raise web.HTTPFound(location, headers=_NO_STORE)

    async def callback(request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            outcome = await sign_in.complete(query.get("state", ""), code=query.get("code"), error=query.get("error"))
        except SignInRefused as exc:
            log.info("sign-in callback refused: state %s", exc.reason)
            return _page(400, pages.refused(exc.reason))
        return _page(200 if outcome.mailbox else 400, pages.signed_in(outcome))

    return [web.get(START_PATH, start), web.get(CALLBACK_PATH, callback)]


# One-click unsubscribe (RFC 8058): the link in List-Unsubscribe. A GET only shows a confirm button (link scanners
# follow links); the POST (that button, or a mail client's one-click POST) unsubscribes at once, no login.


def unsubscribe_routes(unsubscribes: Unsubscribes) -> list[web.RouteDef]:
    async def page(request: web.Request) -> web.StreamResponse:
        found = await unsubscribes.find(request.match_info["token"])
        if found is None:
            return _page(404, pages.unknown_link())
        if await unsubscribes.suppression(found) is not None:
            return _page(200, pages.already_unsubscribed(found.recipient))
        return _page(200, pages.confirm(found.recipient))

    async def unsubscribe(request: web.Request) -> web.StreamResponse:
        done = await unsubscribes.unsubscribe(request.match_info["token"], via="link")
        if done is None:
            return _page(404, pages.unknown_link())
        return _page(200, pages.unsubscribed(done.recipient))

    return [web.get(UNSUBSCRIBE_PATH, page), web.post(UNSUBSCRIBE_PATH, unsubscribe)]


UNSUBSCRIBE_PATH = "/unsubscribe/{token}"
# Pages are never cached and send no Referer (the sign-in callback URL held a code, an unsubscribe URL its token).
_NO_STORE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
}


def _page(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", headers=_NO_STORE)
