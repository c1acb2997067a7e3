"""The replay guard in front of every listener (bot/services/replay.py decides).

It runs after Bolt's signature check, so only verified signatures are recorded. Socket Mode deliveries carry no
signature and are not checked here: they arrive over the websocket the app itself opened to Slack with its app
token, so nobody else can inject or replay one, and Slack's redeliveries of an unacknowledged envelope are handled
like retries — by idempotent side effects (one identity per view, conditional updates)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.services.replay import ReplayGuard

log = logging.getLogger(__name__)

Middleware = Callable[[AsyncBoltRequest, Callable[[], Awaitable[BoltResponse]]], Awaitable[BoltResponse | None]]


def _header(request: AsyncBoltRequest, name: str) -> str:
    values = request.headers.get(name) or [""]
    return values[0]


def ignore_replays(guard: ReplayGuard) -> Middleware:
    async def replay_guard(
        request: AsyncBoltRequest, next: Callable[[], Awaitable[BoltResponse]]
    ) -> BoltResponse | None:  # noqa: A002 - Bolt's name
        signature = _header(request, "x-slack-signature")
        if request.mode == "socket_mode" or not signature:
            return await next()
        if not await guard.first_sighting(signature, _header(request, "x-slack-request-timestamp")):
            log.warning("ignored a replayed Slack request: this signature was already handled")
            return BoltResponse(status=200, body="")
        return await next()

    return replay_guard
