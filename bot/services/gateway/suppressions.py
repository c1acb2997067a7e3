"""The suppression list: addresses no identity may send to any more (unsubscribes, hard bounces, complaints).

Incoming mail adds to it; the gateway refuses its addresses at RCPT."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Database, Suppression, SuppressionReason
from models.base import utcnow
from models.db import dialect_insert


class Suppressions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self, session: AsyncSession, address: str, reason: SuppressionReason, *, source_message_id: int | None
    ) -> bool:
        """Insert if absent, in the caller's transaction. True when the address is newly suppressed."""
        insert = dialect_insert(self.db)
        added = await session.scalar(
            insert(Suppression)
            .values(address=address, reason=reason, source_message_id=source_message_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["address"])
            .returning(Suppression.id)
        )
        return added is not None

    async def is_suppressed(self, address: str) -> bool:
        async with self.db.session() as session:
            hit = await session.scalar(
                select(Suppression.id).where(func.lower(Suppression.address) == address.lower()).limit(1)
            )
        return hit is not None
