"""Attribution before action: a bounce, complaint or unsubscribe request changes suppression only when it can be
matched to mail the team really sent to that recipient (`sent_recipients`, written by the gateway):

- VERP: it arrived at bounces+<token>@<platform domain>, the return path of exactly one recipient's copy. A permanent
  failure or a complaint there suppresses that recipient, whatever the report's body says.
- Message-ID: the report quotes the Message-ID of a message the team sent (the company-identity case: the bounce
  comes back to the customer's mailbox and its CC tracking forwarder), and names a recipient of it; a complaint whose
  recipient is redacted matches when that message had exactly one recipient.
- Mailed: an unsubscribe request from an address the team has mailed suppresses it for the team.

Anything else is "unmatched": stored and counted, changing nothing. Whatever a report names, at most
MAX_SUPPRESSIONS_PER_MESSAGE addresses act."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.gateway.suppressions import address_key
from bot.services.incoming.rules import Classification
from models import Attribution, MessageKind, SentRecipient, SlotState

MAX_SUPPRESSIONS_PER_MESSAGE = 5
# Rows read for one report's Message-IDs at most (a message has at most 100 recipients at the gateway).
MAX_ROWS = 500


@dataclass(frozen=True)
class Target:
    """An address to suppress for a team, the identity whose mail it was, and the record of that copy."""

    team_id: str
    address: str
    identity_id: int
    sent_id: int


@dataclass(frozen=True)
class Attributed:
    attribution: Attribution
    targets: tuple[Target, ...] = ()


async def attribute(
    session: AsyncSession,
    verdict: Classification,
    *,
    team_id: str | None,
    verp_tokens: list[str],
) -> Attributed:
    """Match a report to mail the team sent (`team_id`: the team of the identity it reached; `verp_tokens`: tokens
    of the return paths it was addressed to)."""
    if verdict.kind in (MessageKind.BOUNCE, MessageKind.COMPLAINT):
        if verp_tokens:
            rows = await _sent(session, SentRecipient.verp_token.in_(verp_tokens[:MAX_SUPPRESSIONS_PER_MESSAGE]))
            if rows:
                acts = verdict.kind == MessageKind.COMPLAINT or verdict.permanent
                return Attributed(Attribution.VERP, _targets(rows) if acts else ())
        if team_id is not None and verdict.original_ids:
            return await _by_message_id(session, verdict, team_id)
        return Attributed(Attribution.UNMATCHED)
    if verdict.kind == MessageKind.UNSUBSCRIBE and team_id is not None and verdict.addresses:
        keys = [address_key(a) for a in verdict.addresses[:MAX_SUPPRESSIONS_PER_MESSAGE]]
        rows = await _sent(session, SentRecipient.team_id == team_id, SentRecipient.recipient_key.in_(keys))
        if rows:
            return Attributed(Attribution.MAILED, _targets(rows))
    return Attributed(Attribution.UNMATCHED)


async def _by_message_id(session: AsyncSession, verdict: Classification, team_id: str) -> Attributed:
    rows = await _sent(session, SentRecipient.team_id == team_id, SentRecipient.message_id.in_(verdict.original_ids))
    if not rows:
        return Attributed(Attribution.UNMATCHED)
    named = {address_key(a) for a in verdict.addresses}
    matched = [r for r in rows if r.recipient_key in named]
    if not matched and verdict.kind == MessageKind.COMPLAINT and len({r.recipient_key for r in rows}) == 1:
        matched = rows  # the complainer is redacted, but the message went to one recipient only
    if not matched:
        return Attributed(Attribution.UNMATCHED)
    acts = verdict.kind == MessageKind.COMPLAINT or verdict.permanent
    return Attributed(Attribution.MESSAGE_ID, _targets(matched) if acts else ())


async def _sent(session: AsyncSession, *conditions: object) -> list[SentRecipient]:
    query = select(SentRecipient).where(SentRecipient.state == SlotState.SENT, *conditions)  # type: ignore[arg-type]
    return list(await session.scalars(query.order_by(SentRecipient.id).limit(MAX_ROWS)))


def _targets(rows: list[SentRecipient]) -> tuple[Target, ...]:
    found: dict[tuple[str, str], Target] = {}
    for row in rows:
        found.setdefault((row.team_id, row.recipient_key), Target(row.team_id, row.recipient, row.identity_id, row.id))
        if len(found) >= MAX_SUPPRESSIONS_PER_MESSAGE:
            break
    return tuple(found.values())
