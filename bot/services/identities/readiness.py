"""Whether an identity is ready to use, and which verification steps a change makes void: rules in SQL, shared by
identity edits and the verification steps.

Whether an identity is ready is decided in SQL, in the same transaction as the step change, so a reset and a
result arriving at once can't leave an identity "ready" with a step that is not verified. A step counts while it is
verified, and while a re-run of a verified step is in flight (pending with its verified_at kept): a re-run that is
interrupted or never finished does not take a ready identity out of service; a failure or a reset does."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import Identity, IdentityStatus, OtpChallenge, OtpCloseReason, StepName, StepStatus, VerificationStep


async def ensure_steps(session: AsyncSession, identity_id: int) -> None:
    """The identity has its three step rows (created lazily, idempotent)."""
    existing = set(
        await session.scalars(select(VerificationStep.step).where(VerificationStep.identity_id == identity_id))
    )
    for name in StepName:
        if name not in existing:
            session.add(VerificationStep(identity_id=identity_id, step=name))
    await session.flush()


async def reset_steps(
    session: AsyncSession, identity_id: int, steps: list[StepName], *, reason: str, now: datetime
) -> None:
    """The given steps must run again (their settings changed): not run, no pending token, identity not ready.
    Resetting Receiving also closes any open one-time password, which was sent to the old address."""
    await ensure_steps(session, identity_id)
    await session.execute(
        update(VerificationStep)
        .where(VerificationStep.identity_id == identity_id, VerificationStep.step.in_(list(steps)))
        .values(
            status=StepStatus.NOT_RUN,
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
            .values(closed_at=now, closed_reason=OtpCloseReason.RESET)
        )
    await session.execute(update(Identity).where(Identity.id == identity_id).values(status=IdentityStatus.NOT_VERIFIED))


async def refresh_readiness(session: AsyncSession, identity_id: int, now: datetime) -> IdentityStatus | None:
    """Set the identity ready when all three steps are verified, not ready otherwise. Returns the new status when
    it changed, None when it did not."""
    verified = (
        select(func.count())
        .select_from(VerificationStep)
        .where(
            VerificationStep.identity_id == identity_id,
            or_(
                VerificationStep.status == StepStatus.VERIFIED,
                and_(VerificationStep.status == StepStatus.PENDING, VerificationStep.verified_at.is_not(None)),
            ),
        )
        .scalar_subquery()
    )
    became_ready = await session.execute(
        update(Identity)
        .where(Identity.id == identity_id, Identity.status != IdentityStatus.READY, verified == len(StepName))
        .values(status=IdentityStatus.READY, updated_at=now)
    )
    if became_ready.rowcount == 1:  # type: ignore[attr-defined]
        return IdentityStatus.READY
    lost_ready = await session.execute(
        update(Identity)
        .where(Identity.id == identity_id, Identity.status == IdentityStatus.READY, verified < len(StepName))
        .values(status=IdentityStatus.NOT_VERIFIED, updated_at=now)
    )
    return IdentityStatus.NOT_VERIFIED if lost_ready.rowcount == 1 else None  # type: ignore[attr-defined]
