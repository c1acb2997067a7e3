"""Listeners of the verification panel's buttons and the OTP modal."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.errors import NotFound
from bot.services.registry import Services
from bot.services.verification import AlreadyRunning, ResendTooSoon
from handlers.errors import tell_user
from handlers.state import read_state
from handlers.verification.ids import Verification as V
from handlers.verification.views import (
    already_running,
    code_problem_text,
    code_sent_text,
    otp_done,
    otp_form,
    resend_too_soon,
)
from models import Identity


class VerificationListeners:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _identity(self, body: dict[str, Any], client: AsyncWebClient) -> Identity | None:
        """The identity a button belongs to, if it is in the clicking user's workspace."""
        try:
            identity_id = int(body["actions"][0]["value"])
            identity = await self.services.identities.get(identity_id)
        except (KeyError, ValueError, NotFound):
            identity = None
        if identity is None or identity.team_id != body.get("team", {}).get("id"):
            await tell_user(client, body, "This identity no longer exists.")
            return None
        container = body.get("container") or {}
        if container.get("type") == "message" and container.get("message_ts"):
            # The panel the user works in is the one to keep up to date.
            await self.services.identities.remember_panel(identity, (container["channel_id"], container["message_ts"]))
        return identity

    async def send_test_email(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if identity := await self._identity(body, client):
            try:
                await self.services.verification.run_sending(identity.id, body["user"]["id"])
            except AlreadyRunning as exc:
                await tell_user(client, body, already_running(exc.step))

    async def send_otp(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if identity := await self._identity(body, client):
            try:
                outcome = await self.services.verification.send_otp(identity.id, body["user"]["id"])
            except ResendTooSoon as exc:
                await tell_user(client, body, resend_too_soon(exc.seconds))
                return
            await tell_user(client, body, code_sent_text(outcome))

    async def enter_otp(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Open the modal first (the trigger id lives ~3 s), then fill in which identity and address it is for."""
        await ack()
        try:
            identity_id = int(body["actions"][0]["value"])
        except (KeyError, ValueError):
            return
        opened = (await client.views_open(trigger_id=body["trigger_id"], view=otp_form(identity_id)))["view"]
        if identity := await self._identity(body, client):
            await client.views_update(
                view_id=opened["id"], hash=opened.get("hash"), view=otp_form(identity_id, identity)
            )

    async def submit_otp(self, ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        try:
            identity = await self.services.identities.get(int(view.get("private_metadata") or 0))
        except (ValueError, NotFound):
            await ack(response_action="errors", errors={V.otp_block: "This identity no longer exists."})
            return
        typed = read_state(view).get(V.otp_block) or ""
        result, recorded = await self.services.verification.check_otp(identity.id, typed, body["user"]["id"])
        if result.ok:
            await ack(response_action="update", view=otp_done(identity))
        else:
            await ack(response_action="errors", errors={V.otp_block: code_problem_text(result)})
        await self.services.verification.announce(recorded)  # Slack updates only after the modal's ack

    async def send_response(self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        if identity := await self._identity(body, client):
            try:
                await self.services.verification.start_tracking(identity.id, body["user"]["id"])
            except AlreadyRunning as exc:
                await tell_user(client, body, already_running(exc.step))
