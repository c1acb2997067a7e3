"""The incoming-mail pipeline: classify each stored message once and act on it.

The inbound server has already committed the raw message; this runs afterwards from the stored copy. Each message
is processed exactly once even with several processes: a process claims the row with a conditional UPDATE
(`processed_at` from NULL to now) and only the winner goes on. If a step fails the claim is released
(`processed_at` back to NULL) so `process_pending` retries it. A process that dies holding a claim cannot release it,
so a claim on a row that was never finished (classification still NULL) expires after `claim_timeout`.
The classification is written last, together with its effects, so "classified" means "done".

Leads are forwarded as a new message from the identity to its response-forwarding address with the lead's original
attached as message/rfc822 (not re-sent with Resent-* headers): re-sending keeps `From: lead@their-domain`, which our
relay or the customer's server is not authorised to send as, so DMARC would quarantine or reject exactly the mail
that matters. The attachment keeps the original intact; Reply-To points at the lead so answering is one click.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.classifier import FORWARDED_HEADER, Classification, Mail, classify
from bot.mail.inbound import dialect_insert, without_sql_parameters
from bot.services import audit
from models import Database, Identity, InboundMessage, Suppression
from models.base import utcnow

log = logging.getLogger(__name__)

SUPPRESSION_REASONS = {"bounce": "hard_bounce", "complaint": "complaint", "unsubscribe": "unsubscribe"}
_MESSAGE_ID = re.compile(r"^<[^<>\s]{1,900}>$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
PREVIEW_CHARS = 4000


class IncomingMail:
    """Processes stored inbound messages: classify, record, then suppress / hand over tokens / forward leads."""

    def __init__(
        self,
        db: Database,
        *,
        on_tokens: Callable[[list[str], int], Awaitable[None]],
        forward: Callable[[Identity, EmailMessage], Awaitable[None]],
        platform_domains: tuple[str, ...],
        forward_sender: str | None = None,
        claim_timeout: timedelta = timedelta(minutes=15),
    ) -> None:
        self.db = db
        self.on_tokens = on_tokens
        self.forward = forward
        # Our own domains: an address on them is never suppressed, and forwards are sent From one of them.
        self.platform_domains = tuple(d.lower() for d in platform_domains)
        # From address of forwards for identities not on our domains (company identities): mail leaving the
        # platform From jane@customer.example would fail the customer's DMARC.
        self.forward_sender = forward_sender or (f"noreply@{self.platform_domains[0]}" if platform_domains else None)
        self.claim_timeout = claim_timeout

    async def process(self, message_id: int) -> None:
        """Process one stored message, once. Returns quietly if it is already processed or being processed
        elsewhere; raises if a step failed (the message is then released for a retry)."""
        await self._process_once(message_id)

    async def process_pending(self) -> int:
        """Process every stored message not yet processed (and claims abandoned by a crashed process). Called on
        start, so a crash after answering 250 loses nothing. Returns how many this call processed."""
        async with self.db.session() as session:
            ids = list(await session.scalars(self._claimable(select(InboundMessage.id)).order_by(InboundMessage.id)))
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
        if not await self._claim(message_id):
            return False
        try:
            await self._process_claimed(message_id)
        except BaseException:
            # Shielded: a cancelled caller must still hand the row back.
            await asyncio.shield(self._release(message_id))
            raise
        return True

    # ---- claiming ---------------------------------------------------------------------------------------------

    def _claimable(self, statement: Any) -> Any:
        stale = utcnow() - self.claim_timeout
        return statement.where(
            or_(
                InboundMessage.processed_at.is_(None),
                and_(InboundMessage.classification.is_(None), InboundMessage.processed_at < stale),
            )
        )

    async def _claim(self, message_id: int) -> bool:
        async with self.db.transaction() as session:
            statement = self._claimable(update(InboundMessage).where(InboundMessage.id == message_id))
            claimed = await session.scalar(statement.values(processed_at=utcnow()).returning(InboundMessage.id))
        return claimed is not None

    async def _release(self, message_id: int) -> None:
        try:
            async with self.db.transaction() as session:
                await session.execute(
                    update(InboundMessage)
                    .where(InboundMessage.id == message_id, InboundMessage.classification.is_(None))
                    .values(processed_at=None)
                )
        except Exception:  # noqa: BLE001 - the claim then expires after claim_timeout
            log.exception("incoming: could not release message %s", message_id)

    # ---- processing -------------------------------------------------------------------------------------------

    async def _process_claimed(self, message_id: int) -> None:
        async with self.db.session() as session:
            row = await session.get(InboundMessage, message_id)
        if row is None:
            return
        # Parsing a large message is CPU work: keep it off the event loop.
        result = await asyncio.to_thread(classify, row.raw)
        identity = await self._identity_for(row.rcpt_tos)
        identity_id = identity.id if identity is not None else None
        log.info(
            "incoming: message %s is %s (rule %s) for identity %s", message_id, result.kind, result.rule, identity_id
        )
        forwarded_at = row.forwarded_at
        if result.kind == "verification":
            await self.on_tokens(list(result.tokens), message_id)
        elif result.kind == "lead" and forwarded_at is None:
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
                await self._suppress(session, row, result, identity_id)
            await session.execute(
                update(InboundMessage)
                .where(InboundMessage.id == message_id)
                .values(
                    classification=result.kind,
                    classified_by=result.rule,
                    identity_id=identity_id,
                    processed_at=utcnow(),
                    forwarded_at=forwarded_at,
                )
            )

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
        self, session: AsyncSession, row: InboundMessage, result: Classification, identity_id: int | None
    ) -> None:
        """Insert-if-absent each address; only a new entry gets an audit event."""
        reason = SUPPRESSION_REASONS[result.kind]
        addresses = list(result.addresses)
        if result.kind == "unsubscribe" and not addresses and row.mail_from:
            addresses = [row.mail_from]
        insert = dialect_insert(self.db)
        for address in dict.fromkeys(a.strip().lower() for a in addresses):
            if not self._suppressible(address):
                continue
            added = await session.scalar(
                insert(Suppression)
                .values(address=address, reason=reason, source_message_id=row.id, created_at=utcnow())
                .on_conflict_do_nothing(index_elements=["address"])
                .returning(Suppression.id)
            )
            if added is not None:
                audit.record(
                    session,
                    actor="inbound",
                    action="suppression.added",
                    identity_id=identity_id,
                    address=address,
                    reason=reason,
                    rule=result.rule,
                    inbound_message_id=row.id,
                )
                log.info("incoming: suppressed %s (%s, message %s)", address, reason, row.id)

    def _sender(self, identity: Identity) -> str:
        """Forwards leave from the platform: From the identity itself when it is on our domains, else our sender."""
        if identity.address.rpartition("@")[2].lower() in self.platform_domains or not self.forward_sender:
            return identity.address
        return self.forward_sender

    def _suppressible(self, address: str) -> bool:
        local, at, domain = address.rpartition("@")
        return bool(at and local and domain) and len(address) <= 320 and domain not in self.platform_domains


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub(" ", text).strip()[:limit]


def build_forward(identity: Identity, raw: bytes, inbound_id: int, *, sender: str | None = None) -> EmailMessage:
    """The message that hands a lead's reply to the identity's response-forwarding address: from the identity,
    Reply-To the lead, the reply's new text inline, the original attached as message/rfc822, and FORWARDED_HEADER
    so the copy is recognised (and never forwarded again) if it ever comes back to us. `sender` is the From address
    (default: the identity's own), shown with the identity's display name."""
    mail = Mail(raw)
    original = mail.message
    local, _, domain = (sender or identity.address).rpartition("@")
    lead = mail.header("From") or "(unknown sender)"

    fwd = EmailMessage()
    fwd["From"] = Address(display_name=identity.display_name, username=local, domain=domain)
    fwd["To"] = identity.forwarding_address
    try:
        reply_to = original.get("Reply-To") or original.get("From")
        if reply_to is not None and getattr(reply_to, "addresses", None):
            fwd["Reply-To"] = reply_to.addresses
    except Exception:  # noqa: BLE001 - an unparseable From just means no Reply-To
        pass
    subject = _clean(mail.subject, 200)
    fwd["Subject"] = f"Fwd: {subject}" if subject else "Fwd: (no subject)"
    fwd["Date"] = format_datetime(utcnow())
    fwd["Message-ID"] = make_msgid(domain=domain or None)
    original_id = " ".join(mail.header("Message-ID").split())
    if _MESSAGE_ID.match(original_id):
        fwd["In-Reply-To"] = original_id
        fwd["References"] = original_id
    fwd[FORWARDED_HEADER] = str(inbound_id)

    preview = mail.new_text or mail.body_text
    if len(preview) > PREVIEW_CHARS:
        preview = preview[:PREVIEW_CHARS] + "\n[…]"
    fwd.set_content(
        f"{_clean(lead, 300)} replied to {identity.address}:\n\n{preview}\n\n"
        "The complete message is attached. Replying to this email answers the sender directly.\n"
    )
    fwd.make_mixed()
    fwd.attach(_original_attachment(raw))
    return fwd


def _original_attachment(raw: bytes) -> MIMEPart:
    """message/rfc822 with the original. Byte-exact when it is 7-bit; an 8-bit original is attached parsed (the
    generator cannot write 8-bit text verbatim), which keeps headers and body as they were unless lines are long."""
    part = MIMEPart()
    part["Content-Type"] = "message/rfc822"
    part["Content-Disposition"] = 'attachment; filename="original.eml"'
    if raw.isascii():
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(raw.decode("ascii"))
    else:
        part["Content-Transfer-Encoding"] = "8bit"
        part.set_payload([BytesParser(policy=policy.default).parsebytes(raw)])
    return part
