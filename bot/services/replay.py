"""Replayed Slack requests: a signed request is valid for five minutes either side of its timestamp, so a captured
one could be sent again and act again. The first sighting of each (verified) signature is recorded in the database
with a unique key — one insert decides, across every process sharing the database — and a second sighting is a
replay. Slack's own retries carry a new timestamp and so a new signature: they are not affected.

Rows are kept until Slack's timestamp check would refuse the request anyway, then pruned.

The sighting is written before the ack, so where it is written matters: on SQLite (one writer at a time, and the
inbound server commits mail continuously during a flood) the composition root gives the guard a database file of its
own beside the main one, so Slack's acks never queue behind mail; processes sharing the SQLite file share that one
too. On PostgreSQL it is the main database (row-level, no such queue)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from models import Database, SeenRequest
from models.base import utcnow
from models.db import dialect_insert

log = logging.getLogger(__name__)

SIGNATURE_LIFETIME = timedelta(minutes=5)  # Slack's (and Bolt's) tolerance for a request timestamp, both ways
CLOCK_MARGIN = timedelta(minutes=1)  # processes' clocks may differ a little
PRUNE_EVERY = timedelta(minutes=1)


class ReplayGuard:
    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self._pruned_at: datetime | None = None

    async def prepare(self) -> None:
        """Create the table where the migrations do not (the SQLite side file); a no-op on the main database."""
        await self.db.create_tables(SeenRequest)

    async def first_sighting(self, signature: str, timestamp: str) -> bool:
        """True the first time a (verified) request signature is seen; False when it was seen before (a replay)."""
        now = self.clock()
        try:
            sent_at = datetime.fromtimestamp(int(timestamp), UTC)
        except (ValueError, OverflowError, OSError):
            sent_at = now
        expires_at = max(sent_at, now) + SIGNATURE_LIFETIME + CLOCK_MARGIN
        insert = dialect_insert(self.db)(SeenRequest).values(signature=signature[:100], expires_at=expires_at)
        async with self.db.transaction() as session:
            first = await session.scalar(
                insert.on_conflict_do_nothing(index_elements=["signature"]).returning(SeenRequest.signature)
            )
        await self._prune(now)
        return first is not None

    async def _prune(self, now: datetime) -> None:
        """Forget signatures Slack's timestamp check refuses anyway (at most once a minute per process)."""
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        async with self.db.transaction() as session:
            await session.execute(delete(SeenRequest).where(SeenRequest.expires_at < now))
