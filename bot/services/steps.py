"""Database rules about verification steps shared by the identity and verification services.

Whether an identity is ready is decided in SQL, in the same transaction as the step change, so a reset and a
result arriving at once can't leave an identity "ready" with a step that is not verified."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import Identity, IdentityStatus, OtpChallenge, StepName, StepStatus, VerificationStep


async def ensure_steps(session: AsyncSession, identity_id: int) -> None:
    """The identity has its three step rows (created lazily, idempotent)."""
    existing = set(
        await session.scalars(select(VerificationStep.step).where(VerificationStep.identity_id == identity_id))
    )
    for name in StepName:
        if name.value not in existing:
            session.add(VerificationStep(identity_id=identity_id, step=name.value))
    await session.flush()


async def reset_steps(
    session: AsyncSession, identity_id: int, steps: list[StepName], *, reason: str, now: datetime
) -> None:
    """The given steps must run again (their settings changed): not run, no pending token, identity not ready.
    Resetting Receiving also closes any open one-time password, which was sent to the old address."""
    await ensure_steps(session, identity_id)
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
    if StepName.RECEIVING in steps:
        await session.execute(
            update(OtpChallenge)
            .where(OtpChallenge.identity_id == identity_id, OtpChallenge.closed_at.is_(None))
            .values(closed_at=now, closed_reason="reset")
        )
    await session.execute(
        update(Identity).where(Identity.id == identity_id).values(status=IdentityStatus.NOT_VERIFIED.value)
    )


async def refresh_readiness(session: AsyncSession, identity_id: int, now: datetime) -> str | None:
    """Set the identity ready when all three steps are verified, not ready otherwise. Returns "ready" or
    "not_ready" when the status changed, None when it did not."""
    verified = (
        select(func.count())
        .select_from(VerificationStep)
        .where(VerificationStep.identity_id == identity_id, VerificationStep.status == StepStatus.VERIFIED.value)
        .scalar_subquery()
    )
    became_ready = await session.execute(
        update(Identity)
        .where(Identity.id == identity_id, Identity.status != IdentityStatus.READY.value, verified == len(StepName))
        .values(status=IdentityStatus.READY.value, updated_at=now)
    )
    if became_ready.rowcount == 1:  # type: ignore[attr-defined]
        return "ready"
    lost_ready = await session.execute(
        update(Identity)
        .where(Identity.id == identity_id, Identity.status == IdentityStatus.READY.value, verified < len(StepName))
        .values(status=IdentityStatus.NOT_VERIFIED.value, updated_at=now)
    )
    return "not_ready" if lost_ready.rowcount == 1 else None  # type: ignore[attr-defined]
