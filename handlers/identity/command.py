"""The /identity slash command: one entry point, subcommands dispatched by the first word."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.registry import Services
from handlers.blocks import loading_view, problem_view
from handlers.identity.edit import open_edit_form
from handlers.identity.form_state import FormMeta, FormValues
from handlers.identity.form_view import identity_form
from handlers.identity.lifecycle import LifecycleListeners
from handlers.identity.messages import help_message, identity_list, problem_message
from handlers.limits.listeners import LimitListeners
from handlers.verification.views import identity_overview
from models import Identity

log = logging.getLogger(__name__)


class IdentityCommand:
    def __init__(self, services: Services, limits: LimitListeners) -> None:
        self.services = services
        self.limits = limits
        self.lifecycle_listeners = LifecycleListeners(services)

    async def handle(
        self, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        text = (command.get("text") or "").strip()
        sub, _, rest = text.partition(" ")
        sub, rest = sub.lower(), rest.strip()
        if sub == "new":
            await ack()
            await self.new(command, client)
        elif sub == "edit":
            if not rest:
                await ack(
                    response_type="ephemeral", **help_message("Which identity? `/identity edit <address>`").as_kwargs()
                )
                return
            await ack()
            await self.edit(command, client, respond, rest)
        elif sub in ("limits", "show") and not rest:
            await ack(
                response_type="ephemeral", **help_message(f"Which identity? `/identity {sub} <address>`").as_kwargs()
            )
        elif sub == "limits":
            await ack()
            await self.change_limits(command, client, respond, rest)
        elif sub == "show":
            await ack()
            await self.show(command, respond, rest)
        elif sub == "verify":
            await ack()
            await self.verify(command, respond, rest)
        elif sub == "list":
            await ack()
            identities = await self.services.identities.list_for_team(command["team_id"])
            await respond(response_type="ephemeral", **identity_list(identities).as_kwargs())
        elif sub in ("disable", "enable", "delete"):
            await self.lifecycle(sub, ack, command, client, respond, rest)
        elif sub in ("", "help"):
            await ack(response_type="ephemeral", **help_message().as_kwargs())
        else:
            problem = f"I don't know the subcommand “{sub[:40]}”."
            await ack(response_type="ephemeral", **help_message(problem).as_kwargs())

    async def lifecycle(
        self, sub: str, ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond, rest: str
    ) -> None:
        """disable | enable | delete <address> (handlers/identity/lifecycle.py)."""
        if not rest:
            await ack(
                response_type="ephemeral", **help_message(f"Which identity? `/identity {sub} <address>`").as_kwargs()
            )
            return
        await ack()
        if sub == "delete":
            await self.lifecycle_listeners.ask_delete(command, client, rest)
        else:
            await self.lifecycle_listeners.switch(command, respond, rest, disable=sub == "disable")

    async def _find(self, command: dict[str, Any], respond: AsyncRespond, address: str) -> Identity | None:
        try:
            return await self.services.identities.get_by_address(command["team_id"], address)
        except NotFound as exc:
            await respond(response_type="ephemeral", **problem_message(str(exc)).as_kwargs())
            return None

    async def change_limits(
        self, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond, address: str
    ) -> None:
        opened = await client.views_open(trigger_id=command["trigger_id"], view=loading_view("Change limits"))
        try:
            identity = await self.services.identities.get_by_address(command["team_id"], address)
        except NotFound as exc:
            await client.views_update(view_id=opened["view"]["id"], view=problem_view("Change limits", str(exc)))
            return
        await self.limits.fill_form(client, opened["view"], identity, command["user_id"])

    async def show(self, command: dict[str, Any], respond: AsyncRespond, address: str) -> None:
        if identity := await self._find(command, respond, address):
            steps = await self.services.verification.steps(identity.id)
            usage = await self.services.window.usage(identity.id)
            request = await self.services.limits.pending_request(identity.id)
            findings = await self.services.health.findings(identity.id)
            overview = identity_overview(identity, steps, usage, request, findings=findings)
            await respond(response_type="ephemeral", **overview.as_kwargs())

    async def verify(self, command: dict[str, Any], respond: AsyncRespond, address: str) -> None:
        if not address:
            await respond(
                response_type="ephemeral", **problem_message("Which identity? `/identity verify <address>`").as_kwargs()
            )
            return
        try:
            identity = await self.services.identities.get_by_address(command["team_id"], address)
        except NotFound as exc:
            await respond(response_type="ephemeral", **problem_message(str(exc)).as_kwargs())
            return
        if await self.services.verification.post_panel(identity.id):
            text = f"The verification panel for {identity.address} is in <#{identity.notices_channel}>."
        else:
            text = (
                f"I could not post the verification panel for {identity.address} in <#{identity.notices_channel}>. "
                "Invite me there (`/invite @Identity Bot`) and run the command again."
            )
        await respond(response_type="ephemeral", text=text)

    async def new(self, command: dict[str, Any], client: AsyncWebClient) -> None:
        meta = FormMeta(channel=command.get("channel_id"))
        view = identity_form(FormValues(), meta, platform_domain=self.services.domains.platform)
        await client.views_open(trigger_id=command["trigger_id"], view=view)

    async def edit(self, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond, address: str) -> None:
        await open_edit_form(
            self.services,
            client,
            trigger_id=command["trigger_id"],
            user=command["user_id"],
            find=lambda: self.services.identities.get_by_address(command["team_id"], address),
        )
