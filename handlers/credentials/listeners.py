"""*Get SMTP credentials*: the creator or a manager gets the gateway's settings and a new username and password in a
modal; when the identity already has credentials a confirmation says they will stop working first."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.gateway.access import IssuedAccess
from bot.services.policy import NotPermitted
from bot.services.registry import Services
from handlers.blocks import loading_view, not_permitted_text, problem_view, refused_view
from handlers.credentials.views import TITLE, credentials_view, issued_notice, replace_confirmation
from handlers.errors import tell_user

log = logging.getLogger(__name__)


class CredentialListeners:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def open(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        try:
            current = await self.services.access.current(int(body["actions"][0]["value"]), actor=user)
        except (NotFound, ValueError):
            await tell_user(client, body, "This identity no longer exists.")
            return
        except NotPermitted as refusal:
            await tell_user(client, body, not_permitted_text(refusal))
            return
        if current.identity.team_id != (body.get("team") or {}).get("id"):
            await tell_user(client, body, "This identity no longer exists.")
            return
        opened = (await client.views_open(trigger_id=body["trigger_id"], view=loading_view(TITLE)))["view"]
        if current.credentials:
            view = replace_confirmation(current)
            await client.views_update(view_id=opened["id"], hash=opened.get("hash"), view=view)
            return
        try:
            issued = await self.services.access.issue(current.identity.id, actor=user)
        except NotPermitted as refusal:
            await client.views_update(view_id=opened["id"], view=refused_view(TITLE, refusal))
            return
        except NotFound as exc:
            await client.views_update(view_id=opened["id"], view=problem_view(TITLE, str(exc)))
            return
        await client.views_update(view_id=opened["id"], hash=opened.get("hash"), view=credentials_view(issued))
        await self._tell_channel(client, issued, user)

    async def replace(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        """*Issue new* in the confirmation: the old credentials are revoked, the new ones shown."""
        user = body["user"]["id"]
        try:
            issued = await self.services.access.issue(int(view.get("private_metadata") or 0), actor=user)
        except NotPermitted as refusal:
            await ack(response_action="update", view=refused_view(TITLE, refusal))
            return
        except (NotFound, ValueError):
            await ack(response_action="update", view=problem_view(TITLE, "This identity no longer exists."))
            return
        await ack(response_action="update", view=credentials_view(issued))
        await self._tell_channel(client, issued, user)

    @staticmethod
    async def _tell_channel(client: AsyncWebClient, issued: IssuedAccess, user: str) -> None:
        identity = issued.identity
        try:
            await client.chat_postMessage(
                channel=identity.notices_channel, **issued_notice(identity, issued, user).as_kwargs()
            )
        except Exception:  # noqa: BLE001 - the credentials work; only the note is lost
            log.warning(
                "could not tell %s about new credentials for identity %s", identity.notices_channel, identity.id
            )
