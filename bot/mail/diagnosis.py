"""Turning SMTP failures into advice a person can act on.

The people who read these messages are team leads setting up a mailbox, not mail administrators: every diagnosis
says in one sentence what is wrong and in one sentence what to do (the table in reference/smtp.md). Texts may quote
the server's reply code and a short, sanitized server message, never a traceback or a raw exception string (which
could carry anything, including credentials).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiosmtplib

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
# OpenSSL reasons meaning "what came back was not TLS at all": the other side speaks plain SMTP.
_NOT_TLS_REASONS = {
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "TLSV1_ALERT_PROTOCOL_VERSION",
}
# X509 verify codes worth a specific sentence.
_X509_EXPIRED = 10
_X509_UNTRUSTED = {18, 19, 20, 21}
_X509_NAME_MISMATCH = {62, 64}  # host name, IP address


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


def _host(host: str) -> str:
    return sanitize(host, _HOST_TEXT_LIMIT) or "the server"


def _where(host: str, port: int) -> str:
    return f"{_host(host)} port {port}"


def _security_label(security: str) -> str:
    return {"starttls": "STARTTLS", "ssl": "SSL/TLS", "none": "no encryption"}.get(security, sanitize(security, 20))


def _reply(code: int | None, message: str | None) -> str:
    """The server's reply as a short parenthesised quote, e.g. ' (server said: 535 5.7.8 Bad credentials)'."""
    quoted = sanitize(f"{code or ''} {message or ''}")
    return f" (server said: {quoted})" if quoted else ""


def _is_ip_literal(host: str) -> bool:
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
        f"The mail server name {_host(host)} could not be found.",
        "Check the SMTP host for typos; it is usually something like smtp.gmail.com or smtp.office365.com.",
    )


def invalid_host(host: str) -> Diagnosis:
    return Diagnosis(
        "host_not_found",
        f"{_host(host)!r} is not a valid mail server name.",
        "Enter only the SMTP host name, for example smtp.gmail.com, without spaces, ports or prefixes.",
    )


def private_host(host: str) -> Diagnosis:
    # The resolved address is deliberately not shown: it would tell an outsider about our internal network.
    return Diagnosis(
        "private_host",
        f"The mail server {_host(host)} points to a private or internal network address, which the bot will not "
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
        f"{_where(host, port)} would receive the password over an unencrypted connection, which the bot does not do.",
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
            f"The mail server temporarily refused the recipient {names}{_reply(code, message)}.",
            "Try again in a few minutes.",
        )
    rest = " The message was accepted for the other recipients." if partial else ""
    return Diagnosis(
        "recipient_refused",
        f"The mail server refused the recipient {names}{_reply(code, message)}.{rest}",
        "Check that the recipient address is spelled correctly and still exists.",
    )


def unexpected(host: str, port: int) -> Diagnosis:
    return Diagnosis(
        "unexpected",
        f"The session with {_where(host, port)} failed for an unexpected reason.",
        "Check the settings and try again; if it keeps failing, ask an administrator to look at the bot's logs.",
    )


# ---------------------------------------------------------------------------------------------------------------
# The mapping


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it was raised from, outermost first (aiosmtplib wraps OSErrors)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _auth_response(exc: aiosmtplib.SMTPResponseException, host: str, port: int, security: str) -> Diagnosis:
    code, message = exc.code, exc.message or ""
    lowered = message.lower()
    if code == 534 or "5.7.9" in message or "application-specific" in lowered:
        return Diagnosis(
            "app_password_required",
            "The mail server wants an app password: 2-step verification is on for this account"
            f"{_reply(code, message)}.",
            "Create a 16-character app password in the account's security settings and enter it instead of the "
            "normal password.",
        )
    if code == 538 or (code == 530 and "starttls" in lowered):
        return _starttls_required(host, port, code, message)
    if 400 <= code < 500:
        return _temporary(code, message)
    return Diagnosis(
        "auth_failed",
        f"The mail server rejected the username or password{_reply(code, message)}.",
        "Check the username (usually the full email address) and use a 16-character app password, not the normal "
        "account password.",
    )


