"""The App Home's listeners: opening the tab publishes it; its buttons open the same modals as the commands."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.registry import Services
from handlers.errors import tell_user
from handlers.home.refresh import HomeRefresh
from handlers.home.views import SHOW_TITLE, note_view, shown_view
from handlers.identity.command import IdentityCommand
from handlers.identity.form_state import FormMeta, FormValues
from handlers.identity.form_view import identity_form
from handlers.verification.views import identity_overview
from models import Identity


class HomeListeners:
    def __init__(self, services: Services, refresh: HomeRefresh, command: IdentityCommand) -> None:
        self.services = services
        self.refresh = refresh
        self.command = command

    async def opened(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """app_home_opened (the Home tab; the Messages tab is not ours to draw)."""
        if event.get("tab", "home") != "home" or not event.get("user"):
            return
        team = body.get("team_id") or ""
        page = await self.services.home.opened(team, event["user"])
        await self.refresh.publish(team, event["user"], page)

    async def page(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        user, team = body["user"]["id"], _team(body)
        try:
            wanted = max(0, int(body["actions"][0]["value"]))
        except (ValueError, KeyError):
            wanted = 0
        page = await self.services.home.opened(team, user, page=wanted)
        await self.refresh.publish(team, user, page)

    async def new_identity(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """The same modal as `/identity new` (its channel is chosen in the form: the Home tab has none)."""
        await ack()
        view = identity_form(FormValues(), FormMeta(channel=None), platform_domain=self.services.domains.platform)
        await client.views_open(trigger_id=body["trigger_id"], view=view)

    async def _identity(self, body: dict[str, Any], client: AsyncWebClient) -> Identity | None:
        try:
            identity = await self.services.identities.get(int(body["actions"][0]["value"]))
        except (ValueError, NotFound):
            identity = None
        if identity is None or identity.team_id != _team(body):
            await tell_user(client, body, "This identity no longer exists.")
            return None
        return identity

    async def show(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if identity := await self._identity(body, client):
            steps = await self.services.verification.steps(identity.id)
            usage = await self.services.window.usage(identity.id)
            request = await self.services.limits.pending_request(identity.id)
            overview = identity_overview(identity, steps, usage, request)
            await client.views_open(trigger_id=body["trigger_id"], view=shown_view(overview.blocks))

    async def verify(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Posts the verification panel in the identity's channel (where the steps run) and says where."""
        await ack()
        if identity := await self._identity(body, client):
            if await self.services.verification.post_panel(identity.id):
                text = (
                    f":white_check_mark: The verification panel for *{identity.address}* is in "
                    f"<#{identity.notices_channel}>."
                )
            else:
                text = (
                    f":warning: I could not post the verification panel in <#{identity.notices_channel}>. Invite me "
                    "there (`/invite @Identity Bot`) and try again."
                )
            await client.views_open(trigger_id=body["trigger_id"], view=note_view(SHOW_TITLE, text))

    async def edit(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """The same modal as `/identity edit` (it checks who may edit)."""
        await ack()
        if identity := await self._identity(body, client):
            command = {"trigger_id": body["trigger_id"], "team_id": _team(body), "user_id": body["user"]["id"]}
            await self.command.edit(command, client, None, identity.address)  # type: ignore[arg-type]


def _team(body: dict[str, Any]) -> str:
    return str((body.get("team") or {}).get("id") or body.get("team_id") or "")
