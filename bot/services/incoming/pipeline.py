"""The incoming-mail pipeline: classify each stored message once and act on it.

The inbound server has already committed the raw message; this runs afterwards from the stored copy. Each message
is processed exactly once even with several processes, and a process that dies mid-way loses nothing:

- Whoever processes a message holds a processing lock (see `locks`) that dies with its holder. Someone else holding
  it means "being processed right now": skip.
- With the lock held, the row is re-read: `processed_at` set means done. It is set only at the end, in the same
  transaction as the classification and its effects (suppressions, `forwarded_at`), and only WHERE it is still NULL.
- A step that fails leaves `processed_at` NULL, so `process_pending` (at start-up, or periodically) retries it; a
  process killed mid-way leaves it NULL too, and its lock is gone, so the next `process_pending` takes it over.
Side effects outside the database (forwarding, on_tokens) are therefore at-least-once across a crash at the wrong
moment, and exactly once otherwise; `forwarded_at` is checked first so a retried row is not forwarded twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.delivery import Delivery
from bot.mail.domains import PlatformDomains
from bot.services import audit
from bot.services.gateway.suppressions import Suppressions
from bot.services.gateway.unsubscribe import Unsubscribes
from bot.services.incoming.forwarding import build_forward
from bot.services.incoming.locks import processing_locks
from bot.services.incoming.rules import Classification, classify
from models import Database, Identity, InboundMessage, MessageKind, SuppressionReason
from models.base import utcnow
from models.db import without_sql_parameters

log = logging.getLogger(__name__)

SUPPRESSION_REASONS = {
    MessageKind.BOUNCE: SuppressionReason.HARD_BOUNCE,
    MessageKind.COMPLAINT: SuppressionReason.COMPLAINT,
    MessageKind.UNSUBSCRIBE: SuppressionReason.UNSUBSCRIBE,
}

# A message to unsubscribe+TOKEN@ addresses (see `_one_click_by_mail`) acts on at most this many of them.
MAX_UNSUBSCRIBES_PER_MESSAGE = 5
ONE_CLICK_RULE = "list-unsubscribe-mailto"

Forward = Callable[[Identity, EmailMessage], Awaitable[None]]
"""Hands a built forward to the mail system (see LeadForwarder)."""
OnTokens = Callable[[list[str], int], Awaitable[None]]
"""Called with the verification tokens found in a stored message, and the message's row id."""


class LeadForwarder:
    """Sends a lead's forward to the identity's response-forwarding address, from the platform."""

    def __init__(self, delivery: Delivery, domains: PlatformDomains) -> None:
        self.delivery = delivery
        self.domains = domains

    async def __call__(self, identity: Identity, message: EmailMessage) -> None:
        await self.delivery.send_from_platform(
            message, sender=self.domains.sender, recipients=[identity.forwarding_address]
        )


