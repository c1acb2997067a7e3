"""The per-identity sliding window: every recipient of mail sent as an identity takes a slot in the last hour and the
last day.

The unit is the RECIPIENT ("emails (recipients) per hour"), as receiving providers and the limits of the big sending
services count: one message to 100 people is 100 emails. A slot is a `SentRecipient` row: reserved at RCPT (so a
recipient over the limit is refused there, with 452, and a message is never half-refused after DATA), confirmed
once the upstream server accepted the message for that recipient, deleted when it refused it or the relay failed.

A sliding log (one row per recipient, counted over the last 3600 s and 86400 s) is exact at these volumes and has no
boundary burst: a fixed hourly window would let 40 go at 12:59 and 40 more at 13:00. Reservations are atomic across
processes: on PostgreSQL the identity row is locked (`SELECT ... FOR UPDATE`) for the count-and-insert; on SQLite
every transaction of `Database` is `BEGIN IMMEDIATE`, which already serializes writers across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.errors import NotFound
from bot.services.gateway.suppressions import address_key
from models import Database, Identity, SentRecipient, SlotState
from models.base import utcnow

HOUR = timedelta(seconds=3600)
DAY = timedelta(seconds=86400)


@dataclass(frozen=True)
class LimitDecision:
    """The outcome of `reserve` (or the current state, from `usage`). Counts are recipients."""

    allowed: bool
    reservation_id: int | None  # SentRecipient.id when a slot was reserved
    limit: str | None  # "hourly" | "daily": the limit that refused (or that is full, for `usage`)
    limit_value: int | None
    retry_at: datetime | None  # when the counted send that blocks leaves the window, i.e. when a slot frees
    sent_last_hour: int
    sent_last_day: int


@dataclass(frozen=True)
class Delivered:
    """A reserved slot whose recipient the upstream server accepted: what to remember about it."""

    reservation_id: int
    message_id: str | None
    verp_token: str | None = None


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

    async def reserve(self, identity: Identity, recipient: str) -> LimitDecision:
        """Take a slot for one recipient if both windows have room, atomically across processes.

        Refused: `limit` names the limit that blocks (when both are full, the one that frees last) and `retry_at`
        is when its blocking send leaves the window. Raises NotFound for an unknown identity.
        """
        async with self.db.transaction() as session:
            hourly_limit, daily_limit = await self._lock_identity(session, identity.id)
            now = self.clock()  # read under the lock, so the log's times follow the order slots were taken
            hour, day = await self._windows(session, identity.id, hourly_limit, daily_limit, now)
            blocked = await self._blocking(session, identity.id, now, (hour, day))
            if blocked is not None:
                window, retry_at = blocked
                return LimitDecision(False, None, window.name, window.limit, retry_at, hour.count, day.count)
            reservation_id = await session.scalar(
                insert(SentRecipient)
                .values(
                    identity_id=identity.id,
                    team_id=identity.team_id,
                    recipient=recipient[:320],
                    recipient_key=address_key(recipient)[:320],
                    state=SlotState.RESERVED,
                    sent_at=now,
                )
                .returning(SentRecipient.id)
            )
        return LimitDecision(True, reservation_id, None, None, None, hour.count + 1, day.count + 1)

    async def settle(self, delivered: Sequence[Delivered], released: Sequence[int]) -> None:
        """After the relay, in one transaction: slots whose recipient the server accepted stay taken for good (with
        the Message-ID and return-path token a later report is matched by); the others are given back."""
        async with self.db.transaction() as session:
            for slot in delivered:
                await session.execute(
                    update(SentRecipient)
                    .where(SentRecipient.id == slot.reservation_id)
                    .values(
                        state=SlotState.SENT,
                        message_id=slot.message_id[:998] if slot.message_id else None,
                        verp_token=slot.verp_token,
                    )
                )
            if released:
                await session.execute(delete(SentRecipient).where(SentRecipient.id.in_(list(released))))

    async def release(self, reservation_ids: Sequence[int]) -> None:
        """Give slots back: the transaction ended without relaying to these recipients."""
        await self.settle((), reservation_ids)

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
            func.count().filter(SentRecipient.sent_at > now - HOUR),
            func.count(),
        ).where(SentRecipient.identity_id == identity_id, SentRecipient.sent_at > now - DAY)
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
                select(SentRecipient.sent_at)
                .where(SentRecipient.identity_id == identity_id, SentRecipient.sent_at > now - window.length)
                .order_by(SentRecipient.sent_at, SentRecipient.id)
                .offset(leaving)
                .limit(1)
            )
            sent_at = (await session.execute(query)).scalar_one()
            retry_at = sent_at + window.length
            if worst is None or retry_at > worst[1]:
                worst = (window, retry_at)
        return worst
