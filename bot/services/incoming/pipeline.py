"""The incoming-mail pipeline: judge each stored message once (in a worker process), attribute reports to mail the
team sent, and act: suppress, hand over verification tokens, forward leads, tell the operator.

The inbound server has already committed the raw message; this runs afterwards from the stored copy. Each message
is processed exactly once even with several processes, and a process that dies mid-way loses nothing:

- Whoever processes a message holds a processing lock (see `locks`) that dies with its holder. Someone else holding
  it means "being processed right now": skip.
- With the lock held, the row is re-read: `processed_at` set means done. It is set only at the end, in the same
  transaction as the classification and its effects (suppressions, `forwarded_at`), and only WHERE it is still NULL.
- A step that fails leaves `processed_at` NULL and counts an attempt: the message is retried after a growing delay
  (`next_attempt_at`) and parked (`parked_at`, logged once, told to the operator) after MAX_ATTEMPTS.
Side effects outside the database (forwarding, on_tokens, operator notices) are therefore at-least-once across a
crash at the wrong moment, and exactly once otherwise; a forward repeated after a crash carries the same Message-ID.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import and_, func, or_, select, update

from bot.mail.delivery import Delivery
from bot.mail.domains import PlatformDomains
from bot.mail.mime import first_address, header_summary
from bot.services.gateway.suppressions import Suppressions
from bot.services.gateway.unsubscribe import Unsubscribes
from bot.services.incoming.attribution import MAX_SUPPRESSIONS_PER_MESSAGE, attribute
from bot.services.incoming.forwarding import ForwardTarget, Original
from bot.services.incoming.judging import Job, Verdict
from bot.services.incoming.locks import processing_locks
from bot.services.incoming.reports import RATE_KINDS, SUPPRESSION_REASONS, apply_report
from bot.services.incoming.store import OPERATOR_MAILBOXES
from bot.services.incoming.workers import InlineJudge
from bot.services.notifier import Notifier, NullNotifier, OperatorEvent, OperatorNotice
from models import Database, Identity, InboundMessage, MessageKind, SentRecipient
from models.base import utcnow
from models.db import without_sql_parameters

log = logging.getLogger(__name__)

# Failed processing is retried after these delays (seconds), then parked: 4 attempts over about 20 minutes.
RETRY_DELAYS = (30.0, 180.0, 900.0)

ONE_CLICK_RULE = "list-unsubscribe-mailto"

Forward = Callable[[Identity, bytes], Awaitable[None]]
"""Hands a built forward (on the wire) to the mail system (see LeadForwarder)."""
OnTokens = Callable[[list[str], int], Awaitable[None]]
"""Called with the verification tokens found in a stored message, and the message's row id."""
OnReports = Callable[[list[int]], Awaitable[None]]
"""Called with the identities whose sent mail drew attributed hard bounces or complaints (their rates changed)."""


class Judge(Protocol):
    """Where messages are judged (workers.JudgePool in the server)."""

    async def judge(self, job: Job) -> Verdict: ...

    async def close(self) -> None: ...


class LeadForwarder:
    """Sends a lead's forward to the identity's response-forwarding address, from the platform."""

    def __init__(self, delivery: Delivery, domains: PlatformDomains) -> None:
        self.delivery = delivery
        self.domains = domains

    async def __call__(self, identity: Identity, message: bytes) -> None:
        await self.delivery.send_from_platform(
            message, sender=self.domains.sender, recipients=[identity.forwarding_address]
        )


