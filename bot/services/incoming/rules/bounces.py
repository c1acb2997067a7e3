"""Bounces: RFC 3464 delivery status notifications and the non-standard reports many servers still send.

Which addresses failed is read from the DSN fields, and for non-standard reports by flufl.bounce (the detectors GNU
Mailman relies on) plus our own reading of the report's text. flufl.bounce's last-resort detectors find "failed"
addresses in ordinary replies (a quoted Cc line), so it is only asked once a rule has judged the message a bounce.
Whether a bounce is permanent matters: only permanent failures suppress."""

from __future__ import annotations

import logging
import re

from flufl.bounce import all_failures

from bot.mail.mime import Mail
from bot.services.incoming.rules.base import Classification, clean_address, null_reverse_path, unique
from bot.services.incoming.rules.evidence import SEARCH_CHARS, original_message_ids, report_fields
from models import MessageKind

log = logging.getLogger(__name__)

_STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")
# Senders of bounces (local parts, lower case).
DAEMON_SENDERS = {
    "mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "maildaemon", "mail.daemon", "postmaster",
    "post_master", "post-master", "mail.delivery.system", "mail-delivery-system", "mdaemon", "mailadm", "ndr",
    "imss", "bounce", "bounces", "nobody-bounce", "symantec_antivirus_for_smtp_gateways",
}  # fmt: skip
_SUBJECT = re.compile(
    r"undeliver|undelivered|not delivered|could not be delivered|couldn't be delivered|delivery (?:status )?notif"
    r"|delivery fail|delivery problem|delivery error|failed delivery|failure notice|returned mail|returned to sender"
    r"|mail delivery (?:failure|failed|system|subsystem|warning|problem|report)|delivery warning"
    r"|message not delivered|nondeliverable|non-?delivery"
    r"|delivery (?:has )?(?:been )?delayed|delayed mail|warning: could not send|mail could not|message could not"
    r"|rejected:|unzustellbar|nicht zugestellt|konnte nicht zugestellt|non remis|non distribuable|non délivré"
    r"|no se puede entregar|no entregado|non recapitabile|mancata consegna|onbestelbaar|niet afgeleverd"
    r"|olevererbart|kunde inte levereras|nie dostarczon|nedoručitelné|não entregue|não foi possível entregar"
    r"|не доставлено|недоставлен|未能送达|退信|配信不能|utilisateur non recensé",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"\bdelay(?:ed)?\b|\bwill (?:continue|keep|be)? ?(?:to )?retr(?:y|ying|ied)\b|still being retried"
    r"|\bwarning only\b|this is a warning|temporar(?:y|ily)|\(delay\)|has not yet been delivered"
    r"|will try again|trying again|not yet been delivered",
    re.IGNORECASE,
)
_PERMANENT_STATUS = re.compile(r"\b5\.\d{1,3}\.\d{1,3}\b|\b5[45]\d\b")
_TRANSIENT_STATUS = re.compile(r"\b4\.\d{1,3}\.\d{1,3}\b|\b4[25]\d\b")
_ORIGINAL_MARKER = re.compile(
    r"^.*(?:original message|returned message|copy of the message|message headers follow|original text"
    r"|below this line|undelivered message|message follows|headers of the original).*$",
    re.IGNORECASE | re.MULTILINE,
)
_ADDRESS_IN_TEXT = re.compile(
    r"(?<![\w.+=-])[A-Za-z0-9][A-Za-z0-9.!#$%&'*+=?^_`{}~-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)


def flufl_failures(mail: Mail) -> tuple[set[str], set[str]]:
    """(temporary, permanent) failed addresses by flufl.bounce; empty sets if a detector breaks (it re-raises)."""
    try:
        temporary, permanent = all_failures(mail.message)
    except Exception:  # noqa: BLE001 - a detector failing on odd input only means it found nothing
        log.debug("flufl.bounce failed on a message", exc_info=True)
        return set(), set()

    def decoded(values: frozenset[bytes]) -> set[str]:
        return {a for a in (clean_address(v.decode("utf-8", "replace")) for v in values) if a}

    return decoded(temporary), decoded(permanent)


class DeliveryStatusReport:
    """An RFC 3464 delivery status notification. Only `Action: failed` with a 5.x.x status (or no status) is a
    permanent failure; delayed / 4.x.x reports are bounces that suppress nothing."""

    name = "dsn-report"

    def check(self, mail: Mail) -> Classification | None:
        reports = [p for p in mail.parts if p.get_content_type() in _STATUS_PARTS]
        if not reports and not (mail.content_type == "multipart/report" and mail.report_type == "delivery-status"):
            return None
        failed: list[str] = []
        for report in reports:
            for block in report_fields(mail, report):
                action = block.get("action", "").split(" ")[0].lower()
                status = block.get("status", "").split(" ")[0]
                if action == "failed" and (status.startswith("5") or not status):
                    failed.append(clean_address(block.get("final-recipient") or block.get("original-recipient", "")))
        if not reports:  # a report without its machine-readable part: read it like a non-standard bounce
            _temporary, permanent = flufl_failures(mail)
            failed = sorted(permanent)
        addresses = unique(failed)
        return Classification(
            MessageKind.BOUNCE,
            self.name,
            addresses=addresses,
            permanent=bool(addresses),
            original_ids=original_message_ids(mail),
        )


class NonStandardBounce:
    """Plain-text reports: from a mailer daemon / postmaster, with a bounce subject (many languages), or with
    X-Failed-Recipients. The failed addresses come from X-Failed-Recipients, flufl.bounce, and the report's text
    above the returned copy; a report that reads transient suppresses nothing."""

    name = "non-standard-bounce"

    def check(self, mail: Mail) -> Classification | None:
        sender = mail.from_address.partition("@")[0]
        from_daemon = sender in DAEMON_SENDERS or "mailer-daemon" in mail.header("From").lower()
        failed_header = mail.header("X-Failed-Recipients")
        if not (from_daemon or failed_header or _SUBJECT.search(mail.subject)):
            return None
        if not from_daemon and not failed_header and not self._machine_sent(mail):
            return None  # a person writing "message could not be delivered?" in a subject is a lead
        text = mail.body_text[:SEARCH_CHARS]
        marker = _ORIGINAL_MARKER.search(text)
        report = text[: marker.start()] if marker else text
        temporary, permanent = flufl_failures(mail)
        transient = bool(_TRANSIENT.search(mail.subject)) or (
            bool(_TRANSIENT_STATUS.search(report) or _TRANSIENT.search(report)) and not _PERMANENT_STATUS.search(report)
        )
        if transient or (temporary and not permanent):
            return Classification(MessageKind.BOUNCE, self.name, original_ids=original_message_ids(mail))
        listed = [clean_address(a) for a in failed_header.replace(";", ",").split(",")]
        in_text = [clean_address(a) for a in _ADDRESS_IN_TEXT.findall(report)]
        candidates = [*listed, *sorted(permanent), *in_text]
        ours = {mail.from_address}
        addresses = unique(a for a in candidates if a and a not in ours and a.partition("@")[0] not in DAEMON_SENDERS)
        return Classification(
            MessageKind.BOUNCE,
            self.name,
            addresses=addresses,
            permanent=True,
            original_ids=original_message_ids(mail),
        )

    @staticmethod
    def _machine_sent(mail: Mail) -> bool:
        """A bounce subject from an ordinary-looking sender counts only with a mark of machine mail: a null
        reverse path, Auto-Submitted, or a report flufl.bounce can read."""
        if null_reverse_path(mail):
            return True
        if any(p.get_content_type() in ("message/rfc822", "text/rfc822-headers") for p in mail.parts[1:]):
            return True  # the returned copy of the message, attached
        if mail.header("Auto-Submitted").split(";")[0].strip().lower() not in ("", "no"):
            return True
        temporary, permanent = flufl_failures(mail)
        return bool(temporary or permanent)
