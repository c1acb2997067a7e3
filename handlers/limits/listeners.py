"""Listeners for changing limits and for managers' Approve / Deny buttons."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import FormErrors, NotAllowed, NotFound
from bot.services.limits import AlreadyDecided
from bot.services.limits.time_boxes import NotRunning
from bot.services.policy import IdentityAction, NotPermitted
from bot.services.registry import Services
from handlers.blocks import loading_view, not_permitted_text, refused_view
from handlers.errors import tell_user
from handlers.limits.evidence_view import box_state
from handlers.limits.ids import Limits as L
from handlers.limits.views import already_decided, limits_done, limits_form
from handlers.state import errors_for_view, read_state
from models import Identity, LimitNotice
from models.tables import MAX_DAILY_LIMIT

TITLE = "Change limits"


class LimitListeners:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def fill_form(self, client: AsyncWebClient, opened: dict[str, Any], identity: Identity, user: str) -> None:
        """Replace the loading modal with the Change limits form, or with who may change them instead."""
        try:
            await self.services.policy.require(user, identity, IdentityAction.CHANGE_LIMITS)
        except NotPermitted as refusal:
            await client.views_update(view_id=opened["id"], view=refused_view(TITLE, refusal))
            return
        pending = await self.services.limits.pending_request(identity.id)
        await client.views_update(view_id=opened["id"], hash=opened.get("hash"), view=limits_form(identity, pending))

    async def open_from_button(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """The panel's Change limits: someone who may not change them is told so (ephemeral), no modal opens."""
        await ack()
        try:
            identity = await self.services.identities.get(int(body["actions"][0]["value"]))
        except (ValueError, NotFound):
            identity = None
        if identity is None or identity.team_id != body.get("team", {}).get("id"):
            await tell_user(client, body, "This identity no longer exists.")
            return
        try:
            await self.services.policy.require(body["user"]["id"], identity, IdentityAction.CHANGE_LIMITS)
        except NotPermitted as refusal:
            await tell_user(client, body, not_permitted_text(refusal))
            return
        opened = (await client.views_open(trigger_id=body["trigger_id"], view=loading_view(TITLE)))["view"]
        await self.fill_form(client, opened, identity, body["user"]["id"])

    async def submit(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = read_state(view)
        user = body["user"]["id"]
        try:
            change = await self.services.limits.change(
                int(view.get("private_metadata") or 0),
                values.get(L.hourly_limit),
                values.get(L.daily_limit),
                values.get(L.reason),
                actor=user,
                until_text=values.get(L.until),
            )
        except FormErrors as exc:
            await ack(response_action="errors", errors=errors_for_view(view, exc.errors, fallback=L.hourly_limit))
            return
        except NotPermitted as refusal:
            await ack(response_action="update", view=refused_view(TITLE, refusal))
            return
        except (NotAllowed, NotFound) as exc:
            await ack(response_action="errors", errors={L.hourly_limit: str(exc)})
            return
        await ack(response_action="update", view=limits_done(change))
        await self.services.limits.announce(change, actor=user)

    async def _decide(self, approve: bool, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        container = body.get("container") or {}
        seen_in = (container["channel_id"], container["message_ts"]) if container.get("message_ts") else None
        try:
            await self.services.limits.decide(
                int(body["actions"][0]["value"]),
                approve=approve,
                decider=user,
                seen_in=seen_in,
            )
        except NotAllowed as exc:
            await tell_user(client, body, f":no_entry: {exc} Nothing changed.")
        except AlreadyDecided as exc:
            await tell_user(client, body, already_decided(exc.request))
        except (NotFound, ValueError):
            await tell_user(client, body, "This limit request no longer exists.")

    async def end_increase(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """A manager's End now on a running time-boxed increase."""
        await ack()
        try:
            await self.services.time_boxes.end_early(int(body["actions"][0]["value"]), actor=body["user"]["id"])
        except NotAllowed as exc:
            await tell_user(client, body, f":no_entry: {exc} Nothing changed.")
        except NotRunning as exc:
            await tell_user(client, body, f"This increase is not running any more{box_state(exc.request)}")
        except (NotFound, ValueError):
            await tell_user(client, body, "This limit request no longer exists.")

    async def request_increase(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """*Request increase* on a limit-reached notice: the limits modal, prefilled with what would have let the
        deferred recipients go, for the creator or a manager."""
        await ack()
        identity_part, _, notice_part = str(body["actions"][0]["value"]).partition(":")
        try:
            identity = await self.services.identities.get(int(identity_part))
            notice = await self.services.notices.get(int(notice_part))
        except (ValueError, NotFound):
            await tell_user(client, body, "This identity no longer exists.")
            return
        user = body["user"]["id"]
        try:
            await self.services.policy.require(user, identity, IdentityAction.CHANGE_LIMITS)
        except NotPermitted as refusal:
            await tell_user(client, body, not_permitted_text(refusal))
            return
        opened = (await client.views_open(trigger_id=body["trigger_id"], view=loading_view(TITLE)))["view"]
        pending = await self.services.limits.pending_request(identity.id)
        suggested, reason = suggestion(identity, notice)
        view = limits_form(identity, pending, suggested=suggested, reason=reason)
        await client.views_update(view_id=opened["id"], hash=opened.get("hash"), view=view)

    async def approve(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await self._decide(True, ack, body, client)

    async def deny(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await self._decide(False, ack, body, client)


def suggestion(identity: Identity, notice: LimitNotice | None) -> tuple[tuple[int, int] | None, str | None]:
    """Limits that would have let the deferred recipients go (within the rules), and a reason saying why."""
    if notice is None:
        return None, None
    hourly, daily = identity.hourly_limit, identity.daily_limit
    if notice.limit_name == "hourly":
        hourly += notice.deferred
        daily = min(MAX_DAILY_LIMIT, max(daily, hourly))
        hourly = min(hourly, daily)
    else:
        daily = min(MAX_DAILY_LIMIT, daily + notice.deferred)
    reason = (
        f"The gateway deferred {notice.deferred} recipient(s) for the {notice.limit_name} limit of "
        f"{notice.limit_value} on {notice.opened_at:%Y-%m-%d}."
    )
    return (hourly, daily), reason
