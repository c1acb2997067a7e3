"""Test helper: records of mail a team sent (`sent_recipients` rows), as the gateway writes them when it relays a
message, for tests of what comes back (bounces, complaints, unsubscribe requests)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.domains import new_verp_token
from bot.services.gateway.suppressions import address_key
from models import Identity, SentRecipient, SlotState


async def record_sent(
    session: AsyncSession,
    identity: Identity,
    recipients: Iterable[str],
    *,
    message_id: str | None,
    verp: bool,
    at: datetime,
) -> list[SentRecipient]:
    """`recipients` were sent `message_id` as `identity` (`verp`: each with its own return path token)."""
    rows = [
        SentRecipient(
            identity_id=identity.id,
            team_id=identity.team_id,
            recipient=r,
            recipient_key=address_key(r),
            message_id=message_id,
            verp_token=new_verp_token() if verp else None,
            state=SlotState.SENT,
            sent_at=at,
        )
        for r in recipients
    ]
    session.add_all(rows)
    await session.flush()
    return rows
