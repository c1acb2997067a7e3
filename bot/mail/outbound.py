"""The outbound SMTP client: "Test email setup", test emails, OTP and response emails, relay delivery.

Every session goes the same way: SSRF guard -> TCP connection to the checked address -> greeting -> EHLO -> TLS
exactly as configured (never opportunistic: a stripped STARTTLS must not make us send a password in clear) -> AUTH
-> MAIL FROM -> RCPT/DATA or RSET -> QUIT, all inside one overall deadline (aiosmtplib's own timeout bounds each
socket operation only). Failures become a `Diagnosis` a person can act on; the password never reaches a message or
a log line.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage

import aiosmtplib

from bot.mail import xoauth2
from bot.mail.copies import Copy, CopyResult, CopyStatus, send_copies
from bot.mail.diagnosis import (
    SUCCESS_PROMPT,
    Diagnosis,
    ImplicitTlsPort,
    cleartext_auth_refused,
    recipients_refused,
)
from bot.mail.netguard import MAIL_PORTS, resolve_mail_addresses
from bot.mail.sign_in_diagnosis import diagnose_sign_in
from bot.mail.smtp_errors import diagnose
from bot.mail.xoauth2 import Bearer

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "ssl", "none")
# Share of the overall deadline spent waiting for the greeting before probing whether the port speaks TLS instead.
_GREETING_SHARE = 0.6
_PROBE_SHARE = 0.3
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to submit mail. `security` is explicit; "none" is only for trusted relays and tests."""

    host: str
    port: int
    security: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # Sign-in with Microsoft/Google: log in as `username` with XOAUTH2 and the mailbox's access token instead.
    bearer: Bearer | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {', '.join(SECURITY_MODES)}")
        if self.bearer is not None and (self.security == "none" or not self.username):
            raise ValueError("an OAuth login needs TLS and the mailbox address as username")


class SmtpFailure(Exception):
    """A send failed; `.diagnosis` says what is wrong and what to do, str() is `diagnosis.text`.

    `refused_recipients` names recipients the server refused when it accepted the message for the others."""

    def __init__(self, diagnosis: Diagnosis, *, refused_recipients: tuple[str, ...] = ()) -> None:
        super().__init__(diagnosis.text)
        self.diagnosis = diagnosis
        self.refused_recipients = refused_recipients


@dataclass(frozen=True)
class SetupCheck:
    """Outcome of "Test email setup": `message` is exactly SUCCESS_PROMPT when ok, else the diagnosis text."""

    ok: bool
    message: str
    diagnosis: Diagnosis | None


