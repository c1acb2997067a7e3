"""The suppression list: addresses a team's identities may not send to any more (unsubscribes, hard bounces,
complaints). Incoming mail adds to it; the gateway refuses its addresses at RCPT.

Addresses are compared in one normal form (`address_key`), so `Victim+promo@Example.com` cannot slip past a
suppressed `victim@example.com`:
- the whole address lower-cased (every mailbox provider that matters treats local parts case-insensitively);
- a `+tag` at the end of the local part removed (sub-addressing: Gmail, Outlook.com, iCloud, Fastmail, Proton…);
- dots in the local part removed only where the provider ignores them: gmail.com and googlemail.com (the same
  mailboxes, so googlemail.com becomes gmail.com). Elsewhere `j.doe` and `jdoe` may be different people.
Suppressions belong to a team (the Slack workspace); rows without a team (from before teams were recorded) apply
to every team."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Database, Suppression, SuppressionReason
from models.base import utcnow
from models.db import dialect_insert

IGNORES_DOTS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def address_key(address: str) -> str:
    """The normal form suppressions and sent recipients are compared in (see the module docstring)."""
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in IGNORES_DOTS:
        local, domain = local.replace(".", ""), IGNORES_DOTS[domain]
    return f"{local}@{domain}" if domain else address.strip().lower()


class Suppressions:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        session: AsyncSession,
        *,
        team_id: str,
        address: str,
        reason: SuppressionReason,
        source_message_id: int | None,
    ) -> bool:
        """Insert if absent, in the caller's transaction. True when the address is newly suppressed for the team."""
        insert = dialect_insert(self.db)
        added = await session.scalar(
            insert(Suppression)
            .values(
                team_id=team_id,
                address=address.strip()[:320],
                address_key=address_key(address)[:320],
                reason=reason,
                source_message_id=source_message_id,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["team_id", "address_key"])
            .returning(Suppression.id)
        )
        return added is not None

    async def find(self, team_id: str, address: str) -> Suppression | None:
        """The suppression that stops `team_id` from mailing `address`, if any (one indexed probe)."""
        async with self.db.session() as session:
            return await session.scalar(
                select(Suppression)
                .where(
                    Suppression.address_key == address_key(address),
                    or_(Suppression.team_id == team_id, Suppression.team_id.is_(None)),
                )
                .order_by(Suppression.created_at)
                .limit(1)
            )
