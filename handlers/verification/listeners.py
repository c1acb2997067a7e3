"""Listeners of the verification panel's buttons and the OTP modal.

Anyone may see a panel; only the identity's creator and managers may use its buttons. Everyone else gets an
ephemeral "Only <@creator> or a manager can …" and nothing happens: no step changes, no mail, no modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.policy import IdentityAction, NotPermitted
from bot.services.registry import Services
from bot.services.verification import AlreadyRunning, DailyCodeLimit, ReceivingLocked, ResendTooSoon
from handlers.blocks import not_permitted_text, refused_view
from handlers.errors import tell_user
from handlers.state import read_state
from handlers.verification.ids import Verification as V
from handlers.verification.views import (
    OTP_TITLE,
    already_running,
    code_problem_text,
    code_sent_text,
    daily_code_limit,
    otp_done,
    otp_form,
    receiving_locked,
    resend_too_soon,
)
from models import Identity


class VerificationListeners:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _identity(self, body: dict[str, Any], client: AsyncWebClient, action: IdentityAction) -> Identity | None:
        """The identity a button belongs to, if it is in the clicking user's workspace and the user may do
        `action` with it; otherwise the user is told why not and None is returned."""
        try:
            identity_id = int(body["actions"][0]["value"])
            identity = await self.services.identities.get(identity_id)
        except (KeyError, ValueError, NotFound):
            identity = None
        if identity is None or identity.team_id != body.get("team", {}).get("id"):
            await tell_user(client, body, "This identity no longer exists.")
            return None
        try:
            await self.services.policy.require(body["user"]["id"], identity, action)
        except NotPermitted as refusal:
            await tell_user(client, body, not_permitted_text(refusal))
            return None
        return identity

    async def _remember_panel(self, body: dict[str, Any], identity: Identity) -> None:
        """The panel the user works in is the one to keep up to date."""
        container = body.get("container") or {}
        if container.get("type") == "message" and container.get("message_ts"):
            await self.services.identities.remember_panel(identity, (container["channel_id"], container["message_ts"]))

    async def send_test_email(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if identity := await self._identity(body, client, IdentityAction.RUN_STEPS):
            await self._remember_panel(body, identity)
            try:
                await self.services.verification.run_sending(identity.id, body["user"]["id"])
            except AlreadyRunning as exc:
                await tell_user(client, body, already_running(exc.step))
            except NotPermitted as refusal:
                await tell_user(client, body, not_permitted_text(refusal))

    async def send_otp(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if not (identity := await self._identity(body, client, IdentityAction.SEND_CODE)):
            return
        await self._remember_panel(body, identity)
        try:
            outcome = await self.services.verification.send_otp(identity.id, body["user"]["id"])
        except ResendTooSoon as exc:
            await tell_user(client, body, resend_too_soon(exc.seconds))
        except DailyCodeLimit as exc:
            await tell_user(client, body, daily_code_limit(exc.next_at))
        except ReceivingLocked as exc:
            await tell_user(client, body, receiving_locked(exc.until))
        except NotPermitted as refusal:
            await tell_user(client, body, not_permitted_text(refusal))
        else:
            await tell_user(client, body, code_sent_text(outcome))

    async def enter_otp(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Open the modal at once (the trigger id lives ~3 s): only reads come before it."""
        await ack()
        if identity := await self._identity(body, client, IdentityAction.ENTER_CODE):
            await client.views_open(trigger_id=body["trigger_id"], view=otp_form(identity))
            await self._remember_panel(body, identity)

    async def submit_otp(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            identity = await self.services.identities.get(int(view.get("private_metadata") or 0))
        except (ValueError, NotFound):
            await ack(response_action="errors", errors={V.otp_block: "This identity no longer exists."})
            return
        typed = read_state(view).get(V.otp_block) or ""
        try:
            result, recorded = await self.services.verification.check_otp(identity.id, typed, body["user"]["id"])
        except NotPermitted as refusal:
            await ack(response_action="update", view=refused_view(OTP_TITLE, refusal))
            return
        if result.ok:
            await ack(response_action="update", view=otp_done(identity))
        else:
            await ack(response_action="errors", errors={V.otp_block: code_problem_text(result)})
        await self.services.verification.announce(recorded)  # Slack updates only after the modal's ack

    async def send_response(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if identity := await self._identity(body, client, IdentityAction.RUN_STEPS):
            await self._remember_panel(body, identity)
            try:
                await self.services.verification.start_tracking(identity.id, body["user"]["id"])
            except AlreadyRunning as exc:
                await tell_user(client, body, already_running(exc.step))
            except NotPermitted as refusal:
                await tell_user(client, body, not_permitted_text(refusal))
