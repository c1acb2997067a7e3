"""Forwarding a lead: a new message from the identity to its response-forwarding address, the lead's reply inline
and the original attached.

Leads are forwarded as a new message with the original attached as message/rfc822 (not re-sent with Resent-*
headers): re-sending keeps `From: lead@their-domain`, which our relay or the customer's server is not authorised to
send as, so DMARC would quarantine or reject exactly the mail that matters. The attachment keeps the original intact;
Reply-To points at the lead so answering is one click."""

from __future__ import annotations

import re
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from typing import cast

from bot.mail.messages import FORWARDED_HEADER
from bot.mail.mime import Mail
from models import Identity
from models.base import utcnow

_MESSAGE_ID = re.compile(r"^<[^<>\s]{1,900}>$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
PREVIEW_CHARS = 4000


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub(" ", text).strip()[:limit]


def build_forward(identity: Identity, raw: bytes, inbound_id: int, *, sender: str | None = None) -> EmailMessage:
    """The message that hands a lead's reply to the identity's response-forwarding address: from the identity,
    Reply-To the lead, the reply's new text inline, the original attached as message/rfc822, and FORWARDED_HEADER
    so the copy is recognised (and never forwarded again) if it ever comes back to us. `sender` is the From address
    (default: the identity's own), shown with the identity's display name."""
    mail = Mail(raw)
    original = mail.message
    local, _, domain = (sender or identity.address).rpartition("@")
    lead = mail.header("From") or "(unknown sender)"

    fwd = EmailMessage()
    fwd["From"] = Address(display_name=identity.display_name, username=local, domain=domain)
    fwd["To"] = identity.forwarding_address
    try:
        reply_to = original.get("Reply-To") or original.get("From")
        if reply_to is not None and getattr(reply_to, "addresses", None):
            fwd["Reply-To"] = reply_to.addresses
    except Exception:  # noqa: BLE001 - an unparseable From just means no Reply-To
        pass
    subject = _clean(mail.subject, 200)
    fwd["Subject"] = f"Fwd: {subject}" if subject else "Fwd: (no subject)"
    fwd["Date"] = format_datetime(utcnow())
    fwd["Message-ID"] = make_msgid(domain=domain or None)
    original_id = " ".join(mail.header("Message-ID").split())
    if _MESSAGE_ID.match(original_id):
        fwd["In-Reply-To"] = original_id
        fwd["References"] = original_id
    fwd[FORWARDED_HEADER] = str(inbound_id)

    preview = mail.new_text or mail.body_text
    if len(preview) > PREVIEW_CHARS:
        preview = preview[:PREVIEW_CHARS] + "\n[…]"
    fwd.set_content(
        f"{_clean(lead, 300)} replied to {identity.address}:\n\n{preview}\n\n"
        "The complete message is attached. Replying to this email answers the sender directly.\n"
    )
    fwd.make_mixed()
    fwd.attach(cast(EmailMessage, _original_attachment(raw)))
    return fwd


def _original_attachment(raw: bytes) -> MIMEPart:
    """message/rfc822 with the original. Byte-exact when it is 7-bit; an 8-bit original is attached parsed (the
    generator cannot write 8-bit text verbatim), which keeps headers and body as they were unless lines are long."""
    part = MIMEPart()
    part["Content-Type"] = "message/rfc822"
    part["Content-Disposition"] = 'attachment; filename="original.eml"'
    if raw.isascii():
        part["Content-Transfer-Encoding"] = "7bit"
        part.set_payload(raw.decode("ascii"))
    else:
        part["Content-Transfer-Encoding"] = "8bit"
        part.set_payload([BytesParser(policy=policy.default).parsebytes(raw)])
    return part