class IncomingMail:
    """Processes stored inbound messages: classify, record, then suppress / hand over tokens / forward leads."""

    def __init__(
        self,
        db: Database,
        domains: PlatformDomains,
        *,
        on_tokens: OnTokens,
        forward: Forward,
        unsubscribes: Unsubscribes | None = None,
    ) -> None:
        self.db = db
        self.unsubscribes = unsubscribes
        # Our own domains: an address on them is never suppressed, and forwards are sent From one of them.
        self.domains = domains
        self.on_tokens = on_tokens
        self.forward = forward
        self.suppressions = Suppressions(db)
        self._locks = processing_locks(db)

    async def process(self, message_id: int) -> None:
        """Process one stored message, once. Returns quietly if it is already processed or being processed
        elsewhere right now; raises if a step failed (the message then stays pending and is retried)."""
        await self._process_once(message_id)

    async def process_pending(self) -> int:
        """Process every stored message not yet processed, including those a crashed process was working on.
        Called on start (a crash after answering 250 loses nothing) and safe to call periodically in every process.
        Returns how many this call processed."""
        async with self.db.session() as session:
            ids = list(
                await session.scalars(
                    select(InboundMessage.id).where(InboundMessage.processed_at.is_(None)).order_by(InboundMessage.id)
                )
            )
        done = 0
        for message_id in ids:
            try:
                done += await self._process_once(message_id)
            except Exception as exc:  # noqa: BLE001 - one bad message must not block the others
                log.error(
                    "incoming: message %s failed; it stays pending", message_id, exc_info=without_sql_parameters(exc)
                )
        return done

    async def _process_once(self, message_id: int) -> bool:
        async with self._locks.hold(message_id) as held:
            if not held:
                return False  # another live process (or task) is on it
            async with self.db.session() as session:
                row = await session.get(InboundMessage, message_id)
            if row is None or row.processed_at is not None:
                return False
            await self._process_row(row)
            self._locks.done(message_id)
            return True

    async def _process_row(self, row: InboundMessage) -> None:
        message_id = row.id
        if await self._one_click_by_mail(row):
            return
        # Parsing a large message is CPU work: keep it off the event loop.
        result = await asyncio.to_thread(classify, row.raw)
        identity = await self._identity_for(row.rcpt_tos)
        identity_id = identity.id if identity is not None else None
        log.info(
            "incoming: message %s is %s (rule %s) for identity %s", message_id, result.kind, result.rule, identity_id
        )
        forwarded_at = row.forwarded_at
        if result.kind == MessageKind.VERIFICATION:
            await self.on_tokens(list(result.tokens), message_id)
        elif result.kind == MessageKind.LEAD and forwarded_at is None:
            if identity is None:
                log.warning("incoming: lead %s matches no identity (%s); not forwarded", message_id, row.rcpt_tos)
            else:
                await self.forward(
                    identity, build_forward(identity, row.raw, message_id, sender=self._sender(identity))
                )
                forwarded_at = utcnow()
                log.info("incoming: lead %s forwarded for identity %s", message_id, identity_id)
        async with self.db.transaction() as session:
            if result.kind in SUPPRESSION_REASONS:
                await self._suppress(session, row, result, identity)
            await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == message_id, InboundMessage.processed_at.is_(None))
                .values(
                    classification=result.kind,
                    classified_by=result.rule,
                    identity_id=identity_id,
                    processed_at=utcnow(),
                    forwarded_at=forwarded_at,
                )
            )

    async def _one_click_by_mail(self, row: InboundMessage) -> bool:
        """Mail to the unsubscribe+TOKEN@ address of a List-Unsubscribe header (RFC 8058's mailto:): the token alone
        says who and for which team, whatever the message says. True when the message was one (then it is done)."""
        if self.unsubscribes is None:
            return False
        tokens = [t for t in (self.domains.unsubscribe_token(r) for r in row.rcpt_tos) if t]
        if not tokens:
            return False
        for token in dict.fromkeys(tokens[:MAX_UNSUBSCRIBES_PER_MESSAGE]):
            await self.unsubscribes.unsubscribe(token, via="mail", source_message_id=row.id)
        async with self.db.transaction() as session:
            await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == row.id, InboundMessage.processed_at.is_(None))
                .values(classification=MessageKind.UNSUBSCRIBE, classified_by=ONE_CLICK_RULE, processed_at=utcnow())
            )
        log.info("incoming: message %s is a one-click unsubscribe by mail", row.id)
        return True

    async def _identity_for(self, rcpt_tos: list[str]) -> Identity | None:
        """The identity the message was addressed to: its address or its tracking address, first recipient first."""
        wanted = [r.strip().lower() for r in rcpt_tos if r]
        if not wanted:
            return None
        async with self.db.session() as session:
            found = list(
                await session.scalars(
                    select(Identity).where(
                        or_(func.lower(Identity.address).in_(wanted), func.lower(Identity.tracking_address).in_(wanted))
                    )
                )
            )
        for rcpt in wanted:
            for identity in found:
                if rcpt in (identity.address.lower(), (identity.tracking_address or "").lower()):
                    return identity
        return None

    async def _suppress(
        self, session: AsyncSession, row: InboundMessage, result: Classification, identity: Identity | None
    ) -> None:
        """Insert-if-absent each address for the identity's team; only a new entry gets an audit event."""
        if identity is None:
            log.info("incoming: %s %s matches no identity; it suppresses nothing", result.kind, row.id)
            return
        reason = SUPPRESSION_REASONS[result.kind]
        addresses = list(result.addresses)
        if result.kind == MessageKind.UNSUBSCRIBE and not addresses and row.mail_from:
            addresses = [row.mail_from]
        for address in dict.fromkeys(a.strip().lower() for a in addresses):
            if not self._suppressible(address):
                continue
            added = await self.suppressions.add(
                session, team_id=identity.team_id, address=address, reason=reason, source_message_id=row.id
            )
            if added:
                audit.record(
                    session,
                    actor="inbound",
                    action="suppression.added",
                    identity_id=identity.id,
                    address=address,
                    reason=reason,
                    rule=result.rule,
                    inbound_message_id=row.id,
                )
                log.info("incoming: suppressed %s (%s, message %s)", address, reason, row.id)

    def _sender(self, identity: Identity) -> str:
        """Forwards leave from the platform: From the identity itself when it is on our domains (mail From a
        customer's domain sent by our relay would fail its DMARC), else from the platform's sender."""
        return identity.address if self.domains.is_own(identity.address) else self.domains.sender

    def _suppressible(self, address: str) -> bool:
        local, at, domain = address.rpartition("@")
        return bool(at and local and domain) and len(address) <= 320 and not self.domains.is_own(address)
