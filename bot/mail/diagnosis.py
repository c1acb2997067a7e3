"""Turning SMTP failures into advice a person can act on.

The people who read these messages are team leads setting up a mailbox, not mail administrators: every diagnosis
says in one sentence what is wrong and in one sentence what to do (the table in reference/smtp.md). Texts may quote
the server's reply code and a short, sanitized server message, never a traceback or a raw exception string (which
could carry anything, including credentials).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

SUCCESS_PROMPT = "Email identity seems to be correctly set up"

CODES = (
    "auth_failed",
    "app_password_required",
    "auth_not_offered",
    "starttls_required_on_port",
    "ssl_on_starttls_port",
    "plain_on_ssl_port",
    "certificate",
    "host_not_found",
    "refused",
    "timeout",
    "sender_refused",
    "recipient_refused",
    "temporary",
    "tls_unavailable",
    "private_host",
    "port_not_allowed",
    "unexpected",
)

_SERVER_TEXT_LIMIT = 120
_HOST_TEXT_LIMIT = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong with a mail server session, for a person: a machine code, the problem and the fix."""

    code: str
    problem: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.problem} {self.fix}"


class ImplicitTlsPort(Exception):
    """The port answered a TLS handshake after staying silent to plain SMTP: it expects SSL/TLS from the start.

    Raised by the outbound client after it probed the port, so `diagnose` can say so instead of "timeout"."""


# ---------------------------------------------------------------------------------------------------------------
# Text helpers


def sanitize(text: object, limit: int = _SERVER_TEXT_LIMIT) -> str:
    """One line, no control characters, capped: safe to quote from a server (or a user-typed host) in a message."""
    flat = " ".join(_CONTROL.sub(" ", str(text)).split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


def host_text(host: str) -> str:
    return sanitize(host, _HOST_TEXT_LIMIT) or "the server"


def where(host: str, port: int) -> str:
    return f"{host_text(host)} port {port}"


def security_label(security: str) -> str:
    return {"starttls": "STARTTLS", "ssl": "SSL/TLS", "none": "no encryption"}.get(security, sanitize(security, 20))


def reply_text(code: int | None, message: str | None) -> str:
    """The server's reply as a short parenthesised quote, e.g. ' (server said: 535 5.7.8 Bad credentials)'."""
    quoted = sanitize(f"{code or ''} {message or ''}")
    return f" (server said: {quoted})" if quoted else ""


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# Builders for diagnoses that other modules create directly


def host_not_found(host: str) -> Diagnosis:
    return Diagnosis(
        "host_not_found",
        f"The mail server name {host_text(host)} could not be found.",
        "Check the SMTP host for typos; it is usually something like smtp.gmail.com or smtp.office365.com.",
    )


def invalid_host(host: str) -> Diagnosis:
    return Diagnosis(
        "host_not_found",
        f"{host_text(host)!r} is not a valid mail server name.",
        "Enter only the SMTP host name, for example smtp.gmail.com, without spaces, ports or prefixes.",
    )


def private_host(host: str) -> Diagnosis:
    # The resolved address is deliberately not shown: it would tell an outsider about our internal network.
    return Diagnosis(
        "private_host",
        f"The mail server {host_text(host)} points to a private or internal network address, which the bot will not "
        "connect to.",
        "Use your email provider's public SMTP host name (for example smtp.gmail.com).",
    )


def port_not_allowed(port: int, allowed_ports: tuple[int, ...]) -> Diagnosis:
    ports = ", ".join(str(p) for p in allowed_ports) or "none"
    return Diagnosis(
        "port_not_allowed",
        f"Port {port} is not a mail submission port the bot connects to (allowed: {ports}).",
        "Use port 587 with STARTTLS (or 465 with SSL/TLS), as your email provider documents.",
    )


def cleartext_auth_refused(host: str, port: int) -> Diagnosis:
    return Diagnosis(
        "starttls_required_on_port",
        f"{where(host, port)} would receive the password over an unencrypted connection, which the bot does not do.",
        "Choose STARTTLS (usually port 587) or SSL/TLS (port 465) as the security setting.",
    )


def recipients_refused(refusals: Mapping[str, tuple[int, str]], *, partial: bool) -> Diagnosis:
    """Some (partial=True) or all recipients were refused; name them and quote the first reply."""
    names = ", ".join(sanitize(r, 80) for r in list(refusals)[:5])
    if len(refusals) > 5:
        names += f" and {len(refusals) - 5} more"
    code, message = next(iter(refusals.values()), (None, None))
    if code is not None and 400 <= code < 500 and not partial:
        return Diagnosis(
            "temporary",
            f"The mail server temporarily refused the recipient {names}{reply_text(code, message)}.",
            "Try again in a few minutes.",
        )
    rest = " The message was accepted for the other recipients." if partial else ""
    return Diagnosis(
        "recipient_refused",
        f"The mail server refused the recipient {names}{reply_text(code, message)}.{rest}",
        "Check that the recipient address is spelled correctly and still exists.",
    )


def unexpected(host: str, port: int) -> Diagnosis:
    return Diagnosis(
        "unexpected",
        f"The session with {where(host, port)} failed for an unexpected reason.",
        "Check the settings and try again; if it keeps failing, ask an administrator to look at the bot's logs.",
    )


# ---------------------------------------------------------------------------------------------------------------
# The mapping
