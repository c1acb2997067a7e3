"""Our inbound SMTP server: receives replies to identities and the CC-tracking copies customers' mailboxes forward.

It is a final destination, never a relay: RCPT is refused (550 5.1.1) for every address the directory does not
serve. A message is committed to the database before we answer 250 (RFC 5321 §6.1: once we said "queued", losing it
is our fault); classification and forwarding run afterwards from the stored copy, in a background task, so the sending
MTA never waits for them. Any failure on our side answers 451 (retry later) rather than aiosmtpd's default 500,
which would bounce a lead's reply permanently and leak internals.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from email import policy
from email.parser import BytesHeaderParser
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import StatementError

from models import Database, InboundMessage
from models.base import utcnow

log = logging.getLogger(__name__)

# Every reply code this server chooses itself, in one place. (552 for oversize comes from aiosmtpd.)
OK_RECIPIENT = "250 2.1.5 Ok"
NO_SUCH_MAILBOX = "550 5.1.1 <{address}>: no such mailbox here"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
QUEUED = "250 2.0.0 Ok: queued as {id}"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please retry"

MAX_RECIPIENTS = 100
STOP_GRACE_SECONDS = 10.0
MAX_BATCH = 64
# Processing runs beside delivery; bounded so a burst of mail cannot crowd out the stores sessions wait on.
MAX_CONCURRENT_PROCESSING = 4


class RecipientDirectory(Protocol):
    """Which addresses we accept mail for."""

    async def serves(self, address: str) -> bool:
        """`address` is lower-cased. True for identity addresses on the platform domain and tracking addresses."""
        ...


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(value: str, limit: int) -> str:
    """Envelope text fit for any database column: no NUL/control characters (PostgreSQL refuses NUL), bounded."""
    return _CONTROL.sub("", value)[:limit]


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header, or None. Only the header section is parsed; never raises."""
    try:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw)
        value = headers.get("Message-ID")
        if value is None:
            return None
        text = " ".join(str(value).split())
    except Exception:  # noqa: BLE001 - a malformed header must not fail the delivery
        return None
    # Non-UTF-8 bytes come back as surrogates, which the database driver cannot encode.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _text(text, 998) or None


def dedup_key(message_id: str | None, raw: bytes) -> str:
    """sha256(Message-ID) + sha256(raw), hex: the same message delivered twice is stored once (128 characters)."""
    return hashlib.sha256((message_id or "").encode()).hexdigest() + hashlib.sha256(raw).hexdigest()


def without_sql_parameters(error: BaseException) -> BaseException:
    """Make SQLAlchemy errors in the chain print without their bound parameters: those are the message itself,
    and message bodies never go to the log."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StatementError):
            current.hide_parameters = True
        current = current.__cause__ or current.__context__
    return error


def dialect_insert(db: Database) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO NOTHING on both SQLite and PostgreSQL."""
    return sqlite.insert if db.is_sqlite else postgresql.insert


class InboundHandler:
    """aiosmtpd handler: the SMTP decisions (which recipients, when to say 250) over the directory and database."""

    def __init__(self, server: InboundServer) -> None:
        self._server = server

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
                return TOO_MANY_RECIPIENTS
            if not await self._server.directory.serves(address.lower()):
                log.info("inbound: refused recipient %s from %s", address, _peer(session))
                return NO_SUCH_MAILBOX.format(address=address)
        except Exception:  # noqa: BLE001 - a lookup failure is our problem: ask the sender to retry
            log.exception("inbound: recipient lookup failed for %s", address)
            return TEMPORARY_FAILURE
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return OK_RECIPIENT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            message_id, created = await self._server.store(session, envelope)
        except Exception as exc:  # noqa: BLE001 - nothing is queued unless committed: temporary failure
            log.error(
                "inbound: could not store a message from %s", _peer(session), exc_info=without_sql_parameters(exc)
            )
            return TEMPORARY_FAILURE
        log.info(
            "inbound: %s message %s from %s (%d bytes, %d recipients)",
            "stored" if created else "duplicate of",
            message_id,
            _peer(session),
            len(envelope.original_content or b""),
            len(envelope.rcpt_tos),
        )
        return QUEUED.format(id=message_id)

    async def handle_exception(self, error: Exception) -> str:
        """Anything that escapes a handler or aiosmtpd itself: log it, answer 451, never 500."""
        log.error("inbound: SMTP session error", exc_info=without_sql_parameters(error))
        return TEMPORARY_FAILURE


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


