"""Reporting recipients the receiving server refused after the gateway accepted the message: a delivery status
notification (bot/mail/dsn.py) to the message's return path, sent the way platform mail is sent. Never to a null or
one of our own return paths, never about a report: a report can't start a loop."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from email import policy
from email.parser import BytesHeaderParser

from bot.mail.copies import CopyResult
from bot.mail.delivery import Delivery
from bot.mail.domains import PlatformDomains
from bot.mail.dsn import FailedRecipient, delivery_report
from models.base import utcnow

log = logging.getLogger(__name__)

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def header_section(raw: bytes) -> bytes:
    """The header section of a raw message (what a report returns of it)."""
    found = _HEADER_END.search(raw)
    return raw[: found.start()] if found else raw


class DeliveryReports:
    def __init__(self, delivery: Delivery, domains: PlatformDomains) -> None:
        self.delivery = delivery
        self.domains = domains

    def wanted(self, return_path: str) -> bool:
        """Whether a report may go to `return_path`: not null, not a daemon, not one of our own return paths."""
        address = return_path.strip().strip("<>").lower()
        local = address.partition("@")[0]
        if not address or "@" not in address or local in ("mailer-daemon", "postmaster"):
            return False
        return self.domains.return_path_token(address) is None and self.domains.unsubscribe_token(address) is None

    async def report(self, return_path: str, raw: bytes, refused: Sequence[CopyResult]) -> None:
        """Send the report about `refused` recipients of the message `raw` to `return_path` (when `wanted`)."""
        if not refused or not self.wanted(return_path):
            return
        headers = header_section(raw)
        subject = str(BytesHeaderParser(policy=policy.default).parsebytes(headers).get("Subject", "") or "")
        message = delivery_report(
            reporting_host=self.domains.platform,
            sender=self.domains.mailer_daemon,
            to=return_path,
            subject=" ".join(subject.split()),
            arrival=utcnow(),
            failures=[FailedRecipient(r.recipient, r.code, r.reply) for r in refused],
            original_headers=headers,
        )
        # Null return path: a report about this report can't be sent, so none can loop.
        await self.delivery.send_from_platform(message, sender="", recipients=[return_path])
        log.info("gateway: reported %d refused recipient(s) to the return path", len(refused))
