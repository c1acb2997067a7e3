"""Classify stored incoming mail with an ordered chain of small named rules (Mailman style).

Each rule answers one question about a message and either decides (returns a Classification) or passes. The first
rule that decides wins; its name is stored with the message, so the audit trail can say "classified as auto-reply by
rule `auto-submitted-header`". Adding a rule is adding a class to RULES.

Order matters and is deliberate:
1. Reports (ARF complaints, RFC 3464 DSNs, non-standard MAILER-DAEMON bounces) come first: they carry a copy of the
   message that failed, and that copy may be one of our verification mails. A bounce of a verification mail proves
   the opposite of delivery, so it must never count as a verification.
2. Our own token (header or body, also inside forwarded/attached copies) -> verification. Before the auto-reply rules
   because our verification mails carry `Auto-Submitted: auto-generated` and mailbox forwarders keep that header.
3. Our own forwarded leads coming back (a mailbox forwarding rule, a misconfigured forwarding address) -> loop.
4. Auto-replies and out-of-office notices.
5. Unsubscribe requests, looking only at the new text above the quoted part.
6. Everything else is a lead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from bot.mail.mime import Mail
from bot.services.incoming.rules.autoreply import (
    AutoReplyHeaders,
    AutoSubmittedHeader,
    NullReturnPath,
    OutOfOfficeSubject,
    PrecedenceHeader,
)
from bot.services.incoming.rules.base import Classification, Rule
from bot.services.incoming.rules.own import OwnForward, OwnToken
from bot.services.incoming.rules.reports import ArfComplaint, DeliveryStatusReport, MailerDaemonBounce
from bot.services.incoming.rules.unsubscribe import UnsubscribePhrase
from models import MessageKind

log = logging.getLogger(__name__)

RULES: tuple[Rule, ...] = (
    ArfComplaint(),
    DeliveryStatusReport(),
    MailerDaemonBounce(),
    OwnToken(),
    OwnForward(),
    AutoSubmittedHeader(),
    AutoReplyHeaders(),
    PrecedenceHeader(),
    NullReturnPath(),
    OutOfOfficeSubject(),
    UnsubscribePhrase(),
)
DEFAULT = Classification(MessageKind.LEAD, "default")


def run_rules(mail: Mail, rules: Iterable[Rule] = RULES) -> Iterator[tuple[Rule, Classification | None]]:
    """Each rule's verdict in order. A rule that crashes on a malformed message is logged and passes."""
    for rule in rules:
        try:
            yield rule, rule.check(mail)
        except Exception:  # noqa: BLE001 - one broken rule must not stop classification
            log.exception("classifier rule %s failed; skipping it", rule.name)
            yield rule, None


def classify(raw: bytes) -> Classification:
    """Classify a raw message. Never raises: an unparseable message is a lead, so a person gets to see it."""
    try:
        mail = Mail(raw)
    except Exception:  # noqa: BLE001
        log.exception("could not parse an incoming message (%d bytes); treating it as a lead", len(raw))
        return Classification(MessageKind.LEAD, "unparseable")
    for _rule, verdict in run_rules(mail):
        if verdict is not None:
            return verdict
    return DEFAULT


RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES) + (DEFAULT.rule, "unparseable")
