"""What an attributed report changes: a hard bounce, complaint or unsubscribe request suppresses the addresses it
names for their team (an audit event for each new entry), and a hard bounce or complaint is marked on the copy it was
about, which the identity's bounce and complaint rates count (services/rates.py)."""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.domains import PlatformDomains
from bot.services import audit
from bot.services.gateway.suppressions import Suppressions
from bot.services.incoming.attribution import Attributed
from models import Attribution, MessageKind, SentRecipient, SuppressionReason
from models.base import utcnow

log = logging.getLogger(__name__)

SUPPRESSION_REASONS = {
    MessageKind.BOUNCE: SuppressionReason.HARD_BOUNCE,
    MessageKind.COMPLAINT: SuppressionReason.COMPLAINT,
    MessageKind.UNSUBSCRIBE: SuppressionReason.UNSUBSCRIBE,
}
# Reports that count in an identity's bounce and complaint rates (services/health).
RATE_KINDS = (MessageKind.BOUNCE, MessageKind.COMPLAINT)


async def apply_report(
    session: AsyncSession,
    suppressions: Suppressions,
    domains: PlatformDomains,
    message_id: int,
    kind: MessageKind,
    rule: str,
    attributed: Attributed,
) -> None:
    """Insert-if-absent each attributed address for its team; only a new entry gets an audit event."""
    if attributed.attribution == Attribution.UNMATCHED:
        log.info("incoming: %s %s matches nothing the team sent; it changes nothing", kind, message_id)
        return
    reason = SUPPRESSION_REASONS[kind]
    await mark_sent(session, kind, attributed)
    for target in attributed.targets:
        if domains.is_own(target.address):
            continue
        added = await suppressions.add(
            session, team_id=target.team_id, address=target.address, reason=reason, source_message_id=message_id
        )
        if added:
            audit.record(
                session,
                actor="inbound",
                action="suppression.added",
                identity_id=target.identity_id,
                address=target.address,
                reason=reason,
                rule=rule,
                attribution=attributed.attribution,
                inbound_message_id=message_id,
            )
            log.info("incoming: suppressed %s (%s, message %s)", target.address, reason, message_id)


async def mark_sent(session: AsyncSession, kind: MessageKind, attributed: Attributed) -> None:
    """An attributed hard bounce or complaint is remembered on the copy it was about."""
    column = {MessageKind.BOUNCE: "bounced_at", MessageKind.COMPLAINT: "complained_at"}.get(kind)
    ids = [t.sent_id for t in attributed.targets]
    if column is None or not ids:
        return
    await session.execute(
        update(SentRecipient)
        .where(SentRecipient.id.in_(ids), getattr(SentRecipient, column).is_(None))
        .values({column: utcnow()})
    )
