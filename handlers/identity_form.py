"""Listeners of the identity modal: Auto create, and Save changes."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import FormErrors
from bot.services.identities import IdentityDraft
from bot.services.registry import Services
from handlers.ids import IdentityForm as F
from handlers.state import errors_for_view, read_state
from handlers.views.common import limits_text
from handlers.views.identity_form import FormMeta, FormValues, identity_form, saved_view


def draft_from_view(view: dict[str, Any]) -> IdentityDraft:
    values = read_state(view)
    return IdentityDraft(
        kind=values.get(F.kind) or "platform",
        display_name=values.get(F.display_name),
        company_name=values.get(F.company_name),
        address=values.get(F.address),
        hourly_limit=values.get(F.hourly_limit),
        daily_limit=values.get(F.daily_limit),
        forwarding_address=values.get(F.forwarding_address),
        notices_channel=values.get(F.notices_channel),
    )


def values_from_draft(draft: IdentityDraft) -> FormValues:
    return FormValues(
        kind=draft.kind,
        display_name=draft.display_name,
        company_name=draft.company_name,
        address=draft.address,
        hourly_limit=draft.hourly_limit,
        daily_limit=draft.daily_limit,
        forwarding_address=draft.forwarding_address,
        notices_channel=draft.notices_channel,
    )


class AutoCreate:
    """Fills the address with a free one derived from the display name, keeping everything else typed."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def handle(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        view = body["view"]
        draft = draft_from_view(view)
        meta = FormMeta.loads(view.get("private_metadata"))
        values = values_from_draft(draft)
        notice = None
        if (draft.display_name or "").strip():
            values.address = await self.services.identities.suggest_address(draft.display_name)
            meta.address_version += (
                1  # a new block_id, so Slack shows the new value instead of what was typed
            )
        else:
            notice = "Enter the sender's display name first, then click Auto create."
        await client.views_update(
            view_id=view["id"],
            hash=view.get("hash"),
            view=identity_form(
                values, meta, platform_domain=self.services.settings.platform_domain, notice=notice
            ),
        )


class SaveIdentity:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def handle(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        draft = draft_from_view(view)
        try:
            created = await self.services.identities.create(
                draft, actor=body["user"]["id"], team_id=body["team"]["id"], view_id=view["id"]
            )
        except FormErrors as exc:
            await ack(
                response_action="errors", errors=errors_for_view(view, exc.errors, fallback=F.display_name)
            )
            return
        request = created.limit_request
        increase = limits_text(request.requested_hourly, request.requested_daily) if request else None
        await ack(
            response_action="update",
            view=saved_view(
                created.identity.address, created.identity.notices_channel, increase_requested=increase
            ),
        )
        if not created.duplicate:
            await self.services.identities.announce(created)
