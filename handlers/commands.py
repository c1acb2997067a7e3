"""The /identity slash command: one entry point, subcommands dispatched by the first word."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.registry import Services
from handlers.views.identity_form import FormMeta, FormValues, identity_form
from handlers.views.identity_messages import help_message, identity_list

log = logging.getLogger(__name__)


class IdentityCommand:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def handle(
        self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        text = (command.get("text") or "").strip()
        sub, _, rest = text.partition(" ")
        sub = sub.lower()
        if sub == "new":
            await ack()
            await self.new(command, client)
        elif sub == "list":
            await ack()
            identities = await self.services.identities.list_for_team(command["team_id"])
            await respond(response_type="ephemeral", **identity_list(identities).as_kwargs())
        elif sub in ("", "help"):
            await ack(response_type="ephemeral", **help_message().as_kwargs())
        else:
            problem = f"I don't know the subcommand “{sub[:40]}”."
            await ack(response_type="ephemeral", **help_message(problem).as_kwargs())

    async def new(self, command: dict[str, Any], client: AsyncWebClient) -> None:
        meta = FormMeta(channel=command.get("channel_id"))
        view = identity_form(
            FormValues(notices_channel=None), meta, platform_domain=self.services.settings.platform_domain
        )
        await client.views_open(trigger_id=command["trigger_id"], view=view)
