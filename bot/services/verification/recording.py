"""Recording verification steps: a new attempt starts, an outcome is stored once.

Every state change is a conditional UPDATE (… WHERE status = 'pending' AND attempt = n), so a result, a late copy
or a timeout is applied exactly once, whichever process sees it first, and survives restarts. The identity's
readiness is refreshed in the same transaction (identities/readiness.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update

from bot.services import audit
from bot.services.identities.readiness import ensure_steps, refresh_readiness
from bot.services.notifier import StepEvent
from bot.services.verification.outcomes import AlreadyRunning, Recorded
from models import Database, IdentityStatus, StepName, StepStatus, VerificationStep

STALE_PENDING = timedelta(minutes=2)  # a Sending attempt still "pending" after this was interrupted


class StepRecorder:
    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock

    async def start(self, identity_id: int, step: StepName, actor: str, **values: object) -> int:
        """Mark a step pending (a new attempt); returns the attempt number. Refuses while a recent Sending attempt
        is running. A step verified before stays counted for readiness while its re-run is in flight (its
        verified_at is kept): only a failure takes a ready identity out of service."""
        now = self.clock()
        async with self.db.transaction() as session:
            await ensure_steps(session, identity_id)
            row = await session.scalar(
                select(VerificationStep)
                .where(VerificationStep.identity_id == identity_id, VerificationStep.step == step)
                .with_for_update()
            )
            assert row is not None
            if (
                step == StepName.SENDING  # a new code or response email simply replaces the previous one
                and row.status == StepStatus.PENDING
                and row.started_at is not None
                and now - row.started_at < STALE_PENDING
            ):
                raise AlreadyRunning(step)
            attempt = row.attempt + 1
            await session.execute(
                update(VerificationStep)
                .where(VerificationStep.id == row.id, VerificationStep.attempt == row.attempt)
                .values(
                    status=StepStatus.PENDING,
                    attempt=attempt,
                    started_at=now,
                    finished_at=None,
                    detail="",
                    updated_at=now,
                    **values,
                )
            )
            await refresh_readiness(session, identity_id, now)
            audit.record(
                session, actor=actor, action=f"verification.{step}.started", identity_id=identity_id, attempt=attempt
            )
        return attempt

    async def record(
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
        locked_until: datetime | None = None,
    ) -> Recorded | None:
        """Store a step's outcome once, with the identity's readiness. None when another process (or a newer
        attempt, or a reset) got there first. A failure forgets the earlier verification."""
        now = self.clock()
        status = StepStatus.VERIFIED if ok else StepStatus.FAILED
        async with self.db.transaction() as session:
            allowed = [StepStatus.PENDING] + ([StepStatus.FAILED] if allow_from_failed else [])
            conditions = [
                VerificationStep.identity_id == identity_id,
                VerificationStep.step == step,
                VerificationStep.status.in_(allowed),
            ]
            if attempt is not None:
                conditions.append(VerificationStep.attempt == attempt)
            if token is not None:
                conditions.append(VerificationStep.token == token)
            values: dict[str, object] = {
                "status": status,
                "detail": detail,
                "finished_at": now,
                "updated_at": now,
                "verified_at": now if ok else None,
            }
            result = await session.execute(update(VerificationStep).where(*conditions).values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None
            readiness = await refresh_readiness(session, identity_id, now)
            audit.record(
                session, actor=actor, action=f"verification.{step}.{status}", identity_id=identity_id, detail=detail
            )
            if readiness == IdentityStatus.READY:
                audit.record(session, actor="verification", action="identity.ready", identity_id=identity_id)
            elif readiness == IdentityStatus.NOT_VERIFIED:
                audit.record(
                    session, actor="verification", action="identity.not_ready", identity_id=identity_id, step=step
                )
        event = StepEvent(step, status, now, actor, detail=detail, locked_until=locked_until)
        return Recorded(identity_id, event, readiness)
