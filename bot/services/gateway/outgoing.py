"""What a team really sent, per recipient (`SentRecipient`): written when the gateway relays a message, read when
a bounce, complaint or unsubscribe request arrives, so that a report acts only on mail the team sent to that
recipient. Anyone can mail our inbound server a report naming any address; only these records make it believable."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.domains import new_verp_token
from bot.services.gateway.suppressions import address_key
from models import Database, Identity, SentRecipient, SlotState


def sent_recipient(
    identity: Identity, recipient: str, *, message_id: str | None, verp: bool, at: datetime, state: SlotState
) -> SentRecipient:
    """A new record (add it to a session): `verp` gives it the token of a per-recipient return path."""
    return SentRecipient(
        identity_id=identity.id,
        team_id=identity.team_id,
        recipient=recipient[:320],
        recipient_key=address_key(recipient)[:320],
        message_id=message_id[:998] if message_id else None,
        verp_token=new_verp_token() if verp else None,
        state=state,
        sent_at=at,
    )


class SentMail:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self,
        session: AsyncSession,
        identity: Identity,
        recipients: Iterable[str],
        *,
        message_id: str | None,
        verp: bool,
        at: datetime,
    ) -> list[SentRecipient]:
        """Record that `recipients` were sent `message_id` as `identity`, in the caller's transaction."""
        rows = [
            sent_recipient(identity, r, message_id=message_id, verp=verp, at=at, state=SlotState.SENT)
            for r in recipients
        ]
        session.add_all(rows)
        await session.flush()
        return rows

    async def by_return_path(self, token: str) -> SentRecipient | None:
        """The recipient a VERP return path token was made for."""
        async with self.db.session() as session:
            return await session.scalar(
                select(SentRecipient).where(SentRecipient.verp_token == token, SentRecipient.state == SlotState.SENT)
            )

    async def by_message(self, team_id: str, message_id: str, recipient: str) -> SentRecipient | None:
        """The team's record of sending `message_id` to `recipient` (the original a report quotes)."""
        async with self.db.session() as session:
            return await session.scalar(
                select(SentRecipient)
                .where(
                    SentRecipient.team_id == team_id,
                    SentRecipient.message_id == message_id,
                    SentRecipient.recipient_key == address_key(recipient),
                    SentRecipient.state == SlotState.SENT,
                )
                .limit(1)
            )

    async def has_mailed(self, team_id: str, address: str) -> bool:
        """Whether any identity of the team has sent to `address` (in its normal form)."""
        async with self.db.session() as session:
            found = await session.scalar(
                select(SentRecipient.id)
                .where(
                    SentRecipient.team_id == team_id,
                    SentRecipient.recipient_key == address_key(address),
                    SentRecipient.state == SlotState.SENT,
                )
                .limit(1)
            )
        return found is not None
