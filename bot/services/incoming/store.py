"""Accepting inbound mail: which addresses we serve, and committing each message before the server says 250.

RFC 5321 §6.1: once we said "queued", losing the message is our fault. So the raw message is committed first and
classification and forwarding run afterwards from the stored copy, in background tasks, so the sending MTA never
waits for them."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, or_, select

from bot.mail.domains import PlatformDomains
from bot.services.gateway.unsubscribe import Unsubscribes
from bot.services.identities.lifecycle import receives
from models import Database, Identity, InboundMessage, SentRecipient, SlotState
from models.base import utcnow
from models.db import dialect_insert, without_sql_parameters

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10.0
MAX_BATCH = 64
# Addresses found served are remembered this long: RCPT for a known address costs no database round trip. (An
# identity deleted meanwhile keeps receiving for at most this long; its mail is stored and matches no identity.)
KNOWN_SECONDS = 300.0
MAX_KNOWN = 100_000
OPERATOR_MAILBOXES = ("postmaster", "abuse")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Waiting = tuple[dict[str, Any], "asyncio.Future[tuple[int, bool]]"]


def _text(value: str, limit: int) -> str:
    """Envelope text fit for any database column: no NUL/control characters (PostgreSQL refuses NUL), bounded."""
    return _CONTROL.sub("", value)[:limit]


# The Message-ID header (with folded continuation lines) in the header section; read with a regular expression, not
# the email package: this runs before every 250, and a full header parse costs more than the rest of the store.
_MESSAGE_ID_HEADER = re.compile(rb"^message-id[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header, or None. Only the header section is read; never raises."""
    head = raw[:65536]
    end = _HEADER_END.search(head)
    found = _MESSAGE_ID_HEADER.search(head[: end.start()] if end else head)
    if found is None:
        return None
    # Undeclared 8-bit bytes become U+FFFD: the database driver cannot encode surrogates.
    text = " ".join(found.group(1).decode("utf-8", "replace").split())
    return _text(text, 998) or None


def dedup_key(message_id: str | None, raw: bytes) -> str:
    """sha256(Message-ID) + sha256(raw), hex: the same message delivered twice is stored once (128 characters)."""
    return hashlib.sha256((message_id or "").encode()).hexdigest() + hashlib.sha256(raw).hexdigest()


