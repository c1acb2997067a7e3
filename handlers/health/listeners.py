"""The health message's buttons: Re-run checks (creator or manager), Resume (managers only, after a confirmation),
and Edit / Sign in again (the identity's edit form). Anyone else is told who may, and nothing happens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.policy import IdentityAction, NotPermitted
from bot.services.registry import Services
from handlers.blocks import not_permitted_text
from handlers.errors import tell_user
from handlers.health.views import already_running, not_paused, rerun_started
from models import Identity

GONE = "This identity no longer exists."

OpenEdit = Callable[..., Awaitable[None]]
"""handlers.identity.edit.open_edit_form, handed in by handlers.register (the identity feature owns the form)."""


class HealthListeners:
    def __init__(self, services: Services, open_edit: OpenEdit) -> None:
        self.services = services
        self.open_edit = open_edit

    async def _identity(self, body: dict[str, Any]) -> Identity:
        """The identity a button belongs to, in the clicking user's workspace. Raises NotFound."""
        try:
            identity = await self.services.identities.get(int(body["actions"][0]["value"]))
        except (KeyError, ValueError) as exc:
            raise NotFound(GONE) from exc
        if identity.team_id != (body.get("team") or {}).get("id"):
            raise NotFound(GONE)
        return identity

    async def rerun(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        try:
            identity = await self._identity(body)
            await self.services.policy.require(user, identity, IdentityAction.RERUN_CHECKS)
        except NotFound:
            await tell_user(client, body, GONE)
            return
        except NotPermitted as refusal:
            await tell_user(client, body, not_permitted_text(refusal))
            return
        await tell_user(client, body, rerun_started(identity))
        if not await self.services.health.rerun(identity.id, user):
            await tell_user(client, body, already_running(identity))

    async def resume(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        try:
            identity = await self._identity(body)
            resumed = await self.services.health.resume(identity.id, body["user"]["id"])
        except NotFound:
            await tell_user(client, body, GONE)
            return
        except NotPermitted as refusal:
            await tell_user(client, body, not_permitted_text(refusal))
            return
        if not resumed:
            await tell_user(client, body, not_paused(identity))

    async def edit(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Open the edit form at once (the trigger id lives ~3 s); it says so if the identity is gone."""
        await ack()
        await self.open_edit(
            self.services,
            client,
            trigger_id=body["trigger_id"],
            user=body["user"]["id"],
            find=lambda: self._identity(body),
        )