class _Refused(Exception):
    """We decline to go on (e.g. a password over clear text); carries the Diagnosis."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.code)
        self.diagnosis = diagnosis


class _PartialRefusal(Exception):
    """The server took the message but refused some recipients (aiosmtplib returns these instead of raising)."""

    def __init__(self, refusals: dict[str, tuple[int, str]]) -> None:
        super().__init__(f"{len(refusals)} recipient(s) refused")
        self.diagnosis = recipients_refused(refusals, partial=True)
        self.refusals = refusals


def _secrets_of(server: SmtpServer, tokens: list[str] | None = None) -> list[str]:
    """The password (or access tokens) and the encodings in which it crosses the wire, to scrub from anything shown
    or logged."""
    if tokens:
        return [t for token in tokens for t in (token, base64.b64encode(token.encode()).decode())]
    if not server.password or len(server.password) < 4:
        return []
    raw = server.password
    found = [raw, base64.b64encode(raw.encode()).decode()]
    if server.username is not None:
        found.append(base64.b64encode(f"\0{server.username}\0{raw}".encode()).decode())
    return found


def _scrub(diagnosis: Diagnosis, secrets: list[str]) -> Diagnosis:
    """Belt and braces: a server could echo what we sent into its reply, which we quote."""
    problem, fix = diagnosis.problem, diagnosis.fix
    for secret in secrets:
        problem = problem.replace(secret, _REDACTED)
        fix = fix.replace(secret, _REDACTED)
    if (problem, fix) == (diagnosis.problem, diagnosis.fix):
        return diagnosis
    return replace(diagnosis, problem=problem, fix=fix)


def _client_tls_context() -> ssl.SSLContext:
    # Created per connection so SSL_CERT_FILE is read when the session starts (tests point it at their own CA).
    return ssl.create_default_context()


class MailSender:
    """Runs SMTP sessions against customer servers (guarded) and the platform's own relay (trusted)."""

    def __init__(
        self,
        *,
        allow_private_hosts: bool = False,
        allowed_ports: tuple[int, ...] = MAIL_PORTS,
        timeout: float = 20.0,
        local_hostname: str | None = None,
    ) -> None:
        self.allow_private_hosts = allow_private_hosts
        self.allowed_ports = allowed_ports
        self.timeout = timeout
        self.local_hostname = local_hostname

    async def check_setup(
        self, server: SmtpServer, *, sender: str, test_message: EmailMessage | None = None
    ) -> SetupCheck:
        """A real session with these settings: log in, offer MAIL FROM `sender`, and send `test_message` if given
        (else RSET). Never raises for mail or network problems: the result carries the diagnosis."""
        tokens: list[str] = []
        try:
            await self._session(server, test_message, sender=sender, recipients=None, trusted=False, tokens=tokens)
        except Exception as exc:  # noqa: BLE001 - every failure becomes advice; unknown ones are logged
            diagnosis = self._diagnose(exc, server, tokens)
            return SetupCheck(ok=False, message=diagnosis.text, diagnosis=diagnosis)
        return SetupCheck(ok=True, message=SUCCESS_PROMPT, diagnosis=None)

    async def send(
        self,
        server: SmtpServer,
        message: EmailMessage | bytes,
        *,
        sender: str | None = None,
        recipients: list[str] | None = None,
        trusted: bool = False,
    ) -> None:
        """Send one message (bytes: already on the wire, then `sender` and `recipients` are required);
        `sender`/`recipients` default to the message headers. `trusted` (the platform relay,
        loopback delivery) skips the SSRF guard and port list. Raises SmtpFailure on any failure, including a
        refusal of only some recipients (the message then went to the others)."""
        tokens: list[str] = []
        try:
            await self._session(server, message, sender=sender, recipients=recipients, trusted=trusted, tokens=tokens)
        except Exception as exc:  # noqa: BLE001 - normalised into SmtpFailure
            diagnosis = self._diagnose(exc, server, tokens)
            refused = tuple(exc.refusals) if isinstance(exc, _PartialRefusal) else ()
            raise SmtpFailure(diagnosis, refused_recipients=refused) from None

    # -----------------------------------------------------------------------------------------------------------

    def _diagnose(self, exc: Exception, server: SmtpServer, tokens: list[str]) -> Diagnosis:
        signed_in = None
        if server.bearer is not None:
            signed_in = diagnose_sign_in(
                exc, bearer=server.bearer, address=server.username or "", host=server.host, port=server.port
            )
        found = signed_in or diagnose(exc, host=server.host, port=server.port, security=server.security)
        diagnosis = _scrub(found, _secrets_of(server, tokens))
        self._log_outcome(server, diagnosis.code)
        if diagnosis.code == "unexpected":
            # Type and origin only: an exception's text could hold anything, and tracebacks don't carry locals.
            log.warning(
                "unexpected SMTP failure with %s:%d: %s at %s",
                server.host,
                server.port,
                type(exc).__qualname__,
                _origin(exc),
            )
        return diagnosis

    @staticmethod
    def _log_outcome(server: SmtpServer, code: str) -> None:
        log.info("smtp session host=%s port=%d security=%s outcome=%s", server.host, server.port, server.security, code)

    async def _session(
        self,
        server: SmtpServer,
        message: EmailMessage | bytes | None,
        *,
        sender: str | None,
        recipients: list[str] | None,
        trusted: bool,
        tokens: list[str],
    ) -> None:
        async with asyncio.timeout(self.timeout):
            client = await self._ready(server, trusted=trusted, tokens=tokens)
            try:
                await self._transact(client, message, sender=sender, recipients=recipients)
            finally:
                client.close()
        self._log_outcome(server, "ok")

    async def send_copies(
        self, server: SmtpServer, copies: Sequence[Copy], *, trusted: bool = False
    ) -> list[CopyResult]:
        """Relay one copy per recipient over one session (see bot/mail/copies.py): how each copy fared. Opening the
        session (connect, TLS, AUTH) gets the usual deadline, each copy its own. Raises SmtpFailure, having sent
        nothing, when the session can't be opened."""
        tokens: list[str] = []
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._ready(server, trusted=trusted, tokens=tokens)
        except Exception as exc:  # noqa: BLE001 - normalised into SmtpFailure
            raise SmtpFailure(self._diagnose(exc, server, tokens)) from None
        try:
            results = await send_copies(client, copies, timeout=self.timeout)
            try:
                async with asyncio.timeout(self.timeout):
                    await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass  # every copy already has its answer
        finally:
            client.close()
        accepted = sum(1 for r in results if r.status == CopyStatus.ACCEPTED)
        self._log_outcome(server, "ok" if accepted == len(results) else f"{accepted} of {len(results)} copies accepted")
        return results

    async def _ready(self, server: SmtpServer, *, trusted: bool, tokens: list[str]) -> aiosmtplib.SMTP:
        """A session ready for MAIL: the checked address connected, greeted, TLS exactly as configured, logged in
        (with the password, or with XOAUTH2 for a signed-in mailbox). `tokens` collects the access tokens used, so
        no diagnosis can quote one."""
        if server.bearer is not None:  # before connecting: a revoked grant needs no SMTP session to show
            tokens.append(await server.bearer.source.token())
        addresses = await resolve_mail_addresses(
            server.host,
            server.port,
            allow_private=trusted or self.allow_private_hosts,
            allowed_ports=self.allowed_ports,
        )
        client, address = await self._open(server, addresses)
        # A password crosses the network only encrypted, except to our own relay or a server on this machine.
        cleartext_auth_ok = trusted or ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
        try:
            await _hello(client)
            if server.security == "starttls":
                # Raises if the server does not offer STARTTLS: we never fall back to clear text.
                await client.starttls()
                await _hello(client)
            if server.bearer is not None and server.username:
                tokens.append(await xoauth2.login(client, server.username, server.bearer, tokens[-1]))
            elif server.username:
                if server.security == "none" and client.supports_extension("auth") and not cleartext_auth_ok:
                    raise _Refused(cleartext_auth_refused(server.host, server.port))
                await client.login(server.username, server.password or "")
        except BaseException:
            client.close()
            raise
        return client

    async def _open(self, server: SmtpServer, addresses: list[str]) -> tuple[aiosmtplib.SMTP, str]:
        """Connect to the checked address and read the greeting (TLS first for "ssl").

        aiosmtplib verifies the certificate against `hostname`; to reach the address we checked rather than whatever
        the name resolves to next, we hand it a socket connected by us (`sock=`) and the name as `hostname`."""
        use_tls = server.security == "ssl"
        tls_context = await asyncio.to_thread(_client_tls_context) if server.security != "none" else None
        sock, address = await self._connect_any(addresses, server.port)
        client = aiosmtplib.SMTP(
            hostname=server.host.strip().strip("[]"),
            sock=sock,
            use_tls=use_tls,
            start_tls=False,  # STARTTLS is issued explicitly in _converse, never opportunistically
            tls_context=tls_context,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
        )
        greeting_budget = self.timeout * _GREETING_SHARE
        try:
            await client.connect(timeout=greeting_budget)
        except aiosmtplib.SMTPConnectTimeoutError:
            sock.close()
            if not use_tls:
                # Silence to plain SMTP: is this an implicit-TLS port waiting for our ClientHello?
                probe_budget = self.timeout * _PROBE_SHARE
                if await _speaks_tls(address, server.host, server.port, probe_budget):
                    raise ImplicitTlsPort() from None
            raise
        except BaseException:
            sock.close()
            raise
        return client, address

    async def _connect_any(self, addresses: list[str], port: int) -> tuple[socket.socket, str]:
        """Connect to the first checked address that answers: a host with an AAAA record must still work from a
        machine without IPv6 routing. Each address but the last gets a share of the deadline."""
        for address in addresses[:-1]:
            try:
                async with asyncio.timeout(min(5.0, self.timeout / 4)):
                    return await _connect_socket(address, port), address
            except (OSError, TimeoutError):
                continue
        return await _connect_socket(addresses[-1], port), addresses[-1]

    async def _transact(
        self,
        client: aiosmtplib.SMTP,
        message: EmailMessage | bytes | None,
        *,
        sender: str | None,
        recipients: list[str] | None,
    ) -> None:
        refused: dict[str, aiosmtplib.SMTPResponse] = {}
        if message is None:
            await client.mail(sender or "")
            await client.rset()
        elif isinstance(message, bytes):
            refused, _ = await client.sendmail(sender or "", recipients or [], message)
        else:
            refused, _ = await client.send_message(message, sender=sender, recipients=recipients)
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass  # the server already accepted what mattered
        if message is not None and refused:
            raise _PartialRefusal({r: (resp.code, resp.message) for r, resp in refused.items()})


async def _hello(client: aiosmtplib.SMTP) -> None:
    """EHLO, falling back to HELO for very old servers (as aiosmtplib does internally)."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


async def _connect_socket(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _speaks_tls(address: str, host: str, port: int, budget: float) -> bool:
    """Does the port complete a TLS handshake? Sends only a ClientHello: no credentials, no mail."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no trust store needed to recognise a handshake
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we only ask "is this TLS?", nothing is sent over it
    try:
        async with asyncio.timeout(budget):
            sock = await _connect_socket(address, port)
            name = host.strip().strip("[]") or None
            _, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname=name)
            writer.transport.abort()
    except ssl.SSLError as exc:
        # An alert means a TLS peer that disliked our hello; anything else means it is not TLS.
        return "ALERT" in (exc.reason or "").upper()
    except (OSError, TimeoutError):
        return False
    return True


def _origin(exc: BaseException) -> str:
    """Where the exception was raised (file:line), for an operator, without its message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