class IncomingMail:
    """Processes stored inbound messages: judge, record, then suppress / hand over tokens / forward leads."""

    def __init__(
        self,
        db: Database,
        domains: PlatformDomains,
        *,
        on_tokens: OnTokens,
        forward: Forward,
        notifier: Notifier | None = None,
        judge: Judge | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        unsubscribes: Unsubscribes | None = None,
        on_reports: OnReports | None = None,
    ) -> None:
        self.db = db
        self.unsubscribes = unsubscribes
        self.on_reports = on_reports
        # Our own domains: an address on them is never suppressed, and forwards are sent From one of them.
        self.domains = domains
        self.on_tokens = on_tokens
        self.forward = forward
        self.notifier = notifier or NullNotifier()
        self.judge = judge or InlineJudge()
        self.retry_delays = retry_delays
        self.suppressions = Suppressions(db)
        self._locks = processing_locks(db)

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays) + 1

    async def process(self, message_id: int) -> bool:
        """Process one stored message, once. False if it is already processed, parked, or being processed elsewhere
        right now; raises if a step failed (the failure is counted: retried later, or parked)."""
        async with self._locks.hold(message_id) as held:
            if not held:
                return False  # another live process (or task) is on it
            async with self.db.session() as session:
                row = await session.get(InboundMessage, message_id)
            if row is None or row.processed_at is not None or row.parked_at is not None:
                return False
            try:
                await self._process_row(row)
            except Exception as exc:
                await self._failed(row, exc)
                raise
            self._locks.done(message_id)
            return True

    async def due(self, *, limit: int = 500, exclude: frozenset[int] = frozenset()) -> list[int]:
        """Stored messages waiting to be processed now, oldest first (not parked, not waiting for a retry)."""
        now = utcnow()
        query = select(InboundMessage.id).where(
            InboundMessage.processed_at.is_(None),
            InboundMessage.parked_at.is_(None),
            or_(InboundMessage.next_attempt_at.is_(None), InboundMessage.next_attempt_at <= now),
        )
        if exclude:
            query = query.where(InboundMessage.id.not_in(sorted(exclude)[:1000]))
        async with self.db.session() as session:
            return list(await session.scalars(query.order_by(InboundMessage.id).limit(limit)))

    async def process_pending(self) -> int:
        """Process every message that is due, including those a crashed process was working on. Called on start (a
        crash after answering 250 loses nothing). Returns how many this call processed."""
        done = 0
        for message_id in await self.due(limit=100_000):
            try:
                done += await self.process(message_id)
            except Exception:  # noqa: BLE001 - counted and logged by process(); one bad message blocks nothing
                continue
        return done

    async def report_counts(self, team_id: str | None = None) -> dict[tuple[str, str], int]:
        """How many bounces / complaints / unsubscribe requests were stored, by (kind, attribution): unmatched ones
        are counted here and changed nothing."""
        query = (
            select(InboundMessage.classification, InboundMessage.attribution, func.count())
            .where(InboundMessage.attribution.is_not(None))
            .group_by(InboundMessage.classification, InboundMessage.attribution)
        )
        if team_id is not None:
            query = query.join(Identity, Identity.id == InboundMessage.identity_id).where(Identity.team_id == team_id)
        async with self.db.session() as session:
            return {(str(k), str(a)): int(n) for k, a, n in (await session.execute(query)).all()}

    async def close(self) -> None:
        await self.judge.close()

    # ------------------------------------------------------------------------------------------------------------

    async def _process_row(self, row: InboundMessage) -> None:
        recipients = [r.strip().lower() for r in row.rcpt_tos if r]
        unsubscribing = [r for r in recipients if self.domains.unsubscribe_token(r)]
        if unsubscribing:
            # A one-click unsubscribe by mail acts whatever else the message is; if it also went to an identity
            # (a reply that Cc'd the unsubscribe address), the rest is judged as usual: a lead is never lost.
            await self._one_click_by_mail(row, unsubscribing)
            recipients = [r for r in recipients if r not in unsubscribing]
            if not recipients:
                await self._done_as_one_click(row)
                return
        operator = [r for r in recipients if self._operator_mailbox(r)]
        tokens = [t for t in (self.domains.return_path_token(r) for r in recipients) if t]
        # An identity's own or tracking address: where people (and the customer's forwarder) write to.
        identity = await self._identity_for(
            [r for r in recipients if r not in operator and not self.domains.return_path_token(r)]
        )
        to_people = identity is not None
        if identity is None:
            identity = await self._identity_of_tokens(tokens)
        target = self._target(identity) if identity is not None and to_people else None
        original = Original(row.id, row.raw, row.dedup_key, row.received_at)
        verdict = await self.judge.judge(Job(original, row.mail_from, target))
        kind, rule = verdict.classification.kind, verdict.classification.rule
        if operator and not to_people and not tokens:
            kind, rule = MessageKind.OPERATOR, "operator-mailbox"
        elif kind == MessageKind.LEAD and tokens and not to_people:
            kind, rule = MessageKind.AUTO_REPLY, "reply-to-return-path"  # people answer From, never our return path
        identity_id = identity.id if identity is not None else None
        log.info("incoming: message %s is %s (rule %s) for identity %s", row.id, kind, rule, identity_id)
        if operator:
            await self._tell_operator(row, OperatorEvent.OPERATOR_MAIL)
        forwarded_at = row.forwarded_at
        if kind == MessageKind.VERIFICATION:
            await self.on_tokens(list(verdict.classification.tokens), row.id)
        elif kind == MessageKind.LEAD and forwarded_at is None:
            if identity is None or verdict.forward is None:
                log.warning("incoming: lead %s matches no identity (%s); not forwarded", row.id, row.rcpt_tos)
            else:
                await self.forward(identity, verdict.forward)
                forwarded_at = utcnow()
                log.info("incoming: lead %s forwarded for identity %s", row.id, identity_id)
        await self._record(row, verdict, kind, rule, identity, tokens, forwarded_at)

    async def _record(
        self,
        row: InboundMessage,
        verdict: Verdict,
        kind: MessageKind,
        rule: str,
        identity: Identity | None,
        tokens: list[str],
        forwarded_at: datetime | None,
    ) -> None:
        """Store what the message was, with its suppression and attribution in the same transaction; then the
        identities it reports on have their rates judged again."""
        identity_id = identity.id if identity is not None else None
        async with self.db.transaction() as session:
            attributed = None
            if kind in SUPPRESSION_REASONS:
                attributed = await attribute(
                    session,
                    verdict.classification,
                    team_id=identity.team_id if identity is not None else None,
                    verp_tokens=tokens,
                )
                await apply_report(session, self.suppressions, self.domains, row.id, kind, rule, attributed)
            await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == row.id, InboundMessage.processed_at.is_(None))
                .values(
                    classification=kind,
                    classified_by=rule,
                    identity_id=identity_id,
                    attribution=attributed.attribution if attributed is not None else None,
                    processed_at=utcnow(),
                    forwarded_at=forwarded_at,
                    next_attempt_at=None,
                )
            )
        if attributed is not None and kind in RATE_KINDS and attributed.targets:
            await self._reported([t.identity_id for t in attributed.targets])

    async def _reported(self, identity_ids: list[int]) -> None:
        """Best effort: the marks are committed, and the scheduled health checks judge the rates again."""
        if self.on_reports is None:
            return
        try:
            await self.on_reports(identity_ids)
        except Exception:  # noqa: BLE001
            log.exception("incoming: could not report new bounces/complaints of identities %s", identity_ids)

    async def _one_click_by_mail(self, row: InboundMessage, addresses: list[str]) -> None:
        """Mail to the unsubscribe+TOKEN@ address of a List-Unsubscribe header (RFC 8058's mailto:): the token alone
        says who and for which team, whatever the message says (insert-if-absent: a retry changes nothing)."""
        if self.unsubscribes is None:
            return
        tokens = [t for t in (self.domains.unsubscribe_token(a) for a in addresses) if t]
        for token in dict.fromkeys(tokens[:MAX_SUPPRESSIONS_PER_MESSAGE]):
            await self.unsubscribes.unsubscribe(token, via="mail", source_message_id=row.id)
        log.info("incoming: message %s unsubscribes by mail (%d address(es))", row.id, len(tokens))

    async def _done_as_one_click(self, row: InboundMessage) -> None:
        async with self.db.transaction() as session:
            await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == row.id, InboundMessage.processed_at.is_(None))
                .values(classification=MessageKind.UNSUBSCRIBE, classified_by=ONE_CLICK_RULE, processed_at=utcnow())
            )

    async def _failed(self, row: InboundMessage, exc: Exception) -> None:
        """Count a failed attempt: retry later with backoff, or park the message after MAX_ATTEMPTS."""
        attempts = row.attempts + 1
        error = f"{type(exc).__name__}: {str(without_sql_parameters(exc))[:300]}"
        parked = attempts >= self.max_attempts
        now = utcnow()
        values: dict[str, object] = {"attempts": attempts, "last_error": error[:500]}
        if parked:
            values["parked_at"] = now
        else:
            values["next_attempt_at"] = now + timedelta(seconds=self.retry_delays[attempts - 1])
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(InboundMessage)
                    .where(InboundMessage.id == row.id, InboundMessage.processed_at.is_(None))
                    .values(**values)
                )
        except Exception as db_exc:  # noqa: BLE001 - not counted: retried as if the attempt never happened
            log.error("incoming: could not record the failure of message %s: %s", row.id, type(db_exc).__name__)
            return
        if not parked:
            log.warning("incoming: message %s failed (attempt %d of %d): %s; retried later", row.id, attempts,
                        self.max_attempts, error)  # fmt: skip
            return
        log.error("incoming: message %s parked after %d failed attempts: %s", row.id, attempts, error)
        row.attempts, row.last_error = attempts, error
        await self._tell_operator(row, OperatorEvent.MESSAGE_PARKED)

    async def _tell_operator(self, row: InboundMessage, event: OperatorEvent) -> None:
        headers = header_summary(row.raw)
        notice = OperatorNotice(
            event=event,
            inbound_id=row.id,
            at=utcnow(),
            sender=first_address(headers.get("From", "")) or row.mail_from,
            recipients=tuple(row.rcpt_tos),
            subject=" ".join(headers.get("Subject", "").split())[:200],
            size=row.size,
            attempts=row.attempts,
            detail=row.last_error or "",
        )
        log.info("incoming: operator notice %s for message %s from %s", event, row.id, notice.sender)
        try:
            await self.notifier.operator_notice(notice)
        except Exception:  # noqa: BLE001 - best effort: the message and its state are stored
            log.exception("incoming: could not post the operator notice for message %s", row.id)

    def _operator_mailbox(self, address: str) -> bool:
        local, _, domain = address.rpartition("@")
        return local in OPERATOR_MAILBOXES and domain in self.domains.all

    def _target(self, identity: Identity) -> ForwardTarget:
        """Forwards leave from the platform: From the identity itself when it is on our domains (mail From a
        customer's domain sent by our relay would fail its DMARC), else from the platform's sender."""
        sender = identity.address if self.domains.is_own(identity.address) else self.domains.sender
        return ForwardTarget(identity.display_name, identity.address, identity.forwarding_address, sender)

    async def _identity_for(self, recipients: list[str]) -> Identity | None:
        """The identity the message was addressed to: its address or its tracking address, first recipient first."""
        if not recipients:
            return None
        async with self.db.session() as session:
            found = list(
                await session.scalars(
                    select(Identity).where(
                        or_(
                            func.lower(Identity.address).in_(recipients),
                            func.lower(Identity.tracking_address).in_(recipients),
                        )
                    )
                )
            )
        for rcpt in recipients:
            for identity in found:
                if rcpt in (identity.address.lower(), (identity.tracking_address or "").lower()):
                    return identity
        return None

    async def _identity_of_tokens(self, tokens: list[str]) -> Identity | None:
        """The identity whose mail a return path was made for."""
        if not tokens:
            return None
        async with self.db.session() as session:
            return await session.scalar(
                select(Identity)
                .join(SentRecipient, and_(SentRecipient.identity_id == Identity.id))
                .where(SentRecipient.verp_token.in_(tokens[:MAX_SUPPRESSIONS_PER_MESSAGE]))
                .limit(1)
            )
