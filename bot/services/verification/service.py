"""The three-step verification: Sending, Receiving (a one-time password) and Tracking (the CC tracking copy).

Only an identity's creator and managers may run its steps, ask for and enter its codes (policy.py). Each change is
first recorded in the database (recording.py: once, with the identity's readiness, in the same transaction) and only
then announced in Slack; announcing is best effort, so a Slack outage never loses or blocks a result."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select

from bot.mail.delivery import Delivery
from bot.mail.domains import PlatformDomains
from bot.mail.messages import new_token, otp_message, response_message, sending_test_message
from bot.mail.outbound import SmtpFailure
from bot.services import audit
from bot.services.identities import IdentityService, Updated
from bot.services.identities.readiness import ensure_steps
from bot.services.notifier import Notifier, StepEvent
from bot.services.policy import IdentityAction, Policy
from bot.services.verification.otp import LIFETIME, LOCKS_IN_A_ROW, MAX_WRONG, CodeProblem, OtpChallenges, OtpCheck
from bot.services.verification.outcomes import CodeSent, Recorded
from bot.services.verification.recording import StepRecorder
from models import (
    Database,
    Identity,
    IdentityKind,
    IdentityStatus,
    InboundMessage,
    StepName,
    StepStatus,
    VerificationStep,
)
from models.base import utcnow

log = logging.getLogger(__name__)

OUR_FAULT = "something went wrong on our side; please try again."


class VerificationService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        identities: IdentityService,
        otp: OtpChallenges,
        delivery: Delivery,
        domains: PlatformDomains,
        *,
        policy: Policy,
        tracking_timeout: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.identities = identities
        self.policy = policy
        self.recorder = StepRecorder(db, clock)
        self.otp = otp
        self.delivery = delivery
        self.platform_sender = domains.sender
        self.tracking_timeout = timedelta(seconds=tracking_timeout)
        self.clock = clock

    # ---- reading and the panel -------------------------------------------------------------------------------
    async def steps(self, identity_id: int) -> dict[str, VerificationStep]:
        async with self.db.transaction() as session:
            await ensure_steps(session, identity_id)
        async with self.db.session() as session:
            rows = await session.scalars(select(VerificationStep).where(VerificationStep.identity_id == identity_id))
            return {row.step: row for row in rows.all()}

    async def post_panel(self, identity_id: int) -> bool:
        """Post a fresh verification panel for the identity in its notices channel (`/identity verify`).
        False when Slack did not take it."""
        identity = await self.identities.get(identity_id)
        where = await self.notifier.panel_posted(identity, await self.steps(identity_id))
        if where is None:
            return False
        await self.identities.remember_panel(identity, where)
        return True

    async def announce(self, recorded: Recorded | None) -> None:
        """Tell Slack about a recorded change: panel in place, a history reply, "ready to use". Best effort: the
        result is already stored, so a Slack failure is logged, not raised."""
        if recorded is None:
            return
        try:
            identity = await self.identities.get(recorded.identity_id)
            steps = await self.steps(recorded.identity_id)
            await self.notifier.step_changed(identity, steps, recorded.event)
            if recorded.readiness == IdentityStatus.READY:
                await self.notifier.identity_ready(identity, steps)
            elif recorded.readiness == IdentityStatus.NOT_VERIFIED:
                await self.notifier.identity_not_ready(identity, recorded.event)
            if recorded.event.locked_until is not None:
                await self.notifier.receiving_locked(identity, recorded.event.locked_until)
        except Exception:
            log.exception("could not announce %s of identity %s", recorded.event.step, recorded.identity_id)

    async def _progress(self, identity_id: int, event: StepEvent) -> None:
        await self.announce(Recorded(identity_id, event, None))

    def _pending(self, step: StepName, actor: str, **details: object) -> StepEvent:
        return StepEvent(step, StepStatus.PENDING, self.clock(), actor, **details)  # type: ignore[arg-type]

    async def _finish(self, identity_id: int, step: StepName, **kwargs: object) -> bool:
        recorded = await self.recorder.record(identity_id, step, **kwargs)  # type: ignore[arg-type]
        await self.announce(recorded)
        return recorded is not None

    # ---- 1. Sending ------------------------------------------------------------------------------------------
    async def _acting(self, identity_id: int, actor: str, action: IdentityAction) -> Identity:
        """The identity, when the actor may do `action` with it; NotPermitted (nothing done) otherwise."""
        identity = await self.identities.get(identity_id)
        await self.policy.require(actor, identity, action)
        return identity

    async def run_sending(self, identity_id: int, actor: str) -> None:
        """Send a real test email as the identity; verified when the server accepts it. Raises NotPermitted,
        AlreadyRunning."""
        identity = await self._acting(identity_id, actor, IdentityAction.RUN_STEPS)
        token = new_token()
        attempt = await self.recorder.start(identity_id, StepName.SENDING, actor, token=token)
        await self._progress(identity_id, self._pending(StepName.SENDING, actor, sent_to=identity.address))
        message = sending_test_message(identity.display_name, identity.address, identity.address, token)
        try:
            server = await self.identities.sending_server(identity)
            route = await self.delivery.send_as(server, message, sender=identity.address, recipients=[identity.address])
        except SmtpFailure as exc:
            detail = exc.diagnosis.text
        except Exception:
            log.exception("sending verification of identity %s failed unexpectedly", identity_id)
            detail = OUR_FAULT
        else:
            detail = ""
        if detail:
            await self._finish(identity_id, StepName.SENDING, attempt=attempt, ok=False, detail=detail, actor=actor)
            return
        await self._finish(
            identity_id, StepName.SENDING, attempt=attempt, ok=True, detail=f"Test email {route}.", actor=actor
        )

    # ---- 2. Receiving ----------------------------------------------------------------------------------------
    async def send_otp(self, identity_id: int, actor: str) -> CodeSent:
        """Email a one-time password to the forwarding address. Raises NotPermitted, ReceivingLocked, DailyCodeLimit,
        ResendTooSoon. A code that could not be sent is a failed attempt of the step (in the channel too), and
        says why."""
        identity = await self._acting(identity_id, actor, IdentityAction.SEND_CODE)
        to = identity.forwarding_address
        challenge_id, code = await self.otp.issue(identity_id, to)
        attempt = await self.recorder.start(identity_id, StepName.RECEIVING, actor)
        minutes = int(LIFETIME.total_seconds() // 60)
        message = otp_message(self.platform_sender, to, identity.address, code, minutes)
        try:
            route = await self.delivery.send_from_platform(message, sender=self.platform_sender, recipients=[to])
        except Exception as exc:
            await self.otp.cancel(challenge_id)
            if isinstance(exc, SmtpFailure):
                detail = exc.diagnosis.text
            else:
                log.exception("sending the OTP for identity %s failed", identity_id)
                detail = OUR_FAULT
            problem = f"the code could not be emailed to {to}: {detail}"
            await self._finish(identity_id, StepName.RECEIVING, attempt=attempt, ok=False, detail=problem, actor=actor)
            return CodeSent(to, None, detail)
        await self._progress(identity_id, self._pending(StepName.RECEIVING, actor, sent_to=to, route=route))
        return CodeSent(to, route)

    async def check_otp(self, identity_id: int, typed: str, actor: str) -> tuple[OtpCheck, Recorded | None]:
        """Check a typed code and store the outcome. Nothing is announced yet (the modal's ack comes first):
        pass the Recorded to announce() afterwards. Raises NotPermitted before the code is looked at (a try by
        someone who may not enter codes uses up nothing)."""
        identity = await self._acting(identity_id, actor, IdentityAction.ENTER_CODE)
        result = await self.otp.check(identity_id, typed, sent_to=identity.forwarding_address)
        recorded = None
        if result.ok:
            recorded = await self.recorder.record(
                identity_id,
                StepName.RECEIVING,
                attempt=None,
                ok=True,
                detail="The one-time password matched.",
                actor=actor,
                allow_from_failed=True,
            )
            if recorded is None:  # the step was reset meanwhile (the forwarding address changed)
                result = OtpCheck(False, CodeProblem.EARLIER_CHECK)
        elif result.locked:
            detail = f"the code was locked after {MAX_WRONG} wrong tries."
            if result.locked_until is not None:
                detail += (
                    f" {LOCKS_IN_A_ROW} codes in a row were locked: no new code can be sent before "
                    f"{result.locked_until:%Y-%m-%d %H:%M} UTC."
                )
            recorded = await self.recorder.record(
                identity_id,
                StepName.RECEIVING,
                attempt=None,
                ok=False,
                detail=detail,
                actor=actor,
                locked_until=result.locked_until,
            )
        async with self.db.transaction() as session:
            audit.record(
                session,
                actor=actor,
                action="verification.receiving.code_checked",
                identity_id=identity_id,
                correct=result.ok,
                locked=result.locked,
            )
        return result, recorded

    # ---- 3. Tracking -----------------------------------------------------------------------------------------
    @staticmethod
    def tracking_recipient(identity: Identity) -> str:
        """Where the copy must arrive: the CC tracking address, or the platform address itself."""
        if identity.kind == IdentityKind.COMPANY and identity.tracking_address:
            return identity.tracking_address
        return identity.address

    async def start_tracking(self, identity_id: int, actor: str) -> None:
        """Send a reply-like response email to the identity; its copy must reach the CC tracking address.
        Raises NotPermitted."""
        identity = await self._acting(identity_id, actor, IdentityAction.RUN_STEPS)
        token = new_token()
        deadline = self.clock() + self.tracking_timeout
        attempt = await self.recorder.start(identity_id, StepName.TRACKING, actor, token=token, deadline=deadline)
        message = response_message(self.platform_sender, identity.display_name, identity.address, token)
        try:
            route = await self.delivery.send_from_platform(
                message, sender=self.platform_sender, recipients=[identity.address]
            )
        except Exception as exc:
            if isinstance(exc, SmtpFailure):
                detail = exc.diagnosis.text
            else:
                log.exception("tracking verification of identity %s failed", identity_id)
                detail = "the response email could not be sent"
            await self._finish(identity_id, StepName.TRACKING, attempt=attempt, ok=False, detail=detail, actor=actor)
            return
        event = self._pending(
            StepName.TRACKING, actor, sent_to=identity.address, route=route, wait=self.tracking_timeout
        )
        await self._progress(identity_id, event)

    async def on_tokens(self, tokens: list[str], message_id: int) -> None:
        """Called for stored inbound mail carrying our tokens. A copy verifies Tracking when it reached the
        identity's own tracking address (a copy sent to another identity's address proves nothing about this one);
        a late copy counts too, as long as no newer attempt replaced its token."""
        async with self.db.session() as session:
            stored = await session.get(InboundMessage, message_id)
            recipients = {r.lower() for r in (stored.rcpt_tos if stored else [])}
        for token in tokens:
            async with self.db.session() as session:
                row = await session.scalar(
                    select(VerificationStep).where(
                        VerificationStep.token == token, VerificationStep.step == StepName.TRACKING
                    )
                )
            if row is None:
                continue
            identity = await self.identities.get(row.identity_id)
            if self.tracking_recipient(identity).lower() not in recipients:
                log.warning("tracking token of identity %s arrived at another address; ignored", identity.id)
                continue
            await self._finish(
                row.identity_id,
                StepName.TRACKING,
                attempt=None,
                ok=True,
                detail=f"The copy of the response email arrived (inbound message {message_id}).",
                actor="inbound",
                token=token,
                allow_from_failed=True,
            )

    async def expire_tracking(self) -> int:
        """Fail tracking checks whose copy did not arrive in time. Safe to run in every process."""
        now = self.clock()
        async with self.db.session() as session:
            due = (
                await session.scalars(
                    select(VerificationStep).where(
                        VerificationStep.step == StepName.TRACKING,
                        VerificationStep.status == StepStatus.PENDING,
                        VerificationStep.deadline <= now,
                    )
                )
            ).all()
        fired = 0
        for row in due:
            identity = await self.identities.get(row.identity_id)
            advice = (
                "check that the CC tracking address is set up as a forwarder in the mailbox "
                f"({identity.tracking_address}) and that no spam rule holds the response email, then try again."
                if identity.kind == IdentityKind.COMPANY
                else "no copy reached the platform's inbound server; please try again."
            )
            if await self._finish(
                row.identity_id,
                StepName.TRACKING,
                attempt=row.attempt,
                ok=False,
                detail=f"no copy arrived in time: {advice}",
                actor="timeout",
                token=row.token,
            ):
                fired += 1
        return fired

    # ---- resets ----------------------------------------------------------------------------------------------
    async def after_update(self, updated: Updated, *, actor: str) -> None:
        """Announce the steps an edit reset (the reset itself happened in the edit's own transaction)."""
        if not updated.reset_steps:
            return
        event = StepEvent(
            updated.reset_steps[0],
            StepStatus.NOT_RUN,
            self.clock(),
            actor,
            detail=updated.reset_reason,
            reset=tuple(updated.reset_steps),
        )
        await self.announce(Recorded(updated.identity.id, event, None))
