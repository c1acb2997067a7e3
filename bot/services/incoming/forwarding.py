"""Forwarding a lead: a new message from the identity to its response-forwarding address, the lead's reply inline
and the original attached.

Leads are forwarded as a new message with the original attached (not re-sent with Resent-* headers): re-sending keeps
`From: lead@their-domain`, which our relay or the customer's server is not authorised to send as, so DMARC would
quarantine or reject exactly the mail that matters. Reply-To points at the lead so answering is one click.

The forward's Message-ID and Date are derived from the stored message, so a forward repeated after a crash is the
same message to the receiving mailbox. The original is attached as message/rfc822 when it can be carried as it is
(lines within SMTP's 998, parsed within the limits); otherwise, untouched, as a base64 `original.eml` attachment, so
lines are wrapped only in the forward and nothing of the original is lost."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from typing import cast

from bot.mail.messages import FORWARDED_HEADER
from bot.mail.mime import Mail, first_address, header_text, parse_bounded

_MESSAGE_ID = re.compile(r"^<[^<>\s]{1,900}>$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_LONG_LINE = re.compile(rb"[^\n]{999}")
PREVIEW_CHARS = 4000


@dataclass(frozen=True)
class ForwardTarget:
    """What a forward needs to know of the identity (plain values: it is built in a worker process)."""

    display_name: str
    address: str  # the identity's address (named in the text)
    forwarding_address: str  # where the forward goes
    sender: str  # the forward's From address


@dataclass(frozen=True)
class Original:
    """The stored message a forward is built from."""

    inbound_id: int
    raw: bytes
    dedup_key: str
    received_at: datetime


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub(" ", text).strip()[:limit]


def forward_message_id(original: Original, domain: str) -> str:
    """The forward's Message-ID: the same for the same stored message, whoever builds it and however often."""
    return f"<fwd.{original.dedup_key[:40]}@{domain}>"


def build_forward(target: ForwardTarget, original: Original, *, over_limit: str | None = None) -> bytes:
    """The forward on the wire: from the identity, Reply-To the lead, the reply's new text inline, the original
    attached, and FORWARDED_HEADER so the copy is recognised (and never forwarded again) if it comes back to us.
    `over_limit`: the message is over a parsing limit (bot.mail.mime.MimeLimits), so only its headers are read and
    it is attached untouched."""
    mail = None if over_limit else Mail(original.raw)
    headers = mail.message if mail is not None else _headers_only(original.raw)
    local, _, domain = target.sender.rpartition("@")
    lead = header_text(headers, "From") or "(unknown sender)"

    fwd = EmailMessage()
    fwd["From"] = Address(display_name=target.display_name, username=local, domain=domain)
    fwd["To"] = target.forwarding_address
    reply_to = first_address(header_text(headers, "Reply-To")) or first_address(lead)
    if reply_to:
        try:
            fwd["Reply-To"] = reply_to
        except Exception:  # noqa: BLE001 - an address the header model refuses just means no Reply-To
            del fwd["Reply-To"]
    subject = _clean(" ".join(header_text(headers, "Subject").split()), 200)
    fwd["Subject"] = f"Fwd: {subject}" if subject else "Fwd: (no subject)"
    fwd["Date"] = format_datetime(original.received_at)
    fwd["Message-ID"] = forward_message_id(original, domain or "localhost")
    original_id = " ".join(header_text(headers, "Message-ID").split())
    if _MESSAGE_ID.match(original_id):
        fwd["In-Reply-To"] = original_id
        fwd["References"] = original_id
    fwd[FORWARDED_HEADER] = str(original.inbound_id)

    if mail is None:
        preview = f"(This message is too complex to show here: it is over the {over_limit} limit.)"
    else:
        preview = mail.new_text or mail.body_text
    if len(preview) > PREVIEW_CHARS:
        preview = preview[:PREVIEW_CHARS] + "\n[…]"
    fwd.set_content(
        f"{_clean(lead, 300)} replied to {target.address}:\n\n{preview}\n\n"
        "The complete message is attached. Replying to this email answers the sender directly.\n"
    )
    fwd.make_mixed()
    fwd.set_boundary(f"=_fwd_{original.dedup_key[40:72]}")  # derived too: the same forward is the same bytes
    fwd.attach(cast(EmailMessage, _original_attachment(original.raw, parsed=mail is not None)))
    return fwd.as_bytes(policy=policy.SMTP)


def _headers_only(raw: bytes) -> EmailMessage:
    """The top-level headers of a message too complex to parse whole (at most the first 64 KB)."""
    head, _, _ = raw[:65536].partition(b"\r\n\r\n")
    if len(head) == 65536:
        head, _, _ = raw[:65536].partition(b"\n\n")
    try:
        return parse_bounded(head + b"\r\n\r\n")
    except Exception:  # noqa: BLE001 - headers we cannot read: the forward still carries the original
        return EmailMessage()


def _original_attachment(raw: bytes, *, parsed: bool) -> MIMEPart:
    """message/rfc822, byte-exact, when the original is 7-bit with lines SMTP can carry; an 8-bit one attached parsed
    (the generator cannot write 8-bit text verbatim); anything else (long lines, over a limit) untouched as base64."""
    part = MIMEPart()
    if parsed and raw.isascii() and not _LONG_LINE.search(raw):
        part["Content-Type"] = "message/rfc822"
        part["Content-Disposition"] = 'attachment; filename="original.eml"'
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(raw.decode("ascii"))
        return part
    if parsed and not _LONG_LINE.search(raw):
        part["Content-Type"] = "message/rfc822"
        part["Content-Disposition"] = 'attachment; filename="original.eml"'
        part["Content-Transfer-Encoding"] = "8bit"
        part.set_payload([parse_bounded(raw)])
        return part
    part.set_content(raw, maintype="application", subtype="octet-stream", filename="original.eml")
    return part
