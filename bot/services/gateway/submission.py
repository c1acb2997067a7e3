"""Sending as an identity through the submission gateway: who may send, to whom, how much, and the relay.

The SMTP edge (bot/smtp/gateway.py) asks these questions in protocol order and turns each answer into a reply code:
AUTH -> `login`, MAIL -> `sender`, RCPT -> `recipient_suppressed` then `reserve` (one slot per recipient), DATA ->
`submit`, and `release` for slots of a transaction that ended without DATA. A credential sends only as its own
identity, only once that identity is verified, never to suppressed addresses, and only within the identity's
sliding-window limits, counted in recipients; then one copy per recipient goes to the identity's own server or the
platform relay (see `dispatch`).

Once the receiving server accepted the message for any recipient, the mailer hears 250: a 4xx would make it send
the whole message again, to the recipients that already have it. Recipients the server refused give their slot
back and are reported by a delivery status notification to the return path (see `reports`). Only when no recipient
was accepted does the mailer hear a failure: 451 (try again) or, when the server refused every recipient for good,
554."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from enum import StrEnum
from typing import Any, cast

from bot.mail.copies import Copy, CopyResult, CopyStatus
from bot.mail.delivery import Delivery
from bot.services.gateway.credentials import GatewayCredentials
from bot.services.gateway.dispatch import Dispatcher, UnreadableMessage
from bot.services.gateway.notices import LimitNotices
from bot.services.gateway.reports import DeliveryReports
from bot.services.gateway.suppressions import Suppressions
from bot.services.gateway.window import Delivered, LimitDecision, SendingLimits
from bot.services.identities import IdentityService
from models import Database, Identity, IdentityHealth, IdentityLifecycle, IdentityStatus, Suppression

log = logging.getLogger(__name__)

# Headers naming who the message is from, as the recipient sees it: each must name the identity (RFC 5322 3.6.2 and
# 3.6.6; a Resent-From is shown as the author of a re-sent message by many clients).
AUTHOR_HEADERS = ("From", "Sender", "Resent-From", "Resent-Sender")


class IdentityRelay:
    """The gateway's relay: the identity's own server for company identities, else the platform relay."""

    def __init__(self, delivery: Delivery, identities: IdentityService) -> None:
        self.delivery = delivery
        self.identities = identities

    async def __call__(self, identity: Identity, copies: list[Copy]) -> list[CopyResult]:
        server = await self.identities.sending_server(identity)
        return await self.delivery.send_copies(server, copies)


@dataclass(frozen=True)
class GatewayLogin:
    """Kept in the SMTP session after a successful AUTH: whose credential this connection uses."""

    identity_id: int
    username: str


@dataclass(frozen=True)
class Slot:
    """A recipient accepted at RCPT, with the sending slot reserved for it."""

    reservation_id: int
    recipient: str


class SenderVerdict(StrEnum):
    OK = "ok"
    NOT_AUTHORIZED = "not_authorized"  # not this credential's identity
    NOT_READY = "not_ready"  # the identity has not passed its three verification steps
    PAUSED = "paused"  # its bounce or complaint rate went over the line: deferred until a manager resumes it
    DISABLED = "disabled"  # someone disabled the identity (/identity disable): it sends nothing until enabled


class Outcome(StrEnum):
    RELAYED = "relayed"  # accepted for every recipient
    PARTLY_RELAYED = "partly_relayed"  # accepted for some; the others are reported by DSN
    NO_FROM = "no_from"
    HEADER_NOT_AUTHORIZED = "header_not_authorized"
    UNREADABLE = "unreadable"
    REFUSED = "refused"  # the receiving server refused every recipient for good
    RELAY_FAILED = "relay_failed"  # nothing accepted: try again later


@dataclass(frozen=True)
class Submitted:
    outcome: Outcome
    author: str | None = None  # HEADER_NOT_AUTHORIZED: the address the headers named
    accepted: int = 0
    recipients: int = 0
    refusal: CopyResult | None = None  # REFUSED: the first refusal, to quote


def header_addresses(message: EmailMessage, name: str) -> list[str]:
    """Every address in every `name` header; a header that can't be parsed counts as an unknown author."""
    found: list[str] = []
    for value in message.get_all(name) or []:
        addresses = getattr(value, "addresses", None)
        if addresses is None or getattr(value, "defects", None):
            found.append(str(value)[:100] or "(unreadable)")
            continue
        found.extend(a.addr_spec for a in addresses)
    return found


def check_authors(message: EmailMessage, identity: Identity) -> Submitted | None:
    """The envelope alone proves nothing to the recipient: every author header they see must name this identity.
    None when they do; else the refusal."""
    if not header_addresses(message, "From"):
        return Submitted(Outcome.NO_FROM)
    for name in AUTHOR_HEADERS:
        for author in header_addresses(message, name):
            if author.lower() != identity.address.lower():
                return Submitted(Outcome.HEADER_NOT_AUTHORIZED, author=author)
    return None


def _parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(raw))


