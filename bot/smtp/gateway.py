"""The submission gateway (SMTP edge): where mail sent as an identity leaves, and so where the limits are enforced.

Mailers submit over SMTP with a gateway credential (AUTH PLAIN/LOGIN, over STARTTLS unless the gateway listens on
loopback). The decisions are the services' (services.gateway.Submission); every SMTP reply the gateway chooses is
written here, in `GatewayHandler`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
import weakref
from datetime import datetime, timedelta
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bot.mail.netguard import is_loopback
from bot.services.gateway import GatewayLogin, LimitDecision, Outcome, SenderVerdict, Submission
from models import Identity

logger = logging.getLogger(__name__)

# RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients. Limits count messages, so the cap also keeps
# one message from reaching an unbounded audience.
MAX_RECIPIENTS = 100
# AUTH attempts per connection before it is closed (421): slows down password guessing.
MAX_AUTH_ATTEMPTS = 3


class GatewayHandler:
    """aiosmtpd handler: every reply code the gateway chooses is here."""

    AUTH_OK = "235 2.7.0 Authentication successful"
    AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
    MAIL_OK = "250 2.1.0 Ok"
    RCPT_OK = "250 2.1.5 Ok"
    TOO_MANY_RECIPIENTS = f"452 4.5.3 Too many recipients (at most {MAX_RECIPIENTS} per message)"
    RELAYED = "250 2.0.0 Ok: relayed"
    RELAY_FAILED = "451 4.4.1 Could not relay: try again later"
    TEMPORARY_ERROR = "451 4.3.0 Temporary server error: try again later"
    NO_FROM = "550 5.6.0 The message needs a From header naming this identity"
    # Not here because aiosmtpd answers them before any handler runs: MAIL before AUTH -> "530 5.7.0 Authentication
    # required"; AUTH without TLS off loopback -> "538 5.7.11 Encryption required"; too big -> 552.

    def __init__(self, submission: Submission) -> None:
        self.submission = submission
        # The identity each open transaction (envelope) sends as, from MAIL to DATA.
        self._senders: weakref.WeakKeyDictionary[Envelope, Identity] = weakref.WeakKeyDictionary()

    # --- replies that depend on the identity and the message ---

    @staticmethod
    def not_authorized(address: str) -> str:
        return f"553 5.7.1 Not authorized to send as {address}"

    @staticmethod
    def not_ready(address: str) -> str:
        return f"550 5.7.1 Identity {address} is not verified yet: run the three verification steps"

    @staticmethod
    def header_not_authorized(address: str) -> str:
        return f"550 5.7.1 The From/Sender header may only name this identity, not {address}"

    @staticmethod
    def suppressed(address: str) -> str:
        return f"550 5.7.1 <{address}> is on the suppression list (unsubscribed or bounced)"

    @staticmethod
    def over_limit(identity: Identity, decision: LimitDecision, now: datetime) -> str:
        name = "Hourly" if decision.limit == "hourly" else "Daily"
        when = format_retry_at(decision.retry_at, now)
        return f"451 4.7.1 {name} limit of {decision.limit_value} reached for {identity.address}; try after {when}"

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
            return AuthResult(success=False, handled=False, message=self.AUTH_INVALID)
        login = await self.submission.login(username, password)
        if login is None:
            return AuthResult(success=False, handled=False, message=self.AUTH_INVALID)
        return AuthResult(success=True, message=self.AUTH_OK, auth_data=login)

    # --- the envelope ---

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        login = session.auth_data if isinstance(session.auth_data, GatewayLogin) else None
        verdict, identity = await self.submission.sender(login, address)
        if verdict == SenderVerdict.NOT_AUTHORIZED or identity is None:
            return self.not_authorized(address)
        if verdict == SenderVerdict.NOT_READY:
            return self.not_ready(identity.address)
        self._senders[envelope] = identity  # DATA follows within moments: no need to load it again
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return self.MAIL_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return self.TOO_MANY_RECIPIENTS
        identity = self._senders.get(envelope)
        if identity is None:  # cannot happen: aiosmtpd runs RCPT only after a MAIL we accepted
            return self.not_authorized(envelope.mail_from or "")
        if await self.submission.recipient_suppressed(identity, address) is not None:
            return self.suppressed(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return self.RCPT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        identity = self._senders.pop(envelope, None)
        mail_from = envelope.mail_from or ""
        if identity is None:  # cannot happen: aiosmtpd runs DATA only after a MAIL we accepted
            return self.not_authorized(mail_from)
        result = await self.submission.submit(identity, _raw(envelope), mail_from, list(envelope.rcpt_tos))
        if result.outcome == Outcome.NO_FROM:
            return self.NO_FROM
        if result.outcome == Outcome.HEADER_NOT_AUTHORIZED:
            return self.header_not_authorized(result.author or "")
        if result.outcome == Outcome.OVER_LIMIT and result.decision is not None:
            return self.over_limit(identity, result.decision, self.submission.window.clock())
        if result.outcome == Outcome.RELAY_FAILED:
            return self.RELAY_FAILED
        return self.RELAYED

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer "500 Error: (Exception) ...": permanent, and it leaks internals.
        logger.error("gateway: error in SMTP session (%s)", type(error).__name__, exc_info=error)
        return self.TEMPORARY_ERROR


class SubmissionGateway:
    """Serves `GatewayHandler` in the current event loop."""

    def __init__(
        self,
        submission: Submission,
        *,
        tls_context: ssl.SSLContext | None = None,
        max_message_size: int = 10 * 1024 * 1024,
        hostname: str = "identity-bot-gateway",
    ) -> None:
        self.handler = GatewayHandler(submission)
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
        self._server = None

    def _new_connection(self) -> SMTP:
        with warnings.catch_warnings():
            # On loopback aiosmtpd warns on every connection that AUTH does not require TLS: that is deliberate.
            warnings.simplefilter("ignore")
            connection = SMTP(
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


def format_retry_at(retry_at: datetime | None, now: datetime) -> str:
    """'14:05 UTC' today, '2026-11-28 14:05 UTC' another day; rounded UP to the minute so a client that waits until
    then does find a free slot."""
    if retry_at is None:
        return "a while"
    rounded = retry_at.replace(second=0, microsecond=0)
    if rounded < retry_at:
        rounded += timedelta(minutes=1)
    if rounded.date() == now.date():
        return rounded.strftime("%H:%M UTC")
    return rounded.strftime("%Y-%m-%d %H:%M UTC")


def _hand_over(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    """aiosmtpd's authenticator is synchronous, but checking a password needs the database and scrypt. So this only
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
