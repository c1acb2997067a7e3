"""The messages the platform itself writes. Built with EmailMessage and headerregistry.Address, which refuse
CR/LF in names and addresses (email.utils.formataddr would not)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

# Tokens we put in the header and the body of verification mails, so a forwarded copy still matches.
TOKEN_HEADER = "X-Identity-Bot-Token"
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TOKEN_PATTERN = re.compile(r"IDBOT-[A-Z2-7]{26}")
# Marks every lead we forward, so a copy that comes back to us is recognised and never forwarded again.
FORWARDED_HEADER = "X-Identity-Bot-Forwarded"


def new_token() -> str:
    """IDBOT- followed by 26 base32 characters (130 bits): unguessable, survives any mail client."""
    return "IDBOT-" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(26))


def address(display_name: str | None, addr: str) -> Address:
    local, _, domain = addr.rpartition("@")
    return Address(display_name=display_name or "", username=local, domain=domain)


def _base(sender: Address, to: Address, subject: str, *, domain: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=domain)
    return msg


def setup_test_message(display_name: str, identity_address: str, to: str) -> EmailMessage:
    """Sent by "Test email setup": proves the server accepts a real message from this identity."""
    domain = identity_address.rpartition("@")[2]
    msg = _base(address(display_name, identity_address), address(None, to), "Email setup test", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("This is an automatic test of the email setup of this identity. No action is needed.\n")
    return msg


def sending_test_message(display_name: str, identity_address: str, to: str, token: str) -> EmailMessage:
    """The Sending step's test email, sent as the identity."""
    domain = identity_address.rpartition("@")[2]
    msg = _base(address(display_name, identity_address), address(None, to), "Sending verification", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"
    msg[TOKEN_HEADER] = token
    msg.set_content(
        f"This test email verifies that {identity_address} can send email.\n\nVerification token: {token}\n"
    )
    return msg


def otp_message(platform_sender: str, to: str, identity_address: str, code: str, minutes: int) -> EmailMessage:
    """The Receiving step: a one-time password to the response-forwarding address."""
    domain = platform_sender.rpartition("@")[2]
    msg = _base(
        address("Identity Bot", platform_sender), address(None, to), f"Your verification code: {code}", domain=domain
    )
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        f"Your one-time password for the email identity {identity_address} is:\n\n    {code}\n\n"
        f"Enter it in Slack (Receiving → Enter OTP). It is valid for {minutes} minutes and can be used once.\n"
        "If you did not ask for it, you can ignore this email.\n"
    )
    return msg


def response_message(platform_sender: str, identity_name: str, identity_address: str, token: str) -> EmailMessage:
    """The Tracking step: a reply-like email to the identity; its mailbox forwards a copy to the tracking address."""
    domain = platform_sender.rpartition("@")[2]
    msg = _base(
        address("Identity Bot", platform_sender),
        address(identity_name, identity_address),
        f"Re: Tracking verification {token}",
        domain=domain,
    )
    msg[TOKEN_HEADER] = token
    msg.set_content(
        "This response email verifies CC tracking for this identity: your mailbox should forward a copy of it to "
        f"the CC tracking address.\n\nTracking token: {token}\n"
    )
    return msg


def tracking_probe_message(platform_sender: str, identity_name: str, identity_address: str, token: str) -> EmailMessage:
    """The health re-check's tracking probe: like the Tracking step's response email, its copy must reach the CC
    tracking address. It is platform mail, not gateway mail: no sending limit counts it."""
    domain = platform_sender.rpartition("@")[2]
    msg = _base(
        address("Identity Bot", platform_sender),
        address(identity_name, identity_address),
        f"Re: Tracking check {token}",
        domain=domain,
    )
    msg[TOKEN_HEADER] = token
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        "This is Identity Bot's regular check that CC tracking still works for this identity: your mailbox should "
        f"forward a copy of it to the CC tracking address. No action is needed.\n\nTracking token: {token}\n"
    )
    return msg
