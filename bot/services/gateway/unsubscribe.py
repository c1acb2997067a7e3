"""One-click unsubscribe (RFC 8058): the tokens in the List-Unsubscribe links of mail a team sends, and what using
one does.

Every message the gateway relays without a List-Unsubscribe of its own gets one per recipient:
`<mailto:unsubscribe+TOKEN@PLATFORM_DOMAIN>` and, when PUBLIC_URL is set, `<PUBLIC_URL/unsubscribe/TOKEN>` with
`List-Unsubscribe-Post: List-Unsubscribe=One-Click`. A token is 128 random bits, made once per (team, recipient in
its normal form) and reused for every later message, so it keeps working for as long as the mail is in a mailbox.
Whoever holds it may suppress exactly that recipient for exactly that team, at once and without logging in: it only
ever travels in mail to that recipient. A POST to the URL or a mail to the address uses it; a GET only shows a page
with a confirm button (link scanners follow links, they do not submit forms)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from bot.mail.domains import new_unsubscribe_token
from bot.services import audit
from bot.services.gateway.suppressions import Suppressions, address_key
from models import Database, Suppression, SuppressionReason, UnsubscribeToken
from models.base import utcnow
from models.db import dialect_insert

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Unsubscribed:
    """The outcome of using a token: who, for which team, and whether this use added the suppression."""

    recipient: str
    team_id: str
    newly: bool


class Unsubscribes:
    def __init__(self, db: Database, suppressions: Suppressions | None = None) -> None:
        self.db = db
        self.suppressions = suppressions or Suppressions(db)

    async def tokens_for(self, team_id: str, recipients: Iterable[str]) -> dict[str, str]:
        """The token of each recipient for the team (made on first use), keyed by the recipient as given."""
        wanted = {r: address_key(r)[:320] for r in recipients}
        if not wanted:
            return {}
        by_key = await self._existing(team_id, set(wanted.values()))
        missing = {key: recipient for recipient, key in wanted.items() if key not in by_key}
        if missing:  # a write only for recipients the team never mailed before
            insert = dialect_insert(self.db)
            async with self.db.transaction() as session:
                for key, recipient in missing.items():
                    await session.execute(
                        insert(UnsubscribeToken)
                        .values(
                            token=new_unsubscribe_token(),
                            team_id=team_id,
                            recipient=recipient[:320],
                            recipient_key=key,
                            created_at=utcnow(),
                        )
                        .on_conflict_do_nothing(index_elements=["team_id", "recipient_key"])
                    )
            by_key = await self._existing(team_id, set(wanted.values()))
        return {recipient: by_key[key] for recipient, key in wanted.items()}

    async def _existing(self, team_id: str, keys: set[str]) -> dict[str, str]:
        async with self.db.session() as session:
            rows = await session.execute(
                select(UnsubscribeToken.recipient_key, UnsubscribeToken.token).where(
                    UnsubscribeToken.team_id == team_id, UnsubscribeToken.recipient_key.in_(keys)
                )
            )
            return {key: token for key, token in rows.all()}

    async def find(self, token: str) -> UnsubscribeToken | None:
        """The token's record, or None for anything that is not one of ours."""
        if not _TOKEN.match(token):
            return None
        async with self.db.session() as session:
            return await session.scalar(select(UnsubscribeToken).where(UnsubscribeToken.token == token))

    async def suppression(self, token: UnsubscribeToken) -> Suppression | None:
        """The suppression already in force for the token's recipient and team, if any."""
        return await self.suppressions.find(token.team_id, token.recipient)

    async def unsubscribe(self, token: str, *, via: str, source_message_id: int | None = None) -> Unsubscribed | None:
        """Suppress the token's recipient for its team (insert if absent). None, changing nothing, for a token
        that is not one of ours. `via` says how ("link" or "mail") for the audit trail."""
        found = await self.find(token)
        if found is None:
            return None
        async with self.db.transaction() as session:
            newly = await self.suppressions.add(
                session,
                team_id=found.team_id,
                address=found.recipient,
                reason=SuppressionReason.UNSUBSCRIBE,
                source_message_id=source_message_id,
            )
            if newly:
                audit.record(
                    session,
                    actor=f"unsubscribe-{via}",
                    action="suppression.added",
                    identity_id=None,
                    address=found.recipient,
                    reason=SuppressionReason.UNSUBSCRIBE,
                    team_id=found.team_id,
                )
        log.info("one-click unsubscribe by %s for team %s (%s)", via, found.team_id, "new" if newly else "already")
        return Unsubscribed(found.recipient, found.team_id, newly)
