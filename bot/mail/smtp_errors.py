"""From what an SMTP session raised (aiosmtplib, ssl, the OS) to the Diagnosis a person can act on.

Server replies are read first (they say the most), then TLS, DNS, timeouts and connection failures, looking through
aiosmtplib's wrapping at the cause. Unknown failures become "unexpected"."""

from __future__ import annotations

import socket
import ssl

import aiosmtplib

from bot.mail.diagnosis import (
    Diagnosis,
    ImplicitTlsPort,
    host_not_found,
    host_text,
    is_ip_literal,
    recipients_refused,
    reply_text,
    sanitize,
    security_label,
    unexpected,
    where,
)

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
            f"{reply_text(code, message)}.",
            "Create a 16-character app password in the account's security settings and enter it instead of the "
            "normal password.",
        )
    if code == 538 or (code == 530 and "starttls" in lowered):
        return _starttls_required(host, port, code, message)
    if 400 <= code < 500:
        return _temporary(code, message)
    return Diagnosis(
        "auth_failed",
        f"The mail server rejected the username or password{reply_text(code, message)}.",
        "Check the username (usually the full email address) and use a 16-character app password, not the normal "
        "account password.",
    )


def _starttls_required(host: str, port: int, code: int | None, message: str | None) -> Diagnosis:
    return Diagnosis(
        "starttls_required_on_port",
        f"{where(host, port)} requires an encrypted connection before login or sending{reply_text(code, message)}.",
        "Choose STARTTLS as the security setting (or SSL/TLS with port 465).",
    )


def _temporary(code: int | None, message: str | None) -> Diagnosis:
    return Diagnosis(
        "temporary",
        f"The mail server reported a temporary problem{reply_text(code, message)}.",
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
            f"The mail server requires a login before sending{reply_text(code, message)}.",
            "Enter the username (usually the full email address) and its 16-character app password.",
        )
    address = sanitize(exc.sender, 80) or "this address"
    return Diagnosis(
        "sender_refused",
        f"The mail server refused to send as {address}{reply_text(code, message)}.",
        f"This account may not send as {address}: use the mailbox's own address, or add {address} to the mailbox "
        "as an alias (send-as address).",
    )


def _certificate(err: ssl.SSLCertVerificationError, host: str) -> Diagnosis:
    verify_code = getattr(err, "verify_code", None)
    name = host_text(host)
    if verify_code in _X509_NAME_MISMATCH:
        problem = f"The mail server's TLS certificate is not valid for the name {name}."
    elif verify_code == _X509_EXPIRED:
        problem = f"The TLS certificate of {name} has expired."
    elif verify_code in _X509_UNTRUSTED:
        problem = f"The TLS certificate of {name} is self-signed or issued by an authority the bot does not trust."
    else:
        problem = f"The TLS certificate of {name} could not be verified."
    if is_ip_literal(host):
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
            f"{where(host, port)} does not start with SSL/TLS: it expects STARTTLS.",
            "Choose STARTTLS for this port (usually 587), or use port 465 with SSL/TLS.",
        )
    return Diagnosis(
        "tls_unavailable",
        f"A secure (TLS) connection to {where(host, port)} could not be established.",
        "Check the port and security setting (587 with STARTTLS, or 465 with SSL/TLS) with your email provider.",
    )


def _timeout(host: str, port: int) -> Diagnosis:
    return Diagnosis(
        "timeout",
        f"{where(host, port)} did not answer in time.",
        "Check the host and port, and that no firewall blocks the connection; then try again.",
    )


def _plain_on_ssl_port(host: str, port: int, security: str) -> Diagnosis:
    return Diagnosis(
        "plain_on_ssl_port",
        f"{where(host, port)} expects SSL/TLS from the start, but {security_label(security)} was chosen.",
        f"Choose SSL/TLS for port {port} (port 465 uses SSL/TLS), or use port 587 with STARTTLS.",
    )


def _os_error(err: OSError, host: str, port: int) -> Diagnosis | None:
    if isinstance(err, socket.gaierror):
        return host_not_found(host)
    if isinstance(err, ConnectionRefusedError):
        return Diagnosis(
            "refused",
            f"{where(host, port)} refused the connection.",
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
            f"{where(host, port)} could not be reached.",
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
    return (
        _server_reply(exc, host, port, security)
        or _missing_extension(exc, host, port, security)
        or _transport(exc, host, port, security)
        or unexpected(host, port)
    )


def _server_reply(exc: BaseException, host: str, port: int, security: str) -> Diagnosis | None:
    """The server answered with a code: what it refused, and why."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _auth_response(exc, host, port, security)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return _sender(exc, host, port)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return recipients_refused({exc.recipient: (exc.code, exc.message)}, partial=False)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refusals = {r.recipient: (r.code, r.message) for r in exc.recipients}
        return recipients_refused(refusals, partial=False)
    if not (isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 0):
        return None
    code, message = exc.code, exc.message
    if 400 <= code < 500:
        return _temporary(code, message)
    if code == 530 and "starttls" in (message or "").lower():
        return _starttls_required(host, port, code, message)
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return Diagnosis(
            "refused",
            f"{where(host, port)} refused the session{reply_text(code, message)}.",
            "Check the host and port with your email provider.",
        )
    what = "the message" if isinstance(exc, aiosmtplib.SMTPDataError) else "a command"
    return Diagnosis(
        "unexpected",
        f"The mail server refused {what}{reply_text(code, message)}.",
        "Check the settings and try again; if it keeps failing, ask your email provider what the reply means.",
    )


def _missing_extension(exc: BaseException, host: str, port: int, security: str) -> Diagnosis | None:
    """The server does not offer what we need (AUTH, STARTTLS)."""
    if not isinstance(exc, aiosmtplib.SMTPException):
        return None
    message = (exc.message or "").lower()
    # aiosmtplib says "The SMTP AUTH extension is not supported by this server" (SMTPException), not SMTPNotSupported.
    if "auth extension" in message:
        if security == "none":
            return Diagnosis(
                "auth_not_offered",
                f"{where(host, port)} does not offer login (SMTP AUTH) on an unencrypted connection.",
                "Choose STARTTLS as the security setting (or SSL/TLS with port 465).",
            )
        return Diagnosis(
            "auth_not_offered",
            f"{where(host, port)} does not offer login (SMTP AUTH) for this connection.",
            "Check that SMTP AUTH is enabled for this mailbox (Microsoft 365 turns it off by default), or ask your "
            "email provider which server and port to use.",
        )
    if type(exc) is aiosmtplib.SMTPException and "starttls" in message:
        return Diagnosis(
            "tls_unavailable",
            f"{where(host, port)} does not offer STARTTLS.",
            "Choose SSL/TLS with port 465, or check the host and port with your email provider.",
        )
    return None


def _transport(exc: BaseException, host: str, port: int, security: str) -> Diagnosis | None:
    """Transport failures: look through aiosmtplib's wrapping at the cause."""
    greeting_timeout = isinstance(exc, aiosmtplib.SMTPConnectTimeoutError) and "ready message" in (exc.message or "")
    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return _ssl_error(cause, host, port, security)
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        return host_not_found(host)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        if greeting_timeout and port == 465 and security != "ssl":
            return _plain_on_ssl_port(host, port, security)
        return _timeout(host, port)
    for cause in causes:
        if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
            return _disconnected()
        if isinstance(cause, OSError) and not isinstance(cause, aiosmtplib.SMTPException):
            found = _os_error(cause, host, port)
            if found is not None:
                return found
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return _disconnected()
    return None