class InboundStore:
    """What the inbound server asks of the product: `serves(address)` and `accept(...)` (committed when it returns).

    `on_stored(row_id)` runs for every new message after its commit, in a background task (the server wakes the
    processing drain with it); a failure there leaves the row pending for the drain's next look."""

    def __init__(
        self,
        db: Database,
        domains: PlatformDomains,
        *,
        on_stored: Callable[[int], Awaitable[None]] | None = None,
        unsubscribes: Unsubscribes | None = None,
    ) -> None:
        self.db = db
        self.unsubscribes = unsubscribes
        self.domains = domains
        self.on_stored = on_stored
        # Strong references: the event loop only keeps weak ones, and a collected task silently stops.
        self._tasks: set[asyncio.Future[Any]] = set()
        self._waiting: list[Waiting] = []
        self._writer: asyncio.Future[Any] | None = None
        self._known: dict[str, float] = {}

    async def serves(self, address: str) -> bool:
        """True for identity addresses on the platform domain, tracking addresses, the return paths of mail the
        team sent (bounces+<token>@ the platform domain), the unsubscribe addresses of List-Unsubscribe headers
        (unsubscribe+<token>@, for tokens that exist), and postmaster@ / abuse@ our domains (RFC 5321 §4.5.1,
        RFC 2142). Addresses found served are remembered for KNOWN_SECONDS."""
        wanted = address.strip().lower()
        if not self.domains.is_own(wanted):
            return False
        local, _, domain = wanted.rpartition("@")
        if local in OPERATOR_MAILBOXES:
            return True
        now = time.monotonic()
        if self._known.get(wanted, 0.0) > now:
            return True
        unsubscribe = self.domains.unsubscribe_token(wanted)
        if unsubscribe is not None:  # RFC 8058 mailto: accepted for tokens we issued
            return self.unsubscribes is not None and await self.unsubscribes.find(unsubscribe) is not None
        token = self.domains.return_path_token(wanted)
        async with self.db.session() as session:
            if token is not None:
                found = await session.scalar(
                    select(func.count()).where(SentRecipient.verp_token == token, SentRecipient.state == SlotState.SENT)
                )
            else:
                # A deleted identity's addresses still receive while they are held (late replies still arrive).
                found = await session.scalar(
                    select(func.count()).where(
                        or_(Identity.address == wanted, Identity.tracking_address == wanted), receives(utcnow())
                    )
                )
        if found:
            if len(self._known) >= MAX_KNOWN:
                self._known.clear()
            self._known[wanted] = now + KNOWN_SECONDS
        return bool(found)

    async def accept(self, *, peer: str, mail_from: str, rcpt_tos: list[str], raw: bytes) -> tuple[int, bool]:
        """Commit the message; (row id, True) if new, (existing id, False) for a duplicate.

        Group commit: messages arriving while a transaction is being written wait and go into the next one, so
        concurrent deliveries share a commit (and its fsync) instead of queueing for the write lock one by one.
        The write runs in its own task: a client hanging up mid-commit changes nothing, and on_stored is scheduled
        after the commit whoever is still waiting."""
        message_id = message_id_of(raw)
        values = {
            "received_at": utcnow(),
            "peer": _text(peer, 64),
            "mail_from": "" if mail_from == "<>" else _text(mail_from, 320),
            "rcpt_tos": [_text(r, 320) for r in rcpt_tos],
            "raw": raw,
            "size": len(raw),
            "message_id": message_id,
            "dedup_key": dedup_key(message_id, raw),
        }
        stored: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((values, stored))
        if self._writer is None:
            self._writer = self._track(asyncio.ensure_future(self._write_batches()))
        return await stored

    async def drain(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Let stores and processing in flight finish (briefly), then cancel what is left."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _track(self, task: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _write_batches(self) -> None:
        batch: list[Waiting] = []
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
            # Cancelled by drain(): nobody may wait forever (their sessions are closed; senders will retry).
            for _, stored in batch + self._waiting:
                if not stored.done():
                    stored.cancel()
            self._waiting = []
            self._writer = None

    def _settle(self, batch: list[Waiting], outcome: list[tuple[int, bool]] | BaseException) -> None:
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
        insert = dialect_insert(self.db)(table).values(rows).on_conflict_do_nothing(index_elements=["dedup_key"])
        async with self.db.engine.begin() as connection:
            # One statement for the batch; duplicates (of stored messages, or within the batch) insert nothing.
            result = await connection.execute(insert.returning(table.c.id, table.c.dedup_key))
            inserted = {str(key): int(row_id) for row_id, key in result.all()}
            missing = {v["dedup_key"] for v in rows} - inserted.keys()
            existing: dict[str, int] = {}
            if missing:
                found = await connection.execute(
                    select(table.c.dedup_key, table.c.id).where(table.c.dedup_key.in_(sorted(missing)))
                )
                existing = {str(key): int(row_id) for key, row_id in found.all()}
        results: list[tuple[int, bool]] = []
        announced: set[str] = set()
        for values in rows:
            key = values["dedup_key"]
            if key in inserted:
                results.append((inserted[key], key not in announced))
                announced.add(key)
            elif key in existing:
                results.append((existing[key], False))
            else:  # the conflicting row vanished meanwhile: let the sender retry
                raise RuntimeError("duplicate inbound message disappeared")
        return results

    def _schedule(self, message_id: int) -> None:
        if self.on_stored is None:
            return
        self._track(asyncio.ensure_future(self._run_on_stored(message_id)))

    async def _run_on_stored(self, message_id: int) -> None:
        try:
            await self.on_stored(message_id)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the row stays stored; the drain processes it
            log.error(
                "inbound: processing message %s failed; it stays pending",
                message_id,
                exc_info=without_sql_parameters(exc),
            )
