"""The three-step verification: Sending, Receiving (a one-time password) and Tracking (the CC tracking copy).

Every state change is a conditional UPDATE (… WHERE status = 'pending' AND attempt = n), so a result, a late copy
or a timeout is applied exactly once, whichever process sees it first, and survives restarts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.delivery import Delivery
from bot.mail.messages import new_token, otp_message, response_message, sending_test_message
from bot.mail.outbound import SmtpFailure
from bot.services import audit
from bot.services.errors import NotFound
from bot.services.identities import IdentityService, Updated
from bot.services.notifier import Notifier
from bot.services.otp import LIFETIME, OtpChallenges, OtpCheck
from models import Database, Identity, IdentityKind, IdentityStatus, StepName, StepStatus, VerificationStep
from models.base import utcnow

log = logging.getLogger(__name__)

STEP_LABELS = {StepName.SENDING: "Sending", StepName.RECEIVING: "Receiving", StepName.TRACKING: "Tracking"}
STALE_PENDING = timedelta(minutes=2)  # a Sending/Receiving attempt still "pending" after this was interrupted


@dataclass(frozen=True)
class StepEvent:
    """Something happened to a step: what the channel history records."""

    step: str
    status: str
    at: datetime
    text: str
    actor: str | None


class AlreadyRunning(Exception):
    pass


class VerificationService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        identities: IdentityService,
        otp: OtpChallenges,
        delivery: Delivery,
        *,
        platform_sender: str,
        tracking_timeout: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.identities = identities
        self.otp = otp
        self.delivery = delivery
        self.platform_sender = platform_sender
        self.tracking_timeout = timedelta(seconds=tracking_timeout)
        self.clock = clock

    # ---- reading ---------------------------------------------------------------------------------------
    async def steps(self, identity_id: int) -> dict[str, VerificationStep]:
        async with self.db.transaction() as session:
            await self._ensure_steps(session, identity_id)
        async with self.db.session() as session:
            rows = await session.scalars(select(VerificationStep).where(VerificationStep.identity_id == identity_id))
            return {row.step: row for row in rows.all()}

    @staticmethod
    async def _ensure_steps(session: AsyncSession, identity_id: int) -> None:
        existing = set(
            await session.scalars(select(VerificationStep.step).where(VerificationStep.identity_id == identity_id))
        )
        for name in StepName:
            if name.value not in existing:
                session.add(VerificationStep(identity_id=identity_id, step=name.value))
        await session.flush()

    # ---- the panel -------------------------------------------------------------------------------------
    async def post_panel(self, identity_id: int) -> None:
        """Post a fresh verification panel for the identity in its notices channel (`/identity verify`)."""
        identity = await self.identities.get(identity_id)
        steps = await self.steps(identity_id)
        where = await self.notifier.panel_posted(identity, steps)
        if where is not None:
            async with self.db.transaction() as session:
                await session.execute(
                    update(Identity).where(Identity.id == identity_id).values(panel_channel=where[0], panel_ts=where[1])
                )

    async def use_panel(self, identity: Identity, channel: str, ts: str) -> None:
        """Make this panel message the one that is updated (the user just clicked in it)."""
        if (identity.panel_channel, identity.panel_ts) == (channel, ts):
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(Identity).where(Identity.id == identity.id).values(panel_channel=channel, panel_ts=ts)
            )
        identity.panel_channel, identity.panel_ts = channel, ts

    async def _changed(self, identity_id: int, event: StepEvent) -> None:
        identity = await self.identities.get(identity_id)
        steps = await self.steps(identity_id)
        await self.notifier.step_changed(identity, steps, event)

    async def _start(self, identity_id: int, step: StepName, actor: str, **values: object) -> int:
        """Mark a step pending (a new attempt). Refuses while a recent attempt of the same step is running."""
        now = self.clock()
        async with self.db.transaction() as session:
            await self._ensure_steps(session, identity_id)
            row = await session.scalar(
                select(VerificationStep)
                .where(VerificationStep.identity_id == identity_id, VerificationStep.step == step.value)
                .with_for_update()
            )
            assert row is not None
            if (
                step == StepName.SENDING  # a new code or response email simply replaces the previous one
                and row.status == StepStatus.PENDING.value
                and row.started_at is not None
                and now - row.started_at < STALE_PENDING
            ):
                raise AlreadyRunning(f"{STEP_LABELS[step]} verification is already running.")
            attempt = row.attempt + 1
            await session.execute(
                update(VerificationStep)
                .where(VerificationStep.id == row.id, VerificationStep.attempt == row.attempt)
                .values(
                    status=StepStatus.PENDING.value,
                    attempt=attempt,
                    started_at=now,
                    finished_at=None,
                    detail="",
                    updated_at=now,
                    **values,
                )
            )
            audit.record(
                session,
                actor=actor,
                action=f"verification.{step.value}.started",
                identity_id=identity_id,
                attempt=attempt,
            )
        return attempt

    async def _finish(
        self,
        identity_id: int,
        step: StepName,
        *,
        attempt: int | None,
        ok: bool,
        detail: str,
        actor: str,
        token: str | None = None,
        allow_from_failed: bool = False,
    ) -> bool:
        """Record a step's outcome once. Returns False when another process (or a newer attempt) got there first."""
        now = self.clock()
        async with self.db.transaction() as session:
            allowed = [StepStatus.PENDING.value] + ([StepStatus.FAILED.value] if allow_from_failed else [])
            conditions = [
                VerificationStep.identity_id == identity_id,
                VerificationStep.step == step.value,
                VerificationStep.status.in_(allowed),
            ]
            if attempt is not None:
                conditions.append(VerificationStep.attempt == attempt)
            if token is not None:
                conditions.append(VerificationStep.token == token)
            values: dict[str, object] = {
                "status": StepStatus.VERIFIED.value if ok else StepStatus.FAILED.value,
                "detail": detail,
                "finished_at": now,
                "updated_at": now,
            }
            if ok:
                values["verified_at"] = now
            result = await session.execute(update(VerificationStep).where(*conditions).values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            audit.record(
                session,
                actor=actor,
                action=f"verification.{step.value}.{'verified' if ok else 'failed'}",
                identity_id=identity_id,
                detail=detail,
            )
        label = STEP_LABELS[step]
        text = f"{label} Verified" if ok else f"{label} failed: {detail}"
        status = StepStatus.VERIFIED.value if ok else StepStatus.FAILED.value
        await self._changed(identity_id, StepEvent(step.value, status, now, text, actor))
        if ok:
            await self._maybe_ready(identity_id)
        return True

    async def _maybe_ready(self, identity_id: int) -> None:
        steps = await self.steps(identity_id)
        if not all(s.status == StepStatus.VERIFIED.value for s in steps.values()):
            return
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Identity)
                .where(Identity.id == identity_id, Identity.status != IdentityStatus.READY.value)
                .values(status=IdentityStatus.READY.value, updated_at=self.clock())
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return
            audit.record(session, actor="verification", action="identity.ready", identity_id=identity_id)
        identity = await self.identities.get(identity_id)
        await self.notifier.identity_ready(identity, steps)

    # ---- 1. Sending ------------------------------------------------------------------------------------
    async def run_sending(self, identity_id: int, actor: str) -> None:
        """Send a real test email as the identity; verified when the server accepts it."""
        identity = await self.identities.get(identity_id)
        token = new_token()
        attempt = await self._start(identity_id, StepName.SENDING, actor, token=token)
        await self._changed(
            identity_id, StepEvent("sending", "pending", self.clock(), "Sending: test email on its way", actor)
        )
        message = sending_test_message(identity.display_name, identity.address, identity.address, token)
        try:
            server = self.identities.smtp_server(identity) if identity.kind == IdentityKind.COMPANY.value else None
            route = await self.delivery.send_as(server, message, sender=identity.address, recipients=[identity.address])
        except SmtpFailure as exc:
            await self._finish(
                identity_id, StepName.SENDING, attempt=attempt, ok=False, detail=exc.diagnosis.text, actor=actor
            )
            return
        except Exception:
            log.exception("sending verification of identity %s failed unexpectedly", identity_id)
            await self._finish(
                identity_id,
                StepName.SENDING,
                attempt=attempt,
                ok=False,
                detail="Something went wrong on our side; please try again.",
                actor=actor,
            )
            return
        await self._finish(
            identity_id, StepName.SENDING, attempt=attempt, ok=True, detail=f"Test email {route}.", actor=actor
        )

    # ---- 2. Receiving ----------------------------------------------------------------------------------
    async def send_otp(self, identity_id: int, actor: str) -> str:
        """Email a one-time password to the forwarding address. Raises ResendTooSoon. Returns where it went."""
        identity = await self.identities.get(identity_id)
        challenge_id, code = await self.otp.issue(identity_id, identity.forwarding_address)
        attempt = await self._start(identity_id, StepName.RECEIVING, actor)
        minutes = int(LIFETIME.total_seconds() // 60)
        message = otp_message(self.platform_sender, identity.forwarding_address, identity.address, code, minutes)
        try:
            await self.delivery.send_from_platform(
                message, sender=self.platform_sender, recipients=[identity.forwarding_address]
            )
        except Exception as exc:
            await self.otp.cancel(challenge_id)
            detail = exc.diagnosis.text if isinstance(exc, SmtpFailure) else "the code could not be sent"
            if not isinstance(exc, SmtpFailure):
                log.exception("sending the OTP for identity %s failed", identity_id)
            await self._finish(
                identity_id,
                StepName.RECEIVING,
                attempt=attempt,
                ok=False,
                detail=f"The code could not be emailed to {identity.forwarding_address}: {detail}",
                actor=actor,
            )
            return identity.forwarding_address
        await self._changed(
            identity_id,
            StepEvent(
                "receiving",
                "pending",
                self.clock(),
                f"Receiving: a one-time password was emailed to {identity.forwarding_address} "
                f"(valid {minutes} minutes)",
                actor,
            ),
        )
        return identity.forwarding_address

    async def check_otp(self, identity_id: int, typed: str, actor: str) -> OtpCheck:
        result = await self.otp.check(identity_id, typed)
        async with self.db.transaction() as session:
            audit.record(
                session,
                actor=actor,
                action="verification.receiving.code_checked",
                identity_id=identity_id,
                correct=result.ok,
                locked=result.locked,
            )
        if result.ok:
            await self._finish(
                identity_id,
                StepName.RECEIVING,
                attempt=None,
                ok=True,
                detail="The one-time password matched.",
                actor=actor,
                allow_from_failed=True,
            )
        elif result.locked:
            await self._finish(
                identity_id,
                StepName.RECEIVING,
                attempt=None,
                ok=False,
                detail="the code was locked after 5 wrong tries.",
                actor=actor,
            )
        return result

    # ---- 3. Tracking -----------------------------------------------------------------------------------
    async def start_tracking(self, identity_id: int, actor: str) -> None:
        """Send a reply-like response email to the identity; its copy must reach the CC tracking address."""
        identity = await self.identities.get(identity_id)
        token = new_token()
        deadline = self.clock() + self.tracking_timeout
        attempt = await self._start(identity_id, StepName.TRACKING, actor, token=token, deadline=deadline)
        message = response_message(self.platform_sender, identity.display_name, identity.address, token)
        try:
            route = await self.delivery.send_from_platform(
                message, sender=self.platform_sender, recipients=[identity.address]
            )
        except Exception as exc:
            detail = exc.diagnosis.text if isinstance(exc, SmtpFailure) else "the response email could not be sent"
            if not isinstance(exc, SmtpFailure):
                log.exception("tracking verification of identity %s failed", identity_id)
            await self._finish(identity_id, StepName.TRACKING, attempt=attempt, ok=False, detail=detail, actor=actor)
            return
        where = (
            "the CC tracking address"
            if identity.kind == IdentityKind.COMPANY.value
            else "the platform's inbound server"
        )
        minutes = max(1, round(self.tracking_timeout.total_seconds() / 60))
        await self._changed(
            identity_id,
            StepEvent(
                "tracking",
                "pending",
                self.clock(),
                f"Tracking: response email sent to {identity.address} ({route}); waiting up to "
                f"{minutes} min for its copy at {where}",
                actor,
            ),
        )

    async def on_tokens(self, tokens: list[str], message_id: int) -> None:
        """Called for stored inbound mail carrying our tokens: a tracking copy verifies its step (even a late one
        that arrives after the step timed out, as long as no newer attempt replaced its token)."""
        for token in tokens:
            async with self.db.session() as session:
                row = await session.scalar(
                    select(VerificationStep).where(
                        VerificationStep.token == token, VerificationStep.step == StepName.TRACKING.value
                    )
                )
            if row is None:
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
                        VerificationStep.step == StepName.TRACKING.value,
                        VerificationStep.status == StepStatus.PENDING.value,
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
                if identity.kind == IdentityKind.COMPANY.value
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

    # ---- resets ----------------------------------------------------------------------------------------
    async def reset(self, identity_id: int, steps: list[StepName], *, actor: str, reason: str) -> None:
        """Settings changed: the affected steps must be run again and the identity is no longer ready."""
        if not steps:
            return
        now = self.clock()
        async with self.db.transaction() as session:
            await self._ensure_steps(session, identity_id)
            await session.execute(
                update(VerificationStep)
                .where(VerificationStep.identity_id == identity_id, VerificationStep.step.in_([s.value for s in steps]))
                .values(
                    status=StepStatus.NOT_RUN.value,
                    verified_at=None,
                    finished_at=None,
                    token=None,
                    deadline=None,
                    detail=reason,
                    attempt=VerificationStep.attempt + 1,
                    updated_at=now,
                )
            )
            await session.execute(
                update(Identity)
                .where(Identity.id == identity_id)
                .values(status=IdentityStatus.NOT_VERIFIED.value, updated_at=now)
            )
            audit.record(
                session,
                actor=actor,
                action="verification.reset",
                identity_id=identity_id,
                steps=[s.value for s in steps],
                reason=reason,
            )
        names = " and ".join(STEP_LABELS[s] for s in steps)
        await self._changed(
            identity_id,
            StepEvent(
                steps[0].value, StepStatus.NOT_RUN.value, now, f"{names} must be verified again: {reason}", actor
            ),
        )

    async def after_update(self, updated: Updated, *, actor: str) -> None:
        """Changing SMTP settings resets Sending and Tracking; changing the forwarding address resets Receiving."""
        steps: list[StepName] = []
        reasons: list[str] = []
        if updated.smtp_changed:
            steps += [StepName.SENDING, StepName.TRACKING]
            reasons.append("the SMTP settings changed")
        if updated.forwarding_changed:
            steps.append(StepName.RECEIVING)
            reasons.append("the response forwarding address changed")
        await self.reset(updated.identity.id, steps, actor=actor, reason=" and ".join(reasons))

    async def identity_or_none(self, identity_id: int) -> Identity | None:
        try:
            return await self.identities.get(identity_id)
        except NotFound:
            return None
