"""SMTP login with an OAuth 2.0 access token: the SASL mechanism XOAUTH2 that Microsoft 365 and Gmail use,
``AUTH XOAUTH2 base64("user=" + address + "\\x01auth=Bearer " + token + "\\x01\\x01")`` (aiosmtplib encodes it).

A token comes from a `TokenSource` the services implement (stored encrypted, refreshed once across processes);
this module only logs in with it: it checks that the server offers XOAUTH2 (a token is never sent before TLS is
up), and when the server refuses a token that looked fresh (revoked, or expired early) asks the source for a newer
one and tries once more. aiosmtplib drops Google's base64 JSON error detail (``334 <json>``): the final 535 is
what we act on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import aiosmtplib


class TokenSource(Protocol):
    async def token(self) -> str:
        """An access token that lives a few more minutes (refreshed first if needed)."""
        ...

    async def renew(self, rejected: str) -> str:
        """The server refused `rejected`: a newer token (refreshed, or the one another process just stored)."""
        ...


@dataclass(frozen=True)
class Bearer:
    """How an `SmtpServer` logs in instead of a password: the mailbox's OAuth tokens at `provider`."""

    provider: str  # "microsoft" | "google"
    label: str  # "Microsoft" | "Google"
    source: TokenSource = field(repr=False, compare=False)


class XOAuth2Error(Exception):
    """An XOAUTH2 login failed; `code`/`message` are the server's final reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}")
        self.code = code
        self.message = message


class XOAuth2NotOffered(XOAuth2Error):
    """The server did not advertise AUTH XOAUTH2 (wrong host, or TLS is not up)."""


class XOAuth2Rejected(XOAuth2Error):
    """The server refused a freshly renewed token."""


class SmtpAuthDisabled(XOAuth2Error):
    """Microsoft ``535 5.7.139``: SMTP AUTH is switched off for the mailbox or the organisation."""


async def login(client: aiosmtplib.SMTP, address: str, bearer: Bearer, token: str) -> str:
    """``AUTH XOAUTH2`` on a connected client (TLS already up). Returns the token that worked; raises XOAuth2Error
    subclasses, or what the source raises when it cannot renew (the grant was revoked: sign in again)."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in address):
        raise ValueError("the mailbox address contains spaces or control characters")
    if "xoauth2" not in client.server_auth_methods:
        raise XOAuth2NotOffered(504, "AUTH XOAUTH2 not offered")
    try:
        await client.auth_xoauth2(address, token)
        return token
    except aiosmtplib.SMTPAuthenticationError as exc:
        _raise_if_final(exc)
    token = await bearer.source.renew(token)
    try:
        await client.auth_xoauth2(address, token)
    except aiosmtplib.SMTPAuthenticationError as exc:
        _raise_if_final(exc)
        raise XOAuth2Rejected(exc.code, exc.message) from None
    return token


def _raise_if_final(exc: aiosmtplib.SMTPAuthenticationError) -> None:
    """A refusal that a newer token cannot fix is raised at once; a plain 535/534 is worth one renewal."""
    if "5.7.139" in (exc.message or ""):
        raise SmtpAuthDisabled(exc.code, exc.message) from None
    if exc.code not in (535, 534):  # 535 5.7.8 (Google), 535 5.7.3 (Microsoft), 534 5.7.14 (Google)
        raise XOAuth2Error(exc.code, exc.message) from None
