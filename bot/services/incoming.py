"""The incoming-mail pipeline: classify each stored message once and act on it.

The inbound server has already committed the raw message; this runs afterwards from the stored copy. Each message
is processed exactly once even with several processes, and a process that dies mid-way loses nothing:

- Whoever processes a message holds a *processing lock* that dies with its holder: a PostgreSQL session-level
  advisory lock on a dedicated connection, or (SQLite) an flock on a file beside the database. The kernel or the
  database server releases it when the process dies, so no timeout has to guess whether the holder is still alive.
  Someone else holding it means "being processed right now": skip.
- With the lock held, the row is re-read: `processed_at` set means done. It is set only at the end, in the same
  transaction as the classification and its effects (suppressions, `forwarded_at`), and only WHERE it is still NULL.
- A step that fails leaves `processed_at` NULL, so `process_pending` (at start-up, or periodically) retries it; a
  process killed mid-way leaves it NULL too, and its lock is gone, so the next `process_pending` takes it over.
Side effects outside the database (forwarding, on_tokens) are therefore at-least-once across a crash at the wrong
moment, and exactly once otherwise; `forwarded_at` is checked first so a retried row is not forwarded twice.

Leads are forwarded as a new message from the identity to its response-forwarding address with the lead's original
attached as message/rfc822 (not re-sent with Resent-* headers): re-sending keeps `From: lead@their-domain`, which our
relay or the customer's server is not authorised to send as, so DMARC would quarantine or reject exactly the mail
that matters. The attachment keeps the original intact; Reply-To points at the lead so answering is one click.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol, cast

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from bot.mail.classifier import FORWARDED_HEADER, Classification, Mail, classify
from bot.mail.inbound import dialect_insert, without_sql_parameters
from bot.services import audit
from models import Database, Identity, InboundMessage, Suppression
from models.base import utcnow

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: SQLite then falls back to in-process locks
    fcntl = None  # type: ignore[assignment]

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
    ) -> None:
        self.db = db
        self.on_tokens = on_tokens
        self.forward = forward
        # Our own domains: an address on them is never suppressed, and forwards are sent From one of them.
        self.platform_domains = tuple(d.lower() for d in platform_domains)
        # From address of forwards for identities not on our domains (company identities): mail leaving the
        # platform From jane@customer.example would fail the customer's DMARC.
        self.forward_sender = forward_sender or (f"noreply@{self.platform_domains[0]}" if platform_domains else None)
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

    # ---- processing -------------------------------------------------------------------------------------------

    async def _process_row(self, row: InboundMessage) -> None:
        message_id = row.id
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
                .where(InboundMessage.id == message_id, InboundMessage.processed_at.is_(None))
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
    fwd.attach(cast(EmailMessage, _original_attachment(raw)))
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


# ---- processing locks: "someone alive is processing this message" ---------------------------------------------


class ProcessingLocks(Protocol):
    def hold(self, message_id: int) -> AbstractAsyncContextManager[bool]:
        """Try to take the lock without waiting; yields whether we hold it. Released on exit, and by the OS or the
        database server if the process dies."""
        ...

    def done(self, message_id: int) -> None:
        """The message is processed (called while holding its lock): drop whatever the lock left behind."""
        ...


def processing_locks(db: Database) -> ProcessingLocks:
    if not db.is_sqlite:
        return AdvisoryLocks(db)
    path = make_url(db.url).database
    if path and path != ":memory:" and not path.startswith("file:") and fcntl is not None:
        return FileLocks(Path(f"{path}.processing"))
    return LocalLocks()


class AdvisoryLocks:
    """PostgreSQL: a session-level advisory lock, held on a dedicated connection while the message is processed.
    It belongs to the server-side session, so it vanishes with the connection when the process dies."""

    NAMESPACE = 0x1DB07  # first key of pg_try_advisory_lock(int, int): the inbound message locks of this product

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def hold(self, message_id: int) -> AsyncIterator[bool]:
        keys = {"ns": self.NAMESPACE, "id": message_id}
        async with self.db.engine.connect() as connection:
            held = bool(await connection.scalar(text("SELECT pg_try_advisory_lock(:ns, :id)"), keys))
            await connection.commit()  # the lock is session-level: do not sit idle in a transaction meanwhile
            if not held:
                yield False
                return
            try:
                yield True
            finally:
                try:
                    await connection.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), keys)
                    await connection.commit()
                except BaseException:
                    # A pooled connection must never keep the lock: closing the session releases it.
                    await connection.invalidate()
                    raise

    def done(self, message_id: int) -> None:
        pass


class FileLocks:
    """SQLite: flock on one file per message in a directory beside the database (SQLite is local, so every process
    sharing it sees the same files). flock belongs to the open file, so it also excludes tasks of one process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @asynccontextmanager
    async def hold(self, message_id: int) -> AsyncIterator[bool]:
        assert fcntl is not None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{message_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def done(self, message_id: int) -> None:
        # Safe while holding the lock: whoever opens the name afterwards locks a new file, then sees the row done.
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{message_id}.lock").unlink()


class LocalLocks:
    """In-memory SQLite or no flock: one process, so the lock only has to exclude this process's own tasks."""

    def __init__(self) -> None:
        self.held: set[int] = set()

    @asynccontextmanager
    async def hold(self, message_id: int) -> AsyncIterator[bool]:
        if message_id in self.held:
            yield False
            return
        self.held.add(message_id)
        try:
            yield True
        finally:
            self.held.discard(message_id)

    def done(self, message_id: int) -> None:
        pass
