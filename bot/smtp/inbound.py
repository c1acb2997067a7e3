"""Our inbound SMTP server (the MX): receives replies to identities and the CC-tracking copies customers' mailboxes
forward.

It is a final destination, never a relay: RCPT is refused (550 5.1.1) for every address the product does not
serve. A message is committed (by the store) before we answer 250; processing happens afterwards. Any failure on our
side answers 451 (retry later) rather than aiosmtpd's default 500, which would bounce a lead's reply permanently and
leak internals.

It faces the internet, so it holds the door: at most `max_sessions` sessions at once and `max_sessions_per_ip` per
client address (over it: 421 4.7.0 and the connection is closed), an idle timeout, accept errors (out of file
descriptors) logged once per burst, and lines of any length up to the size limit (RFC 5321's 998 is a limit for
senders; a lead relayed by a server that does not wrap lines must not bounce). STARTTLS when given a certificate.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import weakref
from collections import Counter
from typing import Any, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from models.db import without_sql_parameters

log = logging.getLogger(__name__)

# Every reply code this server chooses itself, in one place. (552 for oversize comes from aiosmtpd.)
OK_RECIPIENT = "250 2.1.5 Ok"
NO_SUCH_MAILBOX = "550 5.1.1 <{address}>: no such mailbox here"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
QUEUED = "250 2.0.0 Ok: queued as {id}"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please retry"
TOO_MANY_SESSIONS = b"421 4.7.0 Too many connections, try again later\r\n"

MAX_RECIPIENTS = 100
MAX_SESSIONS = 100
MAX_SESSIONS_PER_IP = 20
IDLE_TIMEOUT = 60.0  # seconds without a command (RFC 5321 §4.5.3.2 suggests minutes; we are the busy side)
ACCEPT_ERROR_QUIET_SECONDS = 60.0


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


class SessionGate:
    """Counts open sessions, overall and per client address."""

    def __init__(self, max_sessions: int, max_per_ip: int) -> None:
        self.max_sessions = max_sessions
        self.max_per_ip = max_per_ip
        self.open = 0
        self.per_ip: Counter[str] = Counter()
        self.refused = 0

    def admit(self, ip: str) -> bool:
        if self.open >= self.max_sessions or self.per_ip[ip] >= self.max_per_ip:
            self.refused += 1
            return False
        self.open += 1
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.open -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class GatedSMTP(SMTP):
    """aiosmtpd's SMTP behind the session gate: over a cap the client gets 421 4.7.0 and the connection is closed
    before any session state is made. Lines are limited only by the message size."""

    def __init__(self, handler: Any, *, gate: SessionGate, **kwargs: Any) -> None:
        self.gate = gate
        self._admitted_ip: str | None = None
        # aiosmtpd sizes its line reader from this class attribute when it is constructed.
        self.line_length_limit = max(kwargs.get("data_size_limit") or 0, SMTP.line_length_limit)
        super().__init__(handler, **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted_ip is None and self._original_transport is None:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
            if not self.gate.admit(ip):
                transport.write(TOO_MANY_SESSIONS)  # type: ignore[attr-defined]
                transport.close()
                return
            self._admitted_ip = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted_ip is None:
            return  # refused at the gate: nothing was set up
        ip, self._admitted_ip = self._admitted_ip, None
        self.gate.release(ip)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._admitted_ip is None:
            return False
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self._admitted_ip is not None:
            super().data_received(data)


class AcceptErrors:
    """The event loop's exception handler, with accept errors ("Too many open files") logged once per burst: the
    first one, then a count when the next burst starts. Everything else goes to the previous handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop, quiet: float = ACCEPT_ERROR_QUIET_SECONDS) -> None:
        self.loop = loop
        self.quiet = quiet
        self.previous = loop.get_exception_handler()
        self.suppressed = 0
        self.last = -float("inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" not in str(context.get("message", "")):
            self._forward(context)
            return
        now = time.monotonic()
        if now - self.last < self.quiet:
            self.suppressed += 1
        else:
            more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
            log.error("inbound: cannot accept connections: %s%s", context.get("exception"), more)
            self.suppressed = 0
        self.last = now

    def _forward(self, context: dict[str, Any]) -> None:
        if self.previous is not None:
            self.previous(self.loop, context)
        else:
            self.loop.default_exception_handler(context)

    def install(self) -> None:
        if not isinstance(self.loop.get_exception_handler(), AcceptErrors):
            self.loop.set_exception_handler(self)


class InboundServer:
    """The inbound SMTP server, served in the current event loop."""

    def __init__(
        self,
        mailroom: Mailroom,
        *,
        max_message_size: int = 10 * 1024 * 1024,
        hostname: str = "identity-bot",
        tls_context: ssl.SSLContext | None = None,
        max_sessions: int = MAX_SESSIONS,
        max_sessions_per_ip: int = MAX_SESSIONS_PER_IP,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.mailroom = mailroom
        self.max_message_size = max_message_size
        self.hostname = hostname
        self.tls_context = tls_context
        self.idle_timeout = idle_timeout
        self.gate = SessionGate(max_sessions, max_sessions_per_ip)
        self.host = ""
        self.port = 0
        self._handler = InboundHandler(mailroom)
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (port 0 picks a free port; `self.port` then says which)."""
        loop = asyncio.get_running_loop()
        AcceptErrors(loop).install()

        def new_session() -> SMTP:
            smtp = GatedSMTP(
                self._handler,
                gate=self.gate,
                data_size_limit=self.max_message_size,
                hostname=self.hostname,
                ident="ESMTP",
                enable_SMTPUTF8=True,
                tls_context=self.tls_context,
                timeout=self.idle_timeout,
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        self._server = await loop.create_server(new_session, host=host, port=port, backlog=512)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        log.info("inbound SMTP server listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, drop open sessions, and let stores in flight finish (briefly)."""
        if self._server is not None:
            self._server.close()
            for smtp in list(self._sessions):
                if smtp.transport is not None:
                    smtp.transport.close()
            await self._server.wait_closed()
            self._server = None
        await self.mailroom.drain()
