"""Sending as an identity through the submission gateway: who may send, to whom, how much, and the relay.

The SMTP edge (bot/smtp/gateway.py) asks these questions in protocol order and turns each answer into a reply code:
AUTH -> `login`, MAIL -> `sender`, RCPT -> `recipient`, DATA -> `submit`. A credential sends only as its own
identity, only once that identity is verified, never to suppressed addresses, and only within the identity's
sliding-window limits; then the message goes to the identity's own server or the platform relay."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from enum import StrEnum
from typing import cast

from bot.mail.delivery import Delivery
from bot.services.gateway.credentials import GatewayCredentials
from bot.services.gateway.outgoing import SentMail
from bot.services.gateway.suppressions import Suppressions
from bot.services.gateway.window import LimitDecision, SendingLimits
from bot.services.identities import IdentityService
from models import Database, Identity, IdentityStatus, Suppression

log = logging.getLogger(__name__)

Relay = Callable[[Identity, EmailMessage, str, list[str]], Awaitable[None]]
"""(identity, message, mail_from, recipients) -> relays the message; raises if the server did not accept it."""


class IdentityRelay:
    """The gateway's relay: the identity's own server for company identities, else the platform relay."""

    def __init__(self, delivery: Delivery, identities: IdentityService) -> None:
        self.delivery = delivery
        self.identities = identities

    async def __call__(self, identity: Identity, message: EmailMessage, mail_from: str, recipients: list[str]) -> None:
        server = await self.identities.sending_server(identity)
        await self.delivery.send_as(server, message, sender=mail_from, recipients=recipients)


@dataclass(frozen=True)
class GatewayLogin:
    """Kept in the SMTP session after a successful AUTH: whose credential this connection uses."""

    identity_id: int
    username: str


class SenderVerdict(StrEnum):
    OK = "ok"
    NOT_AUTHORIZED = "not_authorized"  # not this credential's identity
    NOT_READY = "not_ready"  # the identity has not passed its three verification steps


class Outcome(StrEnum):
    RELAYED = "relayed"
    NO_FROM = "no_from"
    HEADER_NOT_AUTHORIZED = "header_not_authorized"
    OVER_LIMIT = "over_limit"
    RELAY_FAILED = "relay_failed"


@dataclass(frozen=True)
class Submitted:
    outcome: Outcome
    author: str | None = None  # HEADER_NOT_AUTHORIZED: the address the headers named
    decision: LimitDecision | None = None  # OVER_LIMIT: which limit, and when a slot frees


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


class Submission:
    """The gateway's decisions, in the order the SMTP conversation asks for them."""

    def __init__(
        self,
        db: Database,
        credentials: GatewayCredentials,
        window: SendingLimits,
        relay: Relay,
        *,
        suppressions: Suppressions | None = None,
    ) -> None:
        self.db = db
        self.credentials = credentials
        self.window = window
        self.relay = relay
        self.suppressions = suppressions or Suppressions(db)
        self.sent = SentMail(db)

    async def login(self, username: str, password: str) -> GatewayLogin | None:
        identity_id = await self.credentials.authenticate(username, password)
        if identity_id is None:
            log.info("gateway AUTH refused for %r", username)
            return None
        return GatewayLogin(identity_id, username)

    async def sender(self, login: GatewayLogin | None, address: str) -> tuple[SenderVerdict, Identity | None]:
        """MAIL FROM: only the credential's own identity, once it is ready."""
        if login is None:
            return SenderVerdict.NOT_AUTHORIZED, None
        async with self.db.session() as session:
            identity = await session.get(Identity, login.identity_id)
        if identity is None or address.lower() != identity.address.lower():
            return SenderVerdict.NOT_AUTHORIZED, None
        if identity.status != IdentityStatus.READY:
            return SenderVerdict.NOT_READY, identity
        return SenderVerdict.OK, identity

    async def recipient_suppressed(self, identity: Identity, address: str) -> Suppression | None:
        """RCPT TO: an address suppressed for the identity's team gets nothing from any of its identities."""
        return await self.suppressions.find(identity.team_id, address)

    async def submit(self, identity: Identity, raw: bytes, mail_from: str, recipients: list[str]) -> Submitted:
        """DATA: the headers must name the identity; then take a slot, relay, and confirm (or give the slot back)."""
        message = cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(raw))
        # The envelope alone proves nothing to the recipient: the From (and Sender) they see must be this identity.
        authors = header_addresses(message, "From")
        if not authors:
            return Submitted(Outcome.NO_FROM)
        for author in authors + header_addresses(message, "Sender"):
            if author.lower() != identity.address.lower():
                return Submitted(Outcome.HEADER_NOT_AUTHORIZED, author=author)
        decision = await self.window.reserve(identity.id, recipients=len(recipients))
        if not decision.allowed:
            log.info("gateway: %s over its %s limit of %s", identity.address, decision.limit, decision.limit_value)
            return Submitted(Outcome.OVER_LIMIT, decision=decision)
        assert decision.reservation_id is not None
        try:
            await self.relay(identity, message, mail_from, recipients)
        except Exception as exc:  # noqa: BLE001 - any relay failure is temporary for the client; details stay here
            # The text of a relay error may quote the upstream server or its credentials: log the type only.
            log.warning("gateway: relay failed for %s (%s)", identity.address, type(exc).__name__)
            await self._settle(self.window.release, decision.reservation_id)
            return Submitted(Outcome.RELAY_FAILED)
        # Accepted upstream: the client must hear 250 even if recording that fails, or it would send it again.
        await self._settle(self.window.confirm, decision.reservation_id)
        await self._record(identity, message, recipients)
        return Submitted(Outcome.RELAYED)

    async def _record(self, identity: Identity, message: EmailMessage, recipients: list[str]) -> None:
        """Remember who was sent what, for the reports that may come back about it."""
        message_id = " ".join(str(message.get("Message-ID", "")).split()) or None
        try:
            async with self.db.transaction() as session:
                await self.sent.record(
                    session, identity, recipients, message_id=message_id, verp=False, at=self.window.clock()
                )
        except Exception:  # noqa: BLE001 - the mail went out; losing the record only weakens later attribution
            log.exception("gateway: could not record the recipients of a message from %s", identity.address)

    @staticmethod
    async def _settle(action: Callable[[int], Awaitable[None]], reservation_id: int) -> None:
        try:
            await action(reservation_id)
        except Exception:  # noqa: BLE001 - a reservation left "reserved" stays counted, which is the safe side
            log.exception("gateway: could not settle reservation %s", reservation_id)
