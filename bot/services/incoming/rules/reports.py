"""Reports about mail we sent: ARF complaints, RFC 3464 delivery status notifications and the non-standard bounces
many servers still send. They come first in the chain: they carry a copy of the message that failed, and that copy
may be one of our verification mails, whose bounce proves the opposite of delivery."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import policy
from email.message import Message
from email.parser import BytesParser

from bot.mail.mime import Mail, first_address, header_text, part_text
from bot.services.incoming.rules.base import Classification, unique
from models import MessageKind

# An address inside free text (bounce bodies); deliberately conservative.
_ADDRESS_IN_TEXT = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)
_DAEMON_LOCAL_PARTS = {"mailer-daemon", "mailer_daemon", "mail-daemon", "maildaemon", "postmaster", "mail.daemon"}


def _report_fields(part: Message) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status or message/feedback-report part, lower-cased names."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append({k.lower(): " ".join(str(v).split()) for k, v in block.raw_items()})
        return blocks
    text = payload if isinstance(payload, str) else ""
    if part.get("Content-Transfer-Encoding", "").lower() in ("base64", "quoted-printable"):
        text = part_text(part)
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                last = key.strip().lower()
                fields[last] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _typed_address(value: str) -> str:
    """'rfc822; <User@Example.org>' -> 'user@example.org'."""
    _, _, addr = value.rpartition(";")
    addr = addr.strip().strip("<>").strip().lower()
    return addr if "@" in addr else ""


class ArfComplaint:
    """An ARF feedback report (RFC 5965): a recipient pressed "report spam". The complainer is the original
    recipient (Original-Rcpt-To, else the To of the returned message or headers)."""

    name = "arf-report"

    def check(self, mail: Mail) -> Classification | None:
        reports = [p for p in mail.parts if p.get_content_type() == "message/feedback-report"]
        if not reports and not (mail.content_type == "multipart/report" and mail.report_type == "feedback-report"):
            return None
        addresses = [
            _typed_address(block.get("original-rcpt-to", "")) for report in reports for block in _report_fields(report)
        ]
        if not any(addresses):
            addresses = [first_address(header_text(headers, "To")) for headers in _returned_headers(mail)]
        return Classification(MessageKind.COMPLAINT, self.name, addresses=unique(addresses))


def _returned_headers(mail: Mail) -> Iterator[Message]:
    """The headers of the message a report returns (message/rfc822 or text/rfc822-headers parts)."""
    for part in mail.parts:
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                yield payload[0]
        elif part.get_content_type() == "text/rfc822-headers":
            yield BytesParser(policy=policy.default).parsebytes(part_text(part).encode(), headersonly=True)


class DeliveryStatusReport:
    """An RFC 3464 delivery status notification. Only `Action: failed` with a 5.x.x status (or no status) is a
    permanent failure worth suppressing; delayed / 4.x.x reports are bounces with no addresses."""

    name = "dsn-report"
    _STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")

    def check(self, mail: Mail) -> Classification | None:
        reports = [p for p in mail.parts if p.get_content_type() in self._STATUS_PARTS]
        if not reports and not (mail.content_type == "multipart/report" and mail.report_type == "delivery-status"):
            return None
        failed: list[str] = []
        for report in reports:
            for block in _report_fields(report):
                action = block.get("action", "").split(" ")[0].lower()
                status = block.get("status", "").split(" ")[0]
                if action == "failed" and (status.startswith("5") or not status):
                    recipient = block.get("final-recipient") or block.get("original-recipient") or ""
                    failed.append(_typed_address(recipient))
        return Classification(MessageKind.BOUNCE, self.name, addresses=unique(failed))


class MailerDaemonBounce:
    """Non-standard bounces: plain-text reports from MAILER-DAEMON / postmaster, or with a typical bounce subject.
    Failed addresses are extracted best-effort from the text above the returned copy, unless it reads transient."""

    name = "mailer-daemon-bounce"
    _SUBJECT = re.compile(
        r"^\s*(?:undelivered mail returned to sender|undeliverable\b|undelivered\b|delivery status notification"
        r"|mail delivery failed|delivery failure|failure notice|returned mail\b|mail delivery (?:failure|system)"
        r"|message not delivered|nondeliverable|non-delivery|unzustellbar|non remis|no se puede entregar"
        r"|non recapitabile|onbestelbaar|delayed mail|warning: could not send message|delivery delayed)",
        re.IGNORECASE,
    )
    _TRANSIENT = re.compile(
        r"\bdelay(?:ed)?\b|\bwill (?:be )?retr(?:y|ied)\b|still being retried|\bwarning\b|temporar(?:y|ily)"
        r"|\(delay\)|has not yet been delivered",
        re.IGNORECASE,
    )
    _PERMANENT_STATUS = re.compile(r"\b5\.\d{1,3}\.\d{1,3}\b|\b55\d\b")
    _TRANSIENT_STATUS = re.compile(r"\b4\.\d{1,3}\.\d{1,3}\b|\b4[25]\d\b")
    _ORIGINAL_MARKER = re.compile(
        r"^.*(?:original message|returned message|copy of the message|message headers follow|original text"
        r"|below this line|undelivered message|message follows).*$",
        re.IGNORECASE | re.MULTILINE,
    )

    def check(self, mail: Mail) -> Classification | None:
        local = mail.from_address.partition("@")[0]
        from_daemon = local in _DAEMON_LOCAL_PARTS or "mailer-daemon" in mail.header("From").lower()
        bounce_subject = bool(self._SUBJECT.match(mail.subject))
        if not (bounce_subject or (from_daemon and local != "postmaster")):
            return None
        text = mail.body_text
        marker = self._ORIGINAL_MARKER.search(text)
        report = text[: marker.start()] if marker else text
        transient = bool(self._TRANSIENT.search(mail.subject)) or (
            bool(self._TRANSIENT_STATUS.search(report) or self._TRANSIENT.search(report))
            and not self._PERMANENT_STATUS.search(report)
        )
        if transient:
            return Classification(MessageKind.BOUNCE, self.name)
        ours = {mail.from_address}
        addresses = [
            a.lower()
            for a in _ADDRESS_IN_TEXT.findall(report)
            if a.lower() not in ours and a.partition("@")[0].lower() not in _DAEMON_LOCAL_PARTS
        ]
        return Classification(MessageKind.BOUNCE, self.name, addresses=unique(addresses))
