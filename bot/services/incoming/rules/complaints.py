"""Complaints: a recipient pressed "report spam" (feedback loops) or an abuse desk wrote. They come first in the
chain: some are sent by MAILER-DAEMON and look like bounces, and all carry a copy of the message complained about."""

from __future__ import annotations

import re

from bot.mail.mime import Mail, first_address, header_text
from bot.services.incoming.rules.base import Classification, clean_address, unique
from bot.services.incoming.rules.evidence import original_message_ids, report_fields, returned_headers
from models import MessageKind

# Senders of feedback-loop reports and abuse desks (local parts).
_FBL_SENDERS = {"staff", "abuse", "fbl", "feedback", "feedbackloop", "feedback-loop", "complaints", "scomp", "arf"}
_COMPLAINT_SUBJECT = re.compile(
    r"complaint about message from|email feedback report|abuse report|spam complaint|spam report"
    r"|user complaint|feedback[- ]loop|\bfbl\b",
    re.IGNORECASE,
)
# Headers feedback loops put on the copy they return (Hotmail/Outlook.com JMRP, AOL, Yahoo).
_FBL_MARKS = ("X-HmXmrOriginalRecipient", "X-FBL")


def _complainers(mail: Mail) -> list[str]:
    """Who complained: Original-Rcpt-To / Removal-Recipient of the report, else the To of the returned copy (often
    redacted: attribution then goes by the copy's Message-ID)."""
    reports = [p for p in mail.parts if p.get_content_type() == "message/feedback-report"]
    found = [
        clean_address(block.get(field, ""))
        for report in reports
        for block in report_fields(mail, report)
        for field in ("original-rcpt-to", "removal-recipient")
    ]
    for headers in returned_headers(mail):
        found.append(clean_address(header_text(headers, "X-HmXmrOriginalRecipient")))
    if not any(found):
        found = [clean_address(first_address(header_text(h, "To"))) for h in returned_headers(mail)]
    return found


class ArfComplaint:
    """An ARF feedback report (RFC 5965): multipart/report; report-type=feedback-report, or any message with a
    message/feedback-report part."""

    name = "arf-report"

    def check(self, mail: Mail) -> Classification | None:
        has_report = any(p.get_content_type() == "message/feedback-report" for p in mail.parts)
        if not has_report and not (mail.content_type == "multipart/report" and mail.report_type == "feedback-report"):
            return None
        return Classification(
            MessageKind.COMPLAINT,
            self.name,
            addresses=unique(_complainers(mail)),
            original_ids=original_message_ids(mail),
        )


class AttachedComplaint:
    """Complaints sent as multipart/mixed with the message attached as message/rfc822 (Hotmail/Outlook.com JMRP and
    others): a feedback-loop sender or subject, or a feedback-loop mark on the attached copy."""

    name = "attached-complaint"

    def check(self, mail: Mail) -> Classification | None:
        attached = list(returned_headers(mail))
        if not attached:
            return None
        marked = any(header_text(h, mark) for h in attached for mark in _FBL_MARKS) or mail.header("X-FBL")
        sender = mail.from_address.partition("@")[0]
        if not (marked or (sender in _FBL_SENDERS and _COMPLAINT_SUBJECT.search(mail.subject))):
            return None
        return Classification(
            MessageKind.COMPLAINT,
            self.name,
            addresses=unique(_complainers(mail)),
            original_ids=original_message_ids(mail),
        )


class AbuseDeskComplaint:
    """A plain-text complaint from an abuse desk ("[Ticket#…] Spam complaint regarding <ip>"): a complaint, naming
    no recipient the team can match unless it quotes a Message-ID."""

    name = "abuse-desk-complaint"

    def check(self, mail: Mail) -> Classification | None:
        sender = mail.from_address.partition("@")[0]
        if sender not in _FBL_SENDERS or not _COMPLAINT_SUBJECT.search(mail.subject):
            return None
        return Classification(MessageKind.COMPLAINT, self.name, original_ids=original_message_ids(mail))
