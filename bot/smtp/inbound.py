"""Our inbound SMTP server (the MX): receives replies to identities and the CC-tracking copies customers' mailboxes
forward.

It is a final destination, never a relay: RCPT is refused (550 5.1.1) for every address the product does not
serve. A message is committed (by the store) before we answer 250; processing happens afterwards. Any failure on our
side answers 451 (retry later) rather than aiosmtpd's default 500, which would bounce a lead's reply permanently and
leak internals.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from models.db import without_sql_parameters

log = logging.getLogger(__name__)

# Every reply code this server chooses itself, in one place. (552 for oversize comes from aiosmtpd.)
OK_RECIPIENT = "250 2.1.5 Ok"
NO_SUCH_MAILBOX = "550 5.1.1 <{address}>: no such mailbox here"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
QUEUED = "250 2.0.0 Ok: queued as {id}"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please retry"

MAX_RECIPIENTS = 100


class Mailroom(Protocol):
    """What the server needs from the product (services.incoming.InboundStore)."""

    async def serves(self, address: str) -> bool:
        """`address` is lower-cased."""
        ...

    async def accept(self, *, peer: str, mail_from: str, rcpt_tos: list[str], raw: bytes) -> tuple[int, bool]:
        """Commit the message: (row id, created). Raises if it could not be committed."""
        ...

    async def drain(self, grace: float = ...) -> None: ...


class InboundHandler:
    """aiosmtpd handler: the SMTP decisions (which recipients, when to say 250)."""

    def __init__(self, mailroom: Mailroom) -> None:
        self.mailroom = mailroom

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
                return TOO_MANY_RECIPIENTS
            if not await self.mailroom.serves(address.lower()):
                log.info("inbound: refused recipient %s from %s", address, peer_of(session))
                return NO_SUCH_MAILBOX.format(address=address)
        except Exception:  # noqa: BLE001 - a lookup failure is our problem: ask the sender to retry
            log.exception("inbound: recipient lookup failed for %s", address)
            return TEMPORARY_FAILURE
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return OK_RECIPIENT

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            message_id, created = await self.mailroom.accept(
                peer=peer_of(session), mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos), raw=raw
            )
        except Exception as exc:  # noqa: BLE001 - nothing is queued unless committed: temporary failure
            log.error(
                "inbound: could not store a message from %s", peer_of(session), exc_info=without_sql_parameters(exc)
            )
            return TEMPORARY_FAILURE
        log.info(
            "inbound: %s message %s from %s (%d bytes, %d recipients)",
            "stored" if created else "duplicate of",
            message_id,
            peer_of(session),
            len(raw),
            len(envelope.rcpt_tos),
        )
        return QUEUED.format(id=message_id)

    async def handle_exception(self, error: Exception) -> str:
        """Anything that escapes a handler or aiosmtpd itself: log it, answer 451, never 500."""
        log.error("inbound: SMTP session error", exc_info=without_sql_parameters(error))
        return TEMPORARY_FAILURE


def peer_of(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


class InboundServer:
    """The inbound SMTP server, served in the current event loop."""

    def __init__(
        self, mailroom: Mailroom, *, max_message_size: int = 10 * 1024 * 1024, hostname: str = "identity-bot"
    ) -> None:
        self.mailroom = mailroom
        self.max_message_size = max_message_size
        self.hostname = hostname
        self.host = ""
        self.port = 0
        self._handler = InboundHandler(mailroom)
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

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
        await self.mailroom.drain()
