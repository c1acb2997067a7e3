"""/identity disable | enable | delete <address> and the delete confirmation modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.identities.lifecycle import Outcome
from bot.services.notifier import LifecycleChange
from bot.services.policy import IdentityAction, NotPermitted
from bot.services.registry import Services
from handlers.blocks import loading_view, not_permitted_text, problem_view, refused_view
from handlers.identity.lifecycle_view import DELETE_TITLE, delete_confirmation, deleted_view, lifecycle_reply
from handlers.identity.messages import problem_message


class LifecycleListeners:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def switch(self, command: dict[str, Any], respond: AsyncRespond, address: str, *, disable: bool) -> None:
        """/identity disable | enable <address> (after the ack)."""
        try:
            identity = await self.services.identities.get_by_address(command["team_id"], address)
            lifecycle = self.services.lifecycle
            switch = lifecycle.disable if disable else lifecycle.enable
            result = await switch(identity.id, actor=command["user_id"])
        except NotFound as exc:
            await respond(response_type="ephemeral", **problem_message(str(exc)).as_kwargs())
            return
        except NotPermitted as refusal:
            await respond(response_type="ephemeral", text=not_permitted_text(refusal))
            return
        change = LifecycleChange.DISABLED if disable else LifecycleChange.ENABLED
        await respond(
            response_type="ephemeral", text=lifecycle_reply(result.identity, change, result.outcome == Outcome.CHANGED)
        )
        await self.services.lifecycle.announce(result)

    async def ask_delete(self, command: dict[str, Any], client: AsyncWebClient, address: str) -> None:
        """/identity delete <address>: a modal that names the address and asks (nothing is deleted yet)."""
        opened = (await client.views_open(trigger_id=command["trigger_id"], view=loading_view(DELETE_TITLE)))["view"]
        try:
            identity = await self.services.identities.get_by_address(command["team_id"], address)
            await self.services.policy.require(command["user_id"], identity, IdentityAction.DELETE)
        except NotFound as exc:
            await client.views_update(view_id=opened["id"], view=problem_view(DELETE_TITLE, str(exc)))
            return
        except NotPermitted as refusal:
            await client.views_update(view_id=opened["id"], view=refused_view(DELETE_TITLE, refusal))
            return
        await client.views_update(view_id=opened["id"], hash=opened.get("hash"), view=delete_confirmation(identity))

    async def confirm_delete(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """*Delete* in the confirmation modal."""
        try:
            result = await self.services.lifecycle.delete(
                int(view.get("private_metadata") or 0), actor=body["user"]["id"]
            )
        except NotPermitted as refusal:
            await ack(response_action="update", view=refused_view(DELETE_TITLE, refusal))
            return
        except (NotFound, ValueError):
            await ack(response_action="update", view=problem_view(DELETE_TITLE, "This identity no longer exists."))
            return
        assert result.event is not None
        await ack(response_action="update", view=deleted_view(result.identity, result.event))
        await self.services.lifecycle.announce(result)
