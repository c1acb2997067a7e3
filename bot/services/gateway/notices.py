"""Limits that talk back: when the gateway defers an identity's recipients for its limit, the identity's channel hears
it once — at most one notice per identity per hour, across processes — and the notice keeps counting.

The claim is a row in `limit_notices`, taken under the identity's row lock (PostgreSQL FOR UPDATE; SQLite's
BEGIN IMMEDIATE serializes writers): the first deferral of the hour inserts it and posts; later ones add to its count
and the posted message is updated in place, at most once every UPDATE_DELAY per notice in each process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from bot.services.gateway.window import LimitDecision
from bot.services.notifier import Notifier
from models import Database, Identity, LimitNotice
from models.base import utcnow

log = logging.getLogger(__name__)

NOTICE_EVERY = timedelta(hours=1)
UPDATE_DELAY = 1.0  # seconds: deferrals in a burst update the posted count together


class LimitNotices:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        clock: Callable[[], datetime] = utcnow,
        update_delay: float = UPDATE_DELAY,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.clock = clock
        self.update_delay = update_delay
        self._scheduled: set[int] = set()
        self._tasks: set[asyncio.Future[Any]] = set()

    async def deferred(self, identity: Identity, decision: LimitDecision) -> None:
        """One recipient was deferred for the identity's limit: count it, and tell the channel if it is the first
        deferral this hour. Best effort: a failure is logged, the SMTP answer does not depend on it."""
        try:
            notice, new = await self._count(identity, decision)
            if new:
                await self._post(identity, notice)
            else:
                self._schedule_update(identity, notice.id)
        except Exception:  # noqa: BLE001
            log.exception("could not record or announce the limit notice of identity %s", identity.id)

    async def _count(self, identity: Identity, decision: LimitDecision) -> tuple[LimitNotice, bool]:
        now = self.clock()
        async with self.db.transaction() as session:
            await session.execute(select(Identity.id).where(Identity.id == identity.id).with_for_update())
            notice = await session.scalar(
                select(LimitNotice)
                .where(LimitNotice.identity_id == identity.id, LimitNotice.opened_at > now - NOTICE_EVERY)
                .order_by(LimitNotice.id.desc())
                .limit(1)
            )
            if notice is None:
                notice = LimitNotice(
                    identity_id=identity.id,
                    opened_at=now,
                    limit_name=decision.limit or "hourly",
                    limit_value=decision.limit_value or 0,
                    deferred=1,
                    next_slot_at=decision.retry_at,
                    shown=0,
                    updated_at=now,
                )
                session.add(notice)
                await session.flush()
                return notice, True
            notice.deferred += 1
            notice.limit_name = decision.limit or notice.limit_name
            notice.limit_value = decision.limit_value or notice.limit_value
            notice.next_slot_at = decision.retry_at or notice.next_slot_at
            notice.updated_at = now
            return notice, False

    async def _post(self, identity: Identity, notice: LimitNotice) -> None:
        where = await self.notifier.limit_reached(identity, notice)
        if where is None:
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(LimitNotice)
                .where(LimitNotice.id == notice.id)
                .values(channel=where[0], ts=where[1], shown=notice.deferred)
            )
        self._schedule_update(identity, notice.id)  # deferrals counted while it was being posted

    def _schedule_update(self, identity: Identity, notice_id: int) -> None:
        if notice_id in self._scheduled:
            return
        self._scheduled.add(notice_id)
        task = asyncio.ensure_future(self._update_later(identity, notice_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _update_later(self, identity: Identity, notice_id: int) -> None:
        try:
            await asyncio.sleep(self.update_delay)
        finally:
            self._scheduled.discard(notice_id)
        try:
            async with self.db.transaction() as session:
                notice = await session.get(LimitNotice, notice_id, with_for_update=True)
                if notice is None or notice.ts is None or notice.shown == notice.deferred:
                    return
                notice.shown = notice.deferred
            await self.notifier.limit_notice_updated(identity, notice)
        except Exception:  # noqa: BLE001
            log.exception("could not update limit notice %s", notice_id)

    async def sent(self, identity: Identity) -> None:
        """Mail went out as the identity: what is shown of its usage changed (the App Home)."""
        try:
            await self.notifier.usage_changed(identity)
        except Exception:  # noqa: BLE001
            log.exception("could not announce the usage of identity %s", identity.id)

    async def drain(self, grace: float = 5.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)

    async def recent(self, identity_id: int, *, since: datetime) -> int:
        """Recipients of the identity deferred for its limits since `since`."""
        async with self.db.session() as session:
            rows = await session.scalars(
                select(LimitNotice.deferred).where(
                    LimitNotice.identity_id == identity_id, LimitNotice.opened_at > since
                )
            )
            return sum(rows.all())

    async def get(self, notice_id: int) -> LimitNotice | None:
        async with self.db.session() as session:
            return await session.get(LimitNotice, notice_id)
