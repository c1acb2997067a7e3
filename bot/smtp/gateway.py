"""The submission gateway (SMTP edge): where mail sent as an identity leaves, and so where the limits are enforced.

Mailers submit over SMTP with a gateway credential (AUTH PLAIN/LOGIN, over STARTTLS unless the gateway listens on
loopback). The decisions are the services' (services.gateway.Submission); every SMTP reply the gateway chooses is
written here, in `GatewayHandler`, in the words of `gateway_replies.GatewayReplies`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bot.mail.netguard import is_loopback
from bot.services.gateway import GatewayLogin, LimitDecision, Outcome, SenderVerdict, Slot, Submission, Submitted
from bot.smtp.gateway_replies import MAX_RECIPIENTS, GatewayReplies
from models import Identity

T = TypeVar("T")

logger = logging.getLogger(__name__)

# AUTH attempts per connection before it is closed (421): slows down password guessing.
MAX_AUTH_ATTEMPTS = 3
# Seconds before a refused AUTH is answered (like Postfix's smtpd_error_sleep_time): a connection can try at most one
# password a second, so a flood of wrong AUTHs is spread out instead of occupying the event loop. Costs nothing while
# waiting, and nothing at all to a mailer with the right password.
AUTH_FAILURE_DELAY = 1.0


@dataclass
class _Transaction:
    """An open mail transaction: who it sends as, and the slots its accepted recipients hold until DATA."""

    identity: Identity
    slots: list[Slot] = field(default_factory=list)


class GatewayHandler(GatewayReplies):
    """aiosmtpd handler: what the gateway answers when (the words of each reply are in GatewayReplies)."""

    def __init__(self, submission: Submission, *, auth_failure_delay: float = AUTH_FAILURE_DELAY) -> None:
        self.submission = submission
        self.auth_failure_delay = auth_failure_delay
        # The open transaction of each session, from MAIL to DATA (or to RSET, a new EHLO, the end of the connection).
        self._open: weakref.WeakKeyDictionary[Session, _Transaction] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Future[Any]] = set()

    # --- AUTH: aiosmtpd parses PLAIN/LOGIN, the service checks the pair (asynchronously) ---

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._check(await SMTP.auth_PLAIN(server, server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._check(await SMTP.auth_LOGIN(server, server, args))

    async def _check(self, parsed: AuthResult) -> AuthResult:
        pair = parsed.auth_data
        if not isinstance(pair, LoginPassword):
            return parsed  # aiosmtpd already answered (bad base64, aborted with "*")
        try:
            username, password = pair.login.decode("utf-8"), pair.password.decode("utf-8")
        except UnicodeDecodeError:
            await self.refused_auth_pause()
            return AuthResult(success=False, handled=False, message=self.AUTH_INVALID)
        login = await self.submission.login(username, password)
        if login is None:
            await self.refused_auth_pause()
            return AuthResult(success=False, handled=False, message=self.AUTH_INVALID)
        return AuthResult(success=True, message=self.AUTH_OK, auth_data=login)

    async def refused_auth_pause(self) -> None:
        """Wait before answering a refused AUTH (see AUTH_FAILURE_DELAY)."""
        if self.auth_failure_delay > 0:
            await asyncio.sleep(self.auth_failure_delay)

    # --- the envelope ---

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        self.transaction_ended(session)  # nothing should be open here; if it is, its slots go back
        login = session.auth_data if isinstance(session.auth_data, GatewayLogin) else None
        verdict, identity = await self.submission.sender(login, address)
        if verdict == SenderVerdict.NOT_AUTHORIZED or identity is None:
            return self.not_authorized(address)
        if verdict == SenderVerdict.DISABLED:
            return self.disabled(identity.address)
        if verdict == SenderVerdict.NOT_READY:
            return self.not_ready(identity.address)
        if verdict == SenderVerdict.PAUSED:
            return self.paused(identity)
        self._open[session] = _Transaction(identity)  # DATA follows within moments: no need to load it again
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return self.MAIL_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        transaction = self._open.get(session)
        if transaction is None:  # cannot happen: aiosmtpd runs RCPT only after a MAIL we accepted
            return self.not_authorized(envelope.mail_from or "")
        if any(address.lower() == taken.lower() for taken in envelope.rcpt_tos):
            return self.RCPT_OK  # the same recipient twice gets one copy and takes one slot
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return self.TOO_MANY_RECIPIENTS
        identity = transaction.identity
        suppression = await self.submission.recipient_suppressed(identity, address)
        if suppression is not None:
            return self.suppressed(address, suppression)
        decision = await self._reserve(session, transaction, address)
        if not decision.allowed:
            return self.over_limit(identity, decision, self.submission.window.clock())
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return self.RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        transaction = self._open.pop(session, None)
        mail_from = envelope.mail_from or ""
        if transaction is None:  # cannot happen: aiosmtpd runs DATA only after a MAIL we accepted
            return self.not_authorized(mail_from)
        # Shielded: a client that hangs up mid-relay must not cut the relay off before its slots are settled.
        work = self._track(self.submission.submit(transaction.identity, _raw(envelope), mail_from, transaction.slots))
        result = await asyncio.shield(work)
        return self._reply(result)

    def _reply(self, result: Submitted) -> str:
        if result.outcome == Outcome.HEADER_NOT_AUTHORIZED:
            return self.header_not_authorized(result.author or "")
        if result.outcome == Outcome.PARTLY_RELAYED:
            return self.partly_relayed(result)
        if result.outcome == Outcome.REFUSED:
            return self.refused(result)
        fixed = {Outcome.RELAYED: self.RELAYED, Outcome.NO_FROM: self.NO_FROM, Outcome.UNREADABLE: self.UNREADABLE}
        return fixed.get(result.outcome, self.RELAY_FAILED)

    # --- transactions that end without DATA give their slots back ---

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.transaction_ended(session)
        return self.RSET_OK

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        self.transaction_ended(session)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.transaction_ended(session)
        session.host_name = hostname
        return responses

    def transaction_ended(self, session: Session) -> None:
        """The session's open transaction (if any) ends without DATA: its slots are given back."""
        transaction = self._open.pop(session, None)
        if transaction is not None and transaction.slots:
            self._track(self.submission.release(list(transaction.slots)))

    async def _reserve(self, session: Session, transaction: _Transaction, address: str) -> LimitDecision:
        """Reserve the recipient's slot. Shielded: if the connection drops meanwhile, the reservation still
        completes and is then given back, instead of staying counted for a day."""
        work = self._track(self.submission.reserve(transaction.identity, address))
        try:
            decision = await asyncio.shield(work)
        except asyncio.CancelledError:
            work.add_done_callback(lambda done: self._orphaned(done, address))
            raise
        if decision.reservation_id is not None:
            slot = Slot(decision.reservation_id, address)
            if self._open.get(session) is transaction:
                transaction.slots.append(slot)
            else:  # the transaction ended while the slot was being reserved
                self._track(self.submission.release([slot]))
        return decision

    def _orphaned(self, done: asyncio.Future[LimitDecision], address: str) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        decision = done.result()
        if decision.reservation_id is not None:
            self._track(self.submission.release([Slot(decision.reservation_id, address)]))

    def _track(self, work: Awaitable[T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, grace: float = 10.0) -> None:
        """Let relays, releases and reports in flight finish (briefly): at stop."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        await self.submission.drain(grace)

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer "500 Error: (Exception) ...": permanent, and it leaks internals.
        logger.error("gateway: error in SMTP session (%s)", type(error).__name__, exc_info=error)
        return self.TEMPORARY_ERROR


class _GatewaySMTP(SMTP):
    """aiosmtpd's session, telling the handler when a session ends (so an open transaction gives its slots back):
    at the end of the connection, and at STARTTLS, which starts a new session."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        before = getattr(self, "session", None)
        super().connection_made(transport)
        if before is not None and before is not self.session:
            self.event_handler.transaction_ended(before)

    def connection_lost(self, error: Exception | None) -> None:
        session = self.session
        super().connection_lost(error)
        if session is not None:
            self.event_handler.transaction_ended(session)


class SubmissionGateway:
    """Serves `GatewayHandler` in the current event loop."""

    def __init__(
        self,
        submission: Submission,
        *,
        tls_context: ssl.SSLContext | None = None,
        max_message_size: int = 10 * 1024 * 1024,
        hostname: str = "identity-bot-gateway",
        auth_failure_delay: float = AUTH_FAILURE_DELAY,
    ) -> None:
        self.handler = GatewayHandler(submission, auth_failure_delay=auth_failure_delay)
        self.tls_context = tls_context
        self.max_message_size = max_message_size
        self.hostname = hostname
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._loopback = False

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (0 = a free port; `self.port` tells which). Off loopback a TLS context is required,
        since AUTH is only offered over TLS there."""
        self._loopback = is_loopback(host)
        if not self._loopback and self.tls_context is None:
            raise ValueError(f"the gateway listens on {host}, not loopback: it needs a TLS context for AUTH")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, host=host, port=port)
        bound = self._server.sockets[0].getsockname()
        self.host, self.port = str(bound[0]), int(bound[1])
        logger.info(
            "submission gateway on %s:%s (%s)",
            self.host,
            self.port,
            "loopback: AUTH without TLS" if self._loopback else "AUTH only after STARTTLS",
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        except TimeoutError:
            logger.warning("submission gateway: connections still open at stop")
        await self.handler.drain()
        self._server = None

    def _new_connection(self) -> SMTP:
        with warnings.catch_warnings():
            # On loopback aiosmtpd warns on every connection that AUTH does not require TLS: that is deliberate.
            warnings.simplefilter("ignore")
            connection = _GatewaySMTP(
                self.handler,
                hostname=self.hostname,
                data_size_limit=self.max_message_size,
                tls_context=self.tls_context,
                require_starttls=self.tls_context is not None and not self._loopback,
                auth_required=True,
                auth_require_tls=not self._loopback,
                authenticator=_hand_over,
                command_call_limit={"AUTH": MAX_AUTH_ATTEMPTS, "*": 1_000_000},
            )
        self._connections.add(connection)
        return connection


def _hand_over(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    """aiosmtpd's authenticator is synchronous, but checking a password needs the database. So this only
    hands the parsed pair to `GatewayHandler._check` (which does the real, async check) as a FAILED result: used
    without that handler it lets nobody in."""
    return AuthResult(success=False, handled=False, auth_data=auth_data)


def _raw(envelope: Envelope) -> bytes:
    content = envelope.original_content if envelope.original_content is not None else envelope.content
    if isinstance(content, str):
        return content.encode("utf-8", "surrogateescape")
    return content or b""


class _DropLibraryNoise(logging.Filter):
    """aiosmtpd logs a deprecation warning on every successful AUTH (its own use of `Session.login_data`) and a
    warning on every loopback connection; neither is news to an operator."""

    NOISE = ("Session.login_data is deprecated", "auth_required == True but auth_require_tls == False")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(str(record.msg).startswith(noise) for noise in self.NOISE)


logging.getLogger("mail.log").addFilter(_DropLibraryNoise())
