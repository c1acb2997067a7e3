"""The Slack implementation of the services' Notifier: turns domain events into channel messages."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.views.identity_messages import Message, identity_created
from models import Identity, LimitRequest

log = logging.getLogger(__name__)


class SlackNotifier:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(
        self, channel: str, message: Message, *, fallback_user: str | None = None
    ) -> tuple[str, str] | None:
        """Post to a channel. If the bot can't post there, tell `fallback_user` by DM instead of losing it."""
        try:
            resp = await self.client.chat_postMessage(channel=channel, **message.as_kwargs())
            return resp["channel"], resp["ts"]
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("could not post to %s: %s", channel, error)
            if not fallback_user:
                return None
            await self.client.chat_postMessage(
                channel=fallback_user,
                text=f"I couldn't post to <#{channel}> ({error}). Invite me there with `/invite @Identity Bot`. "
                f"Here is what I wanted to say:\n{message.text}",
            )
            return None

    async def identity_created(self, identity: Identity, request: LimitRequest | None) -> None:
        await self.post(
            identity.notices_channel, identity_created(identity, request), fallback_user=identity.created_by
        )
