"""An SMTP submission server that accepts only AUTH XOAUTH2 with live tokens of a `FakeAuthorizationServer`, like
smtp.office365.com or smtp.gmail.com, for tests and the demo.

STARTTLS and AUTH are required and PLAIN/LOGIN are not offered (aiosmtpd offers every ``auth_<MECH>`` attribute of
the handler; `XOAuth2OnlyHandler.auth_XOAUTH2` adds XOAUTH2). AUTH lines may be as long as RFC 4954 allows: a real
Microsoft token (1.5-2.5 KB) overflows aiosmtpd's 512-byte command limit. Failures look like the providers':
Google answers ``334 <base64 JSON>`` then ``535 5.7.8``; Microsoft ``535 5.7.3``, or ``535 5.7.139`` when SMTP AUTH
is disabled (`smtp_auth_disabled`). MAIL FROM must be the signed-in mailbox (``550 5.7.60``)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import ssl
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from bot.sandbox.oauth_server import FakeAuthorizationServer, Style

SMTP_AUTH_DISABLED_REPLY = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
    "Visit https://aka.ms/smtp_auth_disabled for more information."
)
MICROSOFT_BAD_TOKEN_REPLY = "535 5.7.3 Authentication unsuccessful"
GOOGLE_BAD_TOKEN_REPLY = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials"
)


@dataclass
class ReceivedMessage:
    mailbox: str
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


class XOAuth2OnlyHandler:
    """aiosmtpd handler: AUTH XOAUTH2 against the fake server's live access tokens; sends only as that mailbox.

    ``failure_style``: "google" answers a bad token with ``334 <base64 JSON>``, waits for the client's empty line,
    then ``535 5.7.8``; "microsoft" answers ``535 5.7.3`` at once. ``smtp_auth_disabled`` answers ``535 5.7.139``.
    """

    def __init__(self, tokens: FakeAuthorizationServer, *, failure_style: Style | None = None) -> None:
        self.tokens = tokens
        self.failure_style: Style = failure_style or tokens.style
        self.smtp_auth_disabled = False
        self.messages: list[ReceivedMessage] = []
        # Not "auth_attempts": aiosmtpd offers every handler attribute named auth_* as a mechanism (AUTH ATTEMPTS).
        self.login_attempts: list[tuple[str, bool]] = []
        self._arrived = asyncio.Condition()

    async def wait_for_message(self, subject: str, *, timeout: float = 15.0) -> ReceivedMessage:
        """The first message whose Subject header is `subject`, once it has arrived (no polling)."""
        needle = f"Subject: {subject}\r\n".encode()

        def find() -> ReceivedMessage | None:
            return next((m for m in self.messages if needle in m.content), None)

        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(find)
        found = find()
        assert found is not None
        return found

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 (aiosmtpd's naming)
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:  # no initial response: empty challenge (RFC 4954), the client answers with the blob
            answer = await server.challenge_auth("")
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)  # aiosmtpd already answered 501
            blob = answer
        user, token = _parse_xoauth2(blob)
        if user is None or token is None:
            await server.push("501 5.5.2 Malformed XOAUTH2 initial response")
            return AuthResult(success=False, handled=True)
        if self.smtp_auth_disabled:
            self.login_attempts.append((user, False))
            return AuthResult(success=False, handled=False, message=SMTP_AUTH_DISABLED_REPLY)
        mailbox = self.tokens.mailbox_for_access_token(token)
        if mailbox is None or mailbox.lower() != user.lower():
            self.login_attempts.append((user, False))
            if self.failure_style == "microsoft":
                return AuthResult(success=False, handled=False, message=MICROSOFT_BAD_TOKEN_REPLY)
            status = "401" if mailbox is None else "400"
            detail = json.dumps({"status": status, "schemes": "Bearer", "scope": "https://mail.google.com/"})
            await server.challenge_auth(detail)  # 334 <base64 JSON>; the client must answer with an empty line
            return AuthResult(success=False, handled=False, message=GOOGLE_BAD_TOKEN_REPLY)
        self.login_attempts.append((user, True))
        return AuthResult(success=True, auth_data=mailbox)

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not isinstance(session.auth_data, str) or address.lower() != session.auth_data.lower():
            return "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Sender OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(session.auth_data, str) and envelope.mail_from is not None
        content = envelope.original_content or b""
        self.messages.append(ReceivedMessage(session.auth_data, envelope.mail_from, list(envelope.rcpt_tos), content))
        async with self._arrived:
            self._arrived.notify_all()
        return "250 2.0.0 OK queued"

    async def handle_exception(self, error: Exception) -> str:
        return "451 4.3.0 Temporary server error"


class XOAuth2SMTP(SMTP):
    """aiosmtpd's SMTP with room for AUTH lines up to RFC 4954's 12288 octets (default: 512, line 1001)."""

    line_length_limit = 12288 + 2  # read buffer of the StreamReader made in __init__

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.line_length_limit = SMTP.line_length_limit  # DATA lines keep the RFC 5321 limit
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit, {"AUTH": 12288})


async def start_xoauth2_server(
    handler: XOAuth2OnlyHandler, tls_context: ssl.SSLContext, *, host: str = "127.0.0.1", long_auth_lines: bool = True
) -> tuple[asyncio.Server, int]:
    """Serve on a free loopback port in the running loop. STARTTLS and AUTH required; only XOAUTH2 offered."""
    loop = asyncio.get_running_loop()
    smtp_class = XOAuth2SMTP if long_auth_lines else SMTP

    def factory() -> SMTP:
        return smtp_class(
            handler,
            hostname="smtp.fake.test",
            tls_context=tls_context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
            loop=loop,
        )

    server = await loop.create_server(factory, host, 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


def _parse_xoauth2(blob: bytes) -> tuple[str | None, str | None]:
    parts = blob.split(b"\x01")
    if len(parts) != 4 or parts[2:] != [b"", b""]:
        return None, None
    user, auth = parts[0], parts[1]
    if not user.startswith(b"user=") or not auth.startswith(b"auth=Bearer "):
        return None, None
    try:
        return user[5:].decode(), auth[12:].decode()
    except UnicodeDecodeError:
        return None, None