def _starttls_required(host: str, port: int, code: int | None, message: str | None) -> Diagnosis:
    return Diagnosis(
        "starttls_required_on_port",
        f"{_where(host, port)} requires an encrypted connection before login or sending{_reply(code, message)}.",
        "Choose STARTTLS as the security setting (or SSL/TLS with port 465).",
    )


def _temporary(code: int | None, message: str | None) -> Diagnosis:
    return Diagnosis(
        "temporary",
        f"The mail server reported a temporary problem{_reply(code, message)}.",
        "Try again in a few minutes.",
    )


def _sender(exc: aiosmtplib.SMTPSenderRefused, host: str, port: int) -> Diagnosis:
    code, message = exc.code, exc.message or ""
    lowered = message.lower()
    if 400 <= code < 500:
        return _temporary(code, message)
    if code in (530, 538) and "starttls" in lowered:
        return _starttls_required(host, port, code, message)
    if code == 530:
        return Diagnosis(
            "auth_failed",
            f"The mail server requires a login before sending{_reply(code, message)}.",
            "Enter the username (usually the full email address) and its 16-character app password.",
        )
    address = sanitize(exc.sender, 80) or "this address"
    return Diagnosis(
        "sender_refused",
        f"The mail server refused to send as {address}{_reply(code, message)}.",
        f"This account may not send as {address}: use the mailbox's own address, or add {address} to the mailbox "
        "as an alias (send-as address).",
    )


def _certificate(err: ssl.SSLCertVerificationError, host: str) -> Diagnosis:
    verify_code = getattr(err, "verify_code", None)
    name = _host(host)
    if verify_code in _X509_NAME_MISMATCH:
        problem = f"The mail server's TLS certificate is not valid for the name {name}."
    elif verify_code == _X509_EXPIRED:
        problem = f"The TLS certificate of {name} has expired."
    elif verify_code in _X509_UNTRUSTED:
        problem = f"The TLS certificate of {name} is self-signed or issued by an authority the bot does not trust."
    else:
        problem = f"The TLS certificate of {name} could not be verified."
    if _is_ip_literal(host):
        fix = "Enter the provider's SMTP host name (for example smtp.gmail.com) instead of an IP address."
    else:
        fix = (
            "Use the provider's own SMTP host name (for example smtp.gmail.com), not an IP address or an alias; "
            "a self-signed certificate cannot be used."
        )
    return Diagnosis("certificate", problem, fix)


def _ssl_error(err: ssl.SSLError, host: str, port: int, security: str) -> Diagnosis:
    if isinstance(err, ssl.SSLCertVerificationError):
        return _certificate(err, host)
    reason = (getattr(err, "reason", None) or "").upper()
    if reason in _NOT_TLS_REASONS and security == "ssl":
        return Diagnosis(
            "ssl_on_starttls_port",
            f"{_where(host, port)} does not start with SSL/TLS: it expects STARTTLS.",
            "Choose STARTTLS for this port (usually 587), or use port 465 with SSL/TLS.",
        )
    return Diagnosis(
        "tls_unavailable",
        f"A secure (TLS) connection to {_where(host, port)} could not be established.",
        "Check the port and security setting (587 with STARTTLS, or 465 with SSL/TLS) with your email provider.",
    )


def _timeout(host: str, port: int) -> Diagnosis:
    return Diagnosis(
        "timeout",
        f"{_where(host, port)} did not answer in time.",
        "Check the host and port, and that no firewall blocks the connection; then try again.",
    )


def _plain_on_ssl_port(host: str, port: int, security: str) -> Diagnosis:
    return Diagnosis(
        "plain_on_ssl_port",
        f"{_where(host, port)} expects SSL/TLS from the start, but {_security_label(security)} was chosen.",
        f"Choose SSL/TLS for port {port} (port 465 uses SSL/TLS), or use port 587 with STARTTLS.",
    )


