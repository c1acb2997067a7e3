"""The per-identity sliding window: every message sent as an identity takes a slot in the last hour and the last day.

A sliding log (one `SentMessage` row per accepted message, counted over the last 3600 s and 86400 s) is exact at
these volumes and has no boundary burst: a fixed hourly window would let 40 go at 12:59 and 40 more at 13:00.

The unit is the MESSAGE: one row per message the gateway accepts, whatever its recipient count (the count is kept on
the row for information). Reservations are atomic across processes: on PostgreSQL the identity row is locked
(`SELECT ... FOR UPDATE`) for the count-and-insert; on SQLite every transaction of `Database` is `BEGIN IMMEDIATE`,
which already serializes writers across processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.errors import NotFound
from models import Database, Identity, SentMessage, SlotState
from models.base import utcnow

HOUR = timedelta(seconds=3600)
DAY = timedelta(seconds=86400)


@dataclass(frozen=True)
class LimitDecision:
    """The outcome of `reserve` (or the current state, from `usage`)."""

    allowed: bool
    reservation_id: int | None  # SentMessage.id when a slot was reserved
    limit: str | None  # "hourly" | "daily": the limit that refused (or that is full, for `usage`)
    limit_value: int | None
    retry_at: datetime | None  # when the counted send that blocks leaves the window, i.e. when a slot frees
    sent_last_hour: int
    sent_last_day: int


@dataclass(frozen=True)
class _Window:
    name: str
    length: timedelta
    limit: int
    count: int


class SendingLimits:
    """Reserves, confirms and releases sending slots. The clock is injectable so tests move time without sleeping."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def reserve(self, identity_id: int, *, recipients: int = 1) -> LimitDecision:
        """Take a slot for one message if both windows have room, atomically across processes.

        Refused: `limit` names the limit that blocks (when both are full, the one that frees last) and `retry_at`
        is when its blocking send leaves the window. Raises NotFound for an unknown identity.
        """
        async with self.db.transaction() as session:
            hourly_limit, daily_limit = await self._lock_identity(session, identity_id)
            now = self.clock()  # read under the lock, so the log's times follow the order slots were taken
            hour, day = await self._windows(session, identity_id, hourly_limit, daily_limit, now)
            blocked = await self._blocking(session, identity_id, now, (hour, day))
            if blocked is not None:
                window, retry_at = blocked
                return LimitDecision(False, None, window.name, window.limit, retry_at, hour.count, day.count)
            reservation_id = await session.scalar(
                insert(SentMessage)
                .values(identity_id=identity_id, sent_at=now, recipients=recipients, state=SlotState.RESERVED)
                .returning(SentMessage.id)
            )
        return LimitDecision(True, reservation_id, None, None, None, hour.count + 1, day.count + 1)

    async def confirm(self, reservation_id: int) -> None:
        """The server accepted the message: the slot stays taken for good."""
        async with self.db.transaction() as session:
            await session.execute(
                update(SentMessage).where(SentMessage.id == reservation_id).values(state=SlotState.SENT)
            )

    async def release(self, reservation_id: int) -> None:
        """The relay failed before the server accepted the message: give the slot back."""
        async with self.db.transaction() as session:
            await session.execute(delete(SentMessage).where(SentMessage.id == reservation_id))

    async def usage(self, identity_id: int) -> LimitDecision:
        """The same numbers without reserving (for `/identity show`): allowed = a slot is free now; when full,
        `limit` names the full limit and `retry_at` is the next free slot."""
        now = self.clock()
        async with self.db.session() as session:
            limits = (
                await session.execute(
                    select(Identity.hourly_limit, Identity.daily_limit).where(Identity.id == identity_id)
                )
            ).one_or_none()
            if limits is None:
                raise NotFound(f"no identity {identity_id}")
            hour, day = await self._windows(session, identity_id, limits[0], limits[1], now)
            blocked = await self._blocking(session, identity_id, now, (hour, day))
        if blocked is None:
            return LimitDecision(True, None, None, None, None, hour.count, day.count)
        window, retry_at = blocked
        return LimitDecision(False, None, window.name, window.limit, retry_at, hour.count, day.count)

    async def _lock_identity(self, session: AsyncSession, identity_id: int) -> tuple[int, int]:
        """Lock the identity row and read its (hourly, daily) limits. On SQLite the transaction already holds the
        database write lock (BEGIN IMMEDIATE) and FOR UPDATE is compiled away; on PostgreSQL the row lock serializes
        the reservations of this identity across processes (and sees a limit change committed before it)."""
        query = select(Identity.hourly_limit, Identity.daily_limit).where(Identity.id == identity_id).with_for_update()
        row = (await session.execute(query)).one_or_none()
        if row is None:
            raise NotFound(f"no identity {identity_id}")
        return int(row[0]), int(row[1])

    async def _windows(
        self, session: AsyncSession, identity_id: int, hourly_limit: int, daily_limit: int, now: datetime
    ) -> tuple[_Window, _Window]:
        query = select(
            func.count().filter(SentMessage.sent_at > now - HOUR),
            func.count(),
        ).where(SentMessage.identity_id == identity_id, SentMessage.sent_at > now - DAY)
        in_hour, in_day = (await session.execute(query)).one()
        return (
            _Window("hourly", HOUR, hourly_limit, int(in_hour or 0)),
            _Window("daily", DAY, daily_limit, int(in_day or 0)),
        )

    async def _blocking(
        self, session: AsyncSession, identity_id: int, now: datetime, windows: tuple[_Window, ...]
    ) -> tuple[_Window, datetime] | None:
        """The full window that frees last, with when it frees; None when every window has room."""
        worst: tuple[_Window, datetime] | None = None
        for window in windows:
            if window.count < window.limit:
                continue
            # A slot frees when enough sends leave the window to drop below the limit: with exactly `limit` sends
            # that is the oldest one; if the limit was lowered below the count, a later one.
            leaving = window.count - window.limit
            query = (
                select(SentMessage.sent_at)
                .where(SentMessage.identity_id == identity_id, SentMessage.sent_at > now - window.length)
                .order_by(SentMessage.sent_at, SentMessage.id)
                .offset(leaving)
                .limit(1)
            )
            sent_at = (await session.execute(query)).scalar_one()
            retry_at = sent_at + window.length
            if worst is None or retry_at > worst[1]:
                worst = (window, retry_at)
        return worst