class InboundServer:
    """The inbound SMTP server, served in the current event loop."""

    def __init__(
        self,
        db: Database,
        directory: RecipientDirectory,
        *,
        on_stored: Callable[[int], Awaitable[None]] | None = None,
        max_message_size: int = 10 * 1024 * 1024,
        hostname: str = "identity-bot",
    ) -> None:
        self.db = db
        self.directory = directory
        self.on_stored = on_stored
        self.max_message_size = max_message_size
        self.hostname = hostname
        self.host = ""
        self.port = 0
        self._handler = InboundHandler(self)
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        # Strong references: the event loop only keeps weak ones, and a collected task silently stops.
        self._tasks: set[asyncio.Future[Any]] = set()
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[tuple[int, bool]]]] = []
        self._writer: asyncio.Future[Any] | None = None
        self._processing = asyncio.Semaphore(MAX_CONCURRENT_PROCESSING)

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free port; `self.port` then says which)."""
        loop = asyncio.get_running_loop()

        def new_session() -> SMTP:
            smtp = SMTP(
                self._handler,
                data_size_limit=self.max_message_size,
                hostname=self.hostname,
                ident="ESMTP",
                enable_SMTPUTF8=True,
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        self._server = await loop.create_server(new_session, host=host, port=port)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        log.info("inbound SMTP server listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, drop open sessions, and let stores and processing in flight finish (briefly)."""
        if self._server is not None:
            self._server.close()
            for smtp in list(self._sessions):
                if smtp.transport is not None:
                    smtp.transport.close()
            await self._server.wait_closed()
            self._server = None
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def track(self, task: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def store(self, session: Session, envelope: Envelope) -> tuple[int, bool]:
        """Commit the message; (row id, True) if new, (existing id, False) for a duplicate.

        Group commit: messages arriving while a transaction is being written wait and go into the next one, so
        concurrent deliveries share a commit (and its fsync) instead of queueing for the write lock one by one.
        The write runs in its own task: a client hanging up mid-commit changes nothing, and on_stored is scheduled
        after the commit whoever is still waiting."""
        raw = envelope.original_content or b""
        message_id = message_id_of(raw)
        mail_from = envelope.mail_from or ""
        values = {
            "received_at": utcnow(),
            "peer": _text(_peer(session), 64),
            "mail_from": "" if mail_from == "<>" else _text(mail_from, 320),
            "rcpt_tos": [_text(r, 320) for r in envelope.rcpt_tos],
            "raw": raw,
            "size": len(raw),
            "message_id": message_id,
            "dedup_key": dedup_key(message_id, raw),
        }
        stored: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((values, stored))
        if self._writer is None:
            self._writer = self.track(asyncio.ensure_future(self._write_batches()))
        return await stored

    async def _write_batches(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future[tuple[int, bool]]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                try:
                    results = await self._insert([values for values, _ in batch])
                except Exception as exc:  # noqa: BLE001
                    if len(batch) == 1:
                        self._settle(batch, exc)
                        continue
                    # One bad message must not fail the others: write them one by one.
                    for item in batch:
                        try:
                            self._settle([item], await self._insert([item[0]]))
                        except Exception as single_exc:  # noqa: BLE001 - this sender gets 451 and retries
                            self._settle([item], single_exc)
                    continue
                self._settle(batch, results)
        finally:
            # Cancelled by stop(): nobody may wait forever (their sessions are closed; senders will retry).
            for _, stored in batch + self._waiting:
                if not stored.done():
                    stored.cancel()
            self._waiting = []
            self._writer = None

    def _settle(
        self,
        batch: list[tuple[dict[str, Any], asyncio.Future[tuple[int, bool]]]],
        outcome: list[tuple[int, bool]] | BaseException,
    ) -> None:
        """Schedule processing of new rows (after their commit) and answer whoever is still waiting."""
        for index, (_, stored) in enumerate(batch):
            if isinstance(outcome, BaseException):
                if not stored.done():
                    stored.set_exception(outcome)
                continue
            row_id, created = outcome[index]
            if created:
                self._schedule(row_id)
            if not stored.done():
                stored.set_result((row_id, created))

    async def _insert(self, rows: list[dict[str, Any]]) -> list[tuple[int, bool]]:
        """One transaction for the batch. Core on a plain connection rather than an ORM session: far less CPU on
        the path every delivery waits on."""
        table = InboundMessage.__table__
        insert = dialect_insert(self.db)(table).on_conflict_do_nothing(index_elements=["dedup_key"])
        insert = insert.returning(table.c.id)
        results: list[tuple[int, bool]] = []
        async with self.db.engine.begin() as connection:
            for values in rows:
                new_id = (await connection.execute(insert, values)).scalar_one_or_none()
                if new_id is not None:
                    results.append((int(new_id), True))
                    continue
                existing = await connection.scalar(select(table.c.id).where(table.c.dedup_key == values["dedup_key"]))
                if existing is None:  # the conflicting row vanished meanwhile: let the sender retry
                    raise RuntimeError("duplicate inbound message disappeared")
                results.append((int(existing), False))
        return results

    def _schedule(self, message_id: int) -> None:
        if self.on_stored is None:
            return
        self.track(asyncio.ensure_future(self._run_on_stored(message_id)))

    async def _run_on_stored(self, message_id: int) -> None:
        try:
            async with self._processing:
                await self.on_stored(message_id)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the row stays stored; process_pending retries it
            log.error(
                "inbound: processing message %s failed; it stays pending",
                message_id,
                exc_info=without_sql_parameters(exc),
            )
