"""The Slack implementation of the services' Notifier: turns domain events into channel messages."""

from __future__ import annotations

import logging
from datetime import datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.notifier import HealthEvent, HealthNotice, LifecycleEvent, OperatorNotice, SignInOutcome, StepEvent
from bot.services.policy import ManagerDirectory
from handlers.blocks import Message
from handlers.health.views import checked_message, health_message
from handlers.identity.lifecycle_view import lifecycle_message, panel_retired
from handlers.identity.messages import identity_updated
from handlers.identity.sign_in import ModalUpdates
from handlers.limits.evidence_view import increase_ended, limit_reached
from handlers.limits.views import approval_request, decision_for_requester, limits_changed
from handlers.operator import operator_message
from handlers.verification.views import (
    identity_panel,
    not_ready_message,
    ready_message,
    receiving_locked_message,
    step_event_message,
)
from models import Identity, LimitNotice, LimitRequest, VerificationStep

log = logging.getLogger(__name__)


class SlackNotifier:
    def __init__(
        self,
        client: AsyncWebClient,
        managers: ManagerDirectory,
        *,
        approvals_channel: str | None = None,
        platform_domain: str = "",
        ops_channel: str | None = None,
        health_mention: str | None = None,
    ) -> None:
        self.client = client
        self.managers = managers
        self.approvals_channel = approvals_channel
        self.modals = ModalUpdates(client, platform_domain=platform_domain)
        self.ops_channel = ops_channel
        self.health_mention = health_mention

    async def sign_in_finished(self, outcome: SignInOutcome) -> None:
        await self.modals.sign_in_finished(outcome)

    async def post(
        self, channel: str, message: Message, *, fallback_user: str | None = None, thread_ts: str | None = None
    ) -> tuple[str, str] | None:
        """Post to a channel. If the bot can't post there, tell `fallback_user` by DM instead of losing it."""
        try:
            kwargs = message.as_kwargs() if message.blocks else {"text": message.text}
            resp = await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, **kwargs)
            return resp["channel"], resp["ts"]
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("could not post to %s: %s", channel, error)
        except Exception:  # Slack unreachable: what happened is stored; the message is lost, not the work
            log.exception("could not post to %s", channel)
            return None
        if not fallback_user:
            return None
        try:
            await self.client.chat_postMessage(
                channel=fallback_user,
                text=f"I couldn't post to <#{channel}> ({error}). Invite me there with `/invite @Identity Bot`. "
                f"Here is what I wanted to say:\n{message.text}",
            )
        except Exception:
            log.exception("could not tell %s either", fallback_user)
        return None

    async def identity_created(self, identity: Identity, request: LimitRequest | None) -> tuple[str, str] | None:
        message = identity_panel(identity, {}, request, new=True)
        return await self.post(identity.notices_channel, message, fallback_user=identity.created_by)

    async def identity_updated(self, identity: Identity, changed: list[str], actor: str) -> None:
        message = identity_updated(identity, changed, actor, identity.updated_at)
        await self.post(identity.notices_channel, message, fallback_user=actor)

    async def panel_posted(self, identity: Identity, steps: dict[str, VerificationStep]) -> tuple[str, str] | None:
        return await self.post(identity.notices_channel, identity_panel(identity, steps), fallback_user=None)

    async def _refresh_panel(self, identity: Identity, steps: dict[str, VerificationStep]) -> None:
        if not (identity.panel_channel and identity.panel_ts):
            return
        try:
            await self.client.chat_update(
                channel=identity.panel_channel, ts=identity.panel_ts, **identity_panel(identity, steps).as_kwargs()
            )
        except Exception:  # best effort: the state is in the database; the next change redraws the panel
            log.exception("could not update the panel of identity %s", identity.id)

    async def step_changed(self, identity: Identity, steps: dict[str, VerificationStep], event: StepEvent) -> None:
        """Update the panel in place and keep the history as a thread reply with the time."""
        await self._refresh_panel(identity, steps)
        channel = identity.panel_channel or identity.notices_channel
        await self.post(channel, step_event_message(identity, event), thread_ts=identity.panel_ts)

    async def identity_ready(self, identity: Identity, steps: dict[str, VerificationStep]) -> None:
        await self._refresh_panel(identity, steps)
        await self.post(identity.notices_channel, ready_message(identity))

    async def identity_not_ready(self, identity: Identity, event: StepEvent) -> None:
        await self.post(identity.notices_channel, not_ready_message(identity, event), fallback_user=identity.created_by)

    async def receiving_locked(self, identity: Identity, until: datetime) -> None:
        await self.post(
            identity.notices_channel, receiving_locked_message(identity, until), fallback_user=identity.created_by
        )

    # ---- limits ----------------------------------------------------------------------------------------
    async def limit_request_created(self, identity: Identity, request: LimitRequest) -> list[tuple[str, str]]:
        """To APPROVALS_CHANNEL, or as a DM to each manager. Returns where it went."""
        message = approval_request(identity, request)
        targets = [self.approvals_channel] if self.approvals_channel else sorted(await self.managers.manager_ids())
        posted = [p for t in targets if (p := await self.post(t, message)) is not None]
        if not posted:
            await self.post(
                identity.notices_channel,
                Message(
                    text=f"The limit request for {identity.address} could not reach a manager: set MANAGERS or "
                    "APPROVALS_CHANNEL for Identity Bot.",
                    blocks=[],
                ),
            )
        return posted

    async def _update_request_messages(self, identity: Identity, request: LimitRequest) -> None:
        message = approval_request(identity, request)
        for where in request.messages or []:
            try:
                await self.client.chat_update(channel=where["channel"], ts=where["ts"], **message.as_kwargs())
            except Exception:
                log.exception("could not update limit request %s", request.id)

    async def limit_request_closed(self, identity: Identity, request: LimitRequest) -> None:
        await self._update_request_messages(identity, request)

    async def limit_request_decided(self, identity: Identity, request: LimitRequest) -> None:
        await self._update_request_messages(identity, request)
        await self.post(
            identity.notices_channel, decision_for_requester(identity, request), fallback_user=request.requested_by
        )

    async def limits_changed(self, identity: Identity, actor: str) -> None:
        await self.post(identity.notices_channel, limits_changed(identity, actor), fallback_user=actor)

    async def operator_notice(self, notice: OperatorNotice) -> None:
        """To OPS_CHANNEL when set; the services have already logged it."""
        if self.ops_channel:
            await self.post(self.ops_channel, operator_message(notice))

    async def health_changed(
        self, identity: Identity, steps: dict[str, VerificationStep], notice: HealthNotice
    ) -> None:
        """The panel shows the last check; a change is one message in the channel; a run someone asked for that
        changed nothing is told to them alone."""
        await self._refresh_panel(identity, steps)
        if notice.event != HealthEvent.CHECKED:
            message = health_message(identity, notice, mention=self.health_mention)
            await self.post(identity.notices_channel, message, fallback_user=identity.created_by)
        elif notice.actor:
            message = checked_message(identity, notice)
            try:
                await self.client.chat_postEphemeral(
                    channel=identity.notices_channel, user=notice.actor, **message.as_kwargs()
                )
            except Exception:  # not in that channel (or Slack failed): a DM instead
                await self.post(notice.actor, message)

    # ---- issue 13: lifecycle, limit notices, time-boxed increases ----------------------------------------------
    async def identity_lifecycle(self, identity: Identity, event: LifecycleEvent) -> None:
        if identity.deleted_at is not None:
            await self._retire_panel(identity)
        await self.post(identity.notices_channel, lifecycle_message(identity, event), fallback_user=event.actor)

    async def _retire_panel(self, identity: Identity) -> None:
        """A deleted identity's panel loses its buttons."""
        if not (identity.panel_channel and identity.panel_ts):
            return
        try:
            await self.client.chat_update(
                channel=identity.panel_channel, ts=identity.panel_ts, **panel_retired(identity).as_kwargs()
            )
        except Exception:  # noqa: BLE001 - best effort
            log.exception("could not retire the panel of identity %s", identity.id)

    async def limit_reached(self, identity: Identity, notice: LimitNotice) -> tuple[str, str] | None:
        return await self.post(
            identity.notices_channel, limit_reached(identity, notice), fallback_user=identity.created_by
        )

    async def limit_notice_updated(self, identity: Identity, notice: LimitNotice) -> None:
        if notice.channel and notice.ts:
            try:
                await self.client.chat_update(
                    channel=notice.channel, ts=notice.ts, **limit_reached(identity, notice).as_kwargs()
                )
            except Exception:  # noqa: BLE001 - best effort: the count is in the database
                log.exception("could not update limit notice %s", notice.id)

    async def limit_increase_ended(self, identity: Identity, request: LimitRequest) -> None:
        await self._update_request_messages(identity, request)
        await self.post(identity.notices_channel, increase_ended(identity, request), fallback_user=request.requested_by)

    async def usage_changed(self, identity: Identity) -> None:
        return None  # nothing to post; the Home tab refresh (handlers/home/refresh.py) follows every event