def _os_error(err: OSError, host: str, port: int) -> Diagnosis | None:
    if isinstance(err, socket.gaierror):
        return host_not_found(host)
    if isinstance(err, ConnectionRefusedError):
        return Diagnosis(
            "refused",
            f"{_where(host, port)} refused the connection.",
            "Check the host and port (587 for STARTTLS, 465 for SSL/TLS).",
        )
    if isinstance(err, TimeoutError):
        return _timeout(host, port)
    if isinstance(err, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return _disconnected()
    if isinstance(err, OSError) and err.errno is not None:
        # Network or host unreachable and the like: nothing answered at that address.
        return Diagnosis(
            "refused",
            f"{_where(host, port)} could not be reached.",
            "Check the host and port, and that the server accepts connections from the internet.",
        )
    return None


def _disconnected() -> Diagnosis:
    return Diagnosis(
        "temporary",
        "The mail server closed the connection unexpectedly.",
        "Try again in a few minutes; if it keeps happening, check the port and security setting.",
    )


def diagnose(exc: BaseException, *, host: str, port: int, security: str) -> Diagnosis:
    """Map an exception from an SMTP session to advice (reference/smtp.md); unknown failures become "unexpected"."""
    carried = getattr(exc, "diagnosis", None)
    if isinstance(carried, Diagnosis):
        return carried
    if isinstance(exc, ImplicitTlsPort):
        return _plain_on_ssl_port(host, port, security)

    # Server replies first: they say the most.
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _auth_response(exc, host, port, security)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return _sender(exc, host, port)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return recipients_refused({exc.recipient: (exc.code, exc.message)}, partial=False)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = {r.recipient: (r.code, r.message) for r in exc.recipients}
        return recipients_refused(refusals, partial=False)
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 0:
        code, message = exc.code, exc.message
        if 400 <= code < 500:
            return _temporary(code, message)
        if code == 530 and "starttls" in (message or "").lower():
            return _starttls_required(host, port, code, message)
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return Diagnosis(
                "refused",
                f"{_where(host, port)} refused the session{_reply(code, message)}.",
                "Check the host and port with your email provider.",
            )
        what = "the message" if isinstance(exc, aiosmtplib.SMTPDataError) else "a command"
        return Diagnosis(
            "unexpected",
            f"The mail server refused {what}{_reply(code, message)}.",
            "Check the settings and try again; if it keeps failing, ask your email provider what the reply means.",
        )

    # aiosmtplib says "The SMTP AUTH extension is not supported by this server" (SMTPException), not SMTPNotSupported.
    if isinstance(exc, aiosmtplib.SMTPException) and "auth extension" in (exc.message or "").lower():
        if security == "none":
            return Diagnosis(
                "auth_not_offered",
                f"{_where(host, port)} does not offer login (SMTP AUTH) on an unencrypted connection.",
                "Choose STARTTLS as the security setting (or SSL/TLS with port 465).",
            )
        return Diagnosis(
            "auth_not_offered",
            f"{_where(host, port)} does not offer login (SMTP AUTH) for this connection.",
            "Check that SMTP AUTH is enabled for this mailbox (Microsoft 365 turns it off by default), or ask your "
            "email provider which server and port to use.",
        )
    if type(exc) is aiosmtplib.SMTPException and "starttls" in (exc.message or "").lower():
        return Diagnosis(
            "tls_unavailable",
            f"{_where(host, port)} does not offer STARTTLS.",
            "Choose SSL/TLS with port 465, or check the host and port with your email provider.",
        )

    # Transport failures: look through aiosmtplib's wrapping at the cause.
    greeting_timeout = isinstance(exc, aiosmtplib.SMTPConnectTimeoutError) and "ready message" in (exc.message or "")
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError):
            return _ssl_error(cause, host, port, security)
    for cause in _causes(exc):
        if isinstance(cause, socket.gaierror):
            return host_not_found(host)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        if greeting_timeout and port == 465 and security != "ssl":
            return _plain_on_ssl_port(host, port, security)
        return _timeout(host, port)
    for cause in _causes(exc):
        if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
            return _disconnected()
        if isinstance(cause, OSError) and not isinstance(cause, aiosmtplib.SMTPException):
            found = _os_error(cause, host, port)
            if found is not None:
                return found
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return _disconnected()
    return unexpected(host, port)
