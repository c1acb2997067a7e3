"""The composition root: the one place that sees models, services and handlers, and wires them together."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text

import handlers
from bot.config import Settings
from bot.services.identities import IdentityService
from bot.services.registry import Services
from handlers.notifier import SlackNotifier
from models import Database

log = logging.getLogger(__name__)


def build_slack_client(settings: Settings) -> AsyncWebClient:
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


@dataclass
class Runtime:
    """Everything `identity-bot run` starts. `start()` then `stop()`; tests run it in-process."""

    settings: Settings
    db: Database = field(init=False)
    app: AsyncApp = field(init=False)
    services: Services = field(init=False)
    http_url: str | None = field(default=None, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _socket_handler: object | None = field(default=None, init=False)

    def build(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(s.database_url)
        client = build_slack_client(s)
        self.app = AsyncApp(
            client=client,
            signing_secret=s.slack_signing_secret or "unused-in-socket-mode",
            process_before_response=False,
        )
        notifier = SlackNotifier(client)
        self.services = Services(
            settings=s,
            identities=IdentityService(
                self.db, notifier, platform_domain=s.platform_domain, tracking_domain=s.tracking_domain
            ),
        )
        handlers.register(self.app, self.services)

    async def start(self) -> None:
        self.build()
        await self.db.upgrade()
        if self.settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            handler = AsyncSocketModeHandler(self.app, self.settings.slack_app_token)
            await handler.connect_async()
            self._socket_handler = handler
            log.info("connected to Slack in Socket Mode")
        await self._start_http()

    async def _start_http(self) -> None:
        web_app = web.Application()
        web_app.router.add_get("/healthz", self._healthz)
        if not self.settings.socket_mode:
            web_app.router.add_post("/slack/events", self._slack_events)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.http_url = f"http://{host}:{port}"
        log.info("listening on %s (POST /slack/events, GET /healthz)", self.http_url)

    async def _slack_events(self, request: web.Request) -> web.Response:
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _healthz(self, _request: web.Request) -> web.Response:
        try:
            async with self.db.session() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            log.exception("health check: database unreachable")
            return web.json_response({"ok": False, "database": "unreachable"}, status=503)
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        if self._socket_handler is not None:
            await self._socket_handler.close_async()  # type: ignore[attr-defined]
        if self._runner is not None:
            await self._runner.cleanup()
        await self.db.dispose()


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM."""
    runtime = Runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
