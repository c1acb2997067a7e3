"""Time-boxed increases: an approved request with an end (`until`) raises the limits until then; at the end they go
back to what the identity had when it was approved (`revert_hourly`/`revert_daily`), by themselves, exactly once
across processes (a conditional update on `ended_at`), and the channel is told. A manager can end one early from
the request message. A later change to the limits (lowering, or another approved increase) replaces a running box:
the new limits stand, nothing reverts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit
from bot.services.errors import NotFound
from bot.services.notifier import Notifier
from bot.services.policy import Policy
from models import Database, Identity, LimitRequest, LimitRequestStatus
from models.base import utcnow

log = logging.getLogger(__name__)

EXPIRED = "expiry"  # ended_by when the box ran out
REPLACED = "replaced"  # ended_by when a later change replaced it


class NotRunning(Exception):
    """The increase is not running (never time-boxed, not approved, or already ended)."""

    def __init__(self, request: LimitRequest) -> None:
        super().__init__(f"request {request.id} is not a running time-boxed increase")
        self.request = request


async def running_box(session: AsyncSession, identity_id: int, *, besides: int | None = None) -> LimitRequest | None:
    """The identity's time-boxed increase in force, if any (other than request `besides`)."""
    return await session.scalar(
        select(LimitRequest).where(
            LimitRequest.identity_id == identity_id,
            LimitRequest.status == LimitRequestStatus.APPROVED,
            LimitRequest.until.is_not(None),
            LimitRequest.ended_at.is_(None),
            LimitRequest.id != (besides or 0),
        )
    )


async def replace_running(
    session: AsyncSession, identity_id: int, now: datetime, *, besides: int | None = None
) -> LimitRequest | None:
    """A new change to the limits replaces the running box (in the change's transaction): it ends without reverting.
    Returns it, so a new box approved now reverts to what the replaced one would have. `besides`: the request
    being approved, which is not its own predecessor."""
    box = await running_box(session, identity_id, besides=besides)
    if box is not None:
        box.ended_at, box.ended_by = now, REPLACED
    return box


class TimeBoxes:
    def __init__(
        self, db: Database, notifier: Notifier, policy: Policy, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.policy = policy
        self.clock = clock

    async def end_expired(self) -> int:
        """Revert every time-boxed increase whose end has come (the sweep, in every process): each exactly once."""
        now = self.clock()
        async with self.db.session() as session:
            due = list(
                (
                    await session.scalars(
                        select(LimitRequest.id).where(
                            LimitRequest.status == LimitRequestStatus.APPROVED,
                            LimitRequest.until <= now,
                            LimitRequest.ended_at.is_(None),
                        )
                    )
                ).all()
            )
        ended = 0
        for request_id in due:
            ended += await self._end(request_id, EXPIRED, now)
        return ended

    async def end_early(self, request_id: int, *, actor: str) -> LimitRequest:
        """A manager ends a running increase now. Raises NotAllowed, NotFound or NotRunning."""
        await self.policy.require_manager(actor, "end an increase early")
        if not await self._end(request_id, actor, self.clock()):
            async with self.db.session() as session:
                request = await session.get(LimitRequest, request_id)
            if request is None:
                raise NotFound("This limit request no longer exists.")
            raise NotRunning(request)
        async with self.db.session() as session:
            request = await session.get(LimitRequest, request_id)
        assert request is not None
        return request

    async def _end(self, request_id: int, by: str, now: datetime) -> bool:
        """End the box and put the limits back, in one transaction; True for the one caller that did it."""
        async with self.db.transaction() as session:
            request = await session.get(LimitRequest, request_id)
            if request is None:
                return False
            # Lock order as everywhere: the identity first, then its requests.
            identity = await session.get(Identity, request.identity_id, with_for_update=True)
            won = await session.execute(
                update(LimitRequest)
                .where(
                    LimitRequest.id == request_id,
                    LimitRequest.status == LimitRequestStatus.APPROVED,
                    LimitRequest.until.is_not(None),
                    LimitRequest.ended_at.is_(None),
                )
                .values(ended_at=now, ended_by=by)
            )
            if won.rowcount != 1 or identity is None:  # type: ignore[attr-defined]
                return False
            before = (identity.hourly_limit, identity.daily_limit)
            identity.hourly_limit = request.revert_hourly or request.previous_hourly
            identity.daily_limit = request.revert_daily or request.previous_daily
            identity.updated_at = now
            audit.record(
                session,
                actor=by,
                action="limits.increase_ended",
                identity_id=identity.id,
                request_id=request_id,
                previous={"hourly": before[0], "daily": before[1]},
                current={"hourly": identity.hourly_limit, "daily": identity.daily_limit},
            )
            await session.refresh(request)
        try:
            await self.notifier.limit_increase_ended(identity, request)
        except Exception:  # noqa: BLE001 - the limits are back; only the message is lost
            log.exception("could not announce the end of increase %s", request_id)
        return True
