"""Delivery status notifications (RFC 3464) the gateway writes when the receiving server refused some recipients of
a message it accepted: the standard way to report them, instead of a 4xx that would make the mailer send the whole
message again to everyone.

A report is `multipart/report; report-type=delivery-status`: a line for people, a `message/delivery-status` part
with one block per failed recipient (`Action: failed`, a `Status` and the server's `Diagnostic-Code`), and the
headers of the message it is about (`text/rfc822-headers`). It comes from MAILER-DAEMON and goes out with a null
return path (MAIL FROM:<>), so a report about it can never come back: no loops."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, make_msgid

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
_NOT_HEADER_TEXT = re.compile(r"[^\x09\x0a\x0d\x20-\x7e]")
MAX_RETURNED_HEADERS = 16 * 1024


@dataclass(frozen=True)
class FailedRecipient:
    recipient: str
    code: int  # the server's reply code; 0 when the server never answered for this recipient
    reply: str  # the server's reply text (already cleaned: one printable line)

    @property
    def status(self) -> str:
        """The enhanced status code: the server's own when it gave one, else derived from its reply code."""
        found = _ENHANCED.match(self.reply)
        if found:
            return ".".join(found.groups())
        if 500 <= self.code <= 599:
            return "5.0.0"
        return "4.4.1" if self.code == 0 else "4.0.0"

    @property
    def diagnostic(self) -> str:
        if self.code == 0:
            return f"X-Gateway; {self.reply or 'no answer from the receiving server'}"
        return f"smtp; {self.code} {self.reply}".rstrip()


def delivery_report(
    *,
    reporting_host: str,
    sender: str,
    to: str,
    subject: str,
    arrival: datetime,
    failures: list[FailedRecipient],
    original_headers: bytes,
) -> EmailMessage:
    """The report to `to` (the message's return path) about the `failures` of the message whose header section
    is `original_headers`."""
    report = EmailMessage()
    report["From"] = f"Mail Delivery System <{sender}>"
    report["To"] = to
    report["Subject"] = f"Undelivered Mail Returned to Sender: {subject}"[:200]
    report["Date"] = format_datetime(arrival)
    report["Message-ID"] = make_msgid(domain=reporting_host)
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=delivery-status"

    people = EmailMessage()
    listed = "\n".join(f"  <{_line(f.recipient)}>: {f.code or ''} {_line(f.reply)}".rstrip() for f in failures)
    people.set_content(
        "The message was delivered to its other recipients, but the receiving server did not accept it for:\n\n"
        f"{listed}\n\nThese recipients were not counted against the sending limits. The message headers follow.\n"
    )
    report.attach(people)

    status = EmailMessage()
    status["Content-Type"] = "message/delivery-status"
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_host}"
    per_message["Arrival-Date"] = format_datetime(arrival)
    blocks: list[Message | str] = [per_message]
    for failure in failures:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {_line(failure.recipient)}"
        block["Action"] = "failed"
        block["Status"] = failure.status
        block["Diagnostic-Code"] = _line(failure.diagnostic)
        blocks.append(block)
    status.set_payload(blocks)
    report.attach(status)

    returned = EmailMessage()
    returned["Content-Type"] = "text/rfc822-headers"
    text = original_headers[:MAX_RETURNED_HEADERS].decode("ascii", "replace")
    returned.set_payload(_NOT_HEADER_TEXT.sub("?", text))
    report.attach(returned)
    return report


def _line(text: str) -> str:
    """One line of printable ASCII: nothing from outside can add a header or a block."""
    return re.sub(r"[^\x20-\x7e]+", " ", text).strip()[:300]