class Submission:
    """The gateway's decisions, in the order the SMTP conversation asks for them."""

    def __init__(
        self,
        db: Database,
        credentials: GatewayCredentials,
        window: SendingLimits,
        dispatcher: Dispatcher,
        *,
        reports: DeliveryReports | None = None,
        suppressions: Suppressions | None = None,
        notices: LimitNotices | None = None,
    ) -> None:
        self.db = db
        self.credentials = credentials
        self.window = window
        self.dispatcher = dispatcher
        self.reports = reports
        self.suppressions = suppressions or Suppressions(db)
        self.notices = notices  # the channel hears when the limits defer recipients (None: nobody is told)
        self._background: set[asyncio.Future[Any]] = set()

    async def login(self, username: str, password: str) -> GatewayLogin | None:
        identity_id = await self.credentials.authenticate(username, password)
        if identity_id is None:
            log.info("gateway AUTH refused for %r", username)
            return None
        return GatewayLogin(identity_id, username)

    async def sender(self, login: GatewayLogin | None, address: str) -> tuple[SenderVerdict, Identity | None]:
        """MAIL FROM: only the credential's own identity, once it is ready, and not while it is disabled or paused."""
        if login is None:
            return SenderVerdict.NOT_AUTHORIZED, None
        async with self.db.session() as session:
            identity = await session.get(Identity, login.identity_id)
        if identity is None or address.lower() != identity.address.lower():
            return SenderVerdict.NOT_AUTHORIZED, None
        if identity.lifecycle == IdentityLifecycle.DELETED:
            return SenderVerdict.NOT_AUTHORIZED, None
        if identity.lifecycle == IdentityLifecycle.DISABLED:
            return SenderVerdict.DISABLED, identity
        if identity.status != IdentityStatus.READY:
            return SenderVerdict.NOT_READY, identity
        if identity.health == IdentityHealth.PAUSED:
            return SenderVerdict.PAUSED, identity
        return SenderVerdict.OK, identity

    async def recipient_suppressed(self, identity: Identity, address: str) -> Suppression | None:
        """RCPT TO: an address suppressed for the identity's team gets nothing from any of its identities."""
        return await self.suppressions.find(identity.team_id, address)

    async def reserve(self, identity: Identity, address: str) -> LimitDecision:
        """RCPT TO: take the recipient's slot in the identity's window (or say which limit is full, until when)."""
        decision = await self.window.reserve(identity, address)
        if not decision.allowed:
            log.info("gateway: %s over its %s limit of %s", identity.address, decision.limit, decision.limit_value)
            if self.notices is not None:  # in the background: the 452 does not wait for Slack
                self._in_background(self.notices.deferred(identity, decision))
        return decision

    async def release(self, slots: Sequence[Slot]) -> None:
        """The transaction ended without DATA (RSET, a new EHLO, the connection closed): give its slots back."""
        if slots:
            await self.window.release([s.reservation_id for s in slots])

    async def submit(self, identity: Identity, raw: bytes, mail_from: str, slots: Sequence[Slot]) -> Submitted:
        """DATA: the headers must name the identity; then one copy per recipient goes out, and each slot is
        confirmed (accepted) or given back (refused, failed). Every slot is settled whatever happens."""
        settled = False
        try:
            message = await asyncio.to_thread(_parse, raw)
            refusal = check_authors(message, identity)
            if refusal is not None:
                return refusal
            recipients = [s.recipient for s in slots]
            try:
                sent = await self.dispatcher.send(identity, message, mail_from, recipients)
            except UnreadableMessage as exc:
                log.info("gateway: a message from %s could not be written out (%s)", identity.address, exc)
                return Submitted(Outcome.UNREADABLE)
            outcomes = list(zip(slots, sent.results, strict=True))  # the copies went in the order of the slots
            delivered = [
                Delivered(s.reservation_id, sent.message_id, sent.verp_tokens.get(s.recipient))
                for s, result in outcomes
                if result.status == CopyStatus.ACCEPTED
            ]
            released = [s.reservation_id for s, result in outcomes if result.status != CopyStatus.ACCEPTED]
            settled = await self._settle(delivered, released)
            if delivered and self.notices is not None:
                self._in_background(self.notices.sent(identity))
            return self._outcome(identity, raw, mail_from, sent.results)
        finally:
            if not settled:
                await self._release_quietly(slots)

    def _outcome(self, identity: Identity, raw: bytes, mail_from: str, results: list[CopyResult]) -> Submitted:
        accepted = [r for r in results if r.status == CopyStatus.ACCEPTED]
        others = [r for r in results if r.status != CopyStatus.ACCEPTED]
        if accepted:
            if others and self.reports is not None:
                self._in_background(self.reports.report(mail_from, raw, others))
            outcome = Outcome.PARTLY_RELAYED if others else Outcome.RELAYED
            return Submitted(outcome, accepted=len(accepted), recipients=len(results))
        log.info("gateway: no recipient of a message from %s was accepted", identity.address)
        if others and all(r.permanent for r in others):
            return Submitted(Outcome.REFUSED, recipients=len(results), refusal=others[0])
        return Submitted(Outcome.RELAY_FAILED, recipients=len(results))

    async def _settle(self, delivered: list[Delivered], released: list[int]) -> bool:
        """Record what went out. The mail has gone: a failure here must not turn into a 4xx (the mailer would send
        it again), so it is logged, and the slots stay reserved (counted: the safe side)."""
        try:
            await self.window.settle(delivered, released)
        except Exception:  # noqa: BLE001
            log.exception("gateway: could not record the outcome of %d recipient(s)", len(delivered) + len(released))
        return True

    async def _release_quietly(self, slots: Sequence[Slot]) -> None:
        try:
            await self.release(slots)
        except Exception:  # noqa: BLE001 - a slot left reserved stays counted, the safe side
            log.exception("gateway: could not give back %d slot(s)", len(slots))

    def _in_background(self, work: Any) -> None:
        task = asyncio.ensure_future(self._quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(work: Any) -> None:
        try:
            await work
        except Exception:  # noqa: BLE001 - the mail went out; only the report about it is lost
            log.exception("gateway: background work after a message failed (a delivery report or notice)")

    async def drain(self, grace: float = 10.0) -> None:
        """Let background work (delivery reports, limit notices) finish, briefly."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=grace)
        if self.notices is not None:
            await self.notices.drain(grace)
