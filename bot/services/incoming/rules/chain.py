"""Classify stored incoming mail with an ordered chain of small named rules (Mailman style).

Each rule answers one question about a message and either decides (returns a Classification) or passes. The first
rule that decides wins; its name is stored with the message, so the audit trail can say "classified as auto-reply by
rule `auto-submitted-header`". Adding a rule is adding a class to RULES.

Order matters and is deliberate:
1. Complaints (ARF, complaints with the message attached, abuse desks): some come from MAILER-DAEMON.
2. Challenge-response systems, which dress their challenges as delivery reports.
3. Bounces (RFC 3464 DSNs, then non-standard reports). They carry a copy of the message that failed, and that copy
   may be one of our verification mails: a bounce of a verification mail proves the opposite of delivery.
4. List managers' notices (held for moderation, not a member, loop alerts...).
5. Our own token (header or body, also inside forwarded/attached copies) -> verification. Before the auto-reply
   rules because our verification mails carry `Auto-Submitted: auto-generated` and mailbox forwarders keep it.
6. Our own forwarded leads coming back (a mailbox forwarding rule, a misconfigured forwarding address) -> loop.
7. Auto-replies, out-of-office notices and no-reply senders.
8. Unsubscribe requests, in the sender's own words only.
9. Everything else is a lead.

A message over the parsing limits (bot.mail.mime.MimeLimits) is not classified here: see the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from bot.mail.mime import LimitExceeded, Mail, MimeLimits
from bot.services.incoming.rules.autoreply import (
    AutoReplyHeaders,
    AutoSubmittedHeader,
    ChallengeResponse,
    NoReplySender,
    NullReturnPath,
    OutOfOfficeSubject,
    PrecedenceHeader,
)
from bot.services.incoming.rules.base import Classification, Rule
from bot.services.incoming.rules.bounces import DeliveryStatusReport, NonStandardBounce
from bot.services.incoming.rules.complaints import AbuseDeskComplaint, ArfComplaint, AttachedComplaint
from bot.services.incoming.rules.lists import ListManagerNotice
from bot.services.incoming.rules.own import OwnForward, OwnToken
from bot.services.incoming.rules.unsubscribe import UnsubscribeRequest
from models import MessageKind

log = logging.getLogger(__name__)

RULES: tuple[Rule, ...] = (
    ArfComplaint(),
    AttachedComplaint(),
    AbuseDeskComplaint(),
    ChallengeResponse(),
    DeliveryStatusReport(),
    NonStandardBounce(),
    ListManagerNotice(),
    OwnToken(),
    OwnForward(),
    AutoSubmittedHeader(),
    AutoReplyHeaders(),
    PrecedenceHeader(),
    NullReturnPath(),
    NoReplySender(),
    OutOfOfficeSubject(),
    UnsubscribeRequest(),
)
DEFAULT = Classification(MessageKind.LEAD, "default")
UNPARSEABLE = "unparseable"


def run_rules(mail: Mail, rules: Iterable[Rule] = RULES) -> Iterator[tuple[Rule, Classification | None]]:
    """Each rule's verdict in order. A rule that crashes on a malformed message is logged and passes; a limit
    reached while a rule reads the message (LimitExceeded) propagates."""
    for rule in rules:
        try:
            yield rule, rule.check(mail)
        except LimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - one broken rule must not stop classification
            log.exception("classifier rule %s failed; skipping it", rule.name)
            yield rule, None


def classify(raw: bytes, *, mail_from: str | None = None, limits: MimeLimits | None = None) -> Classification:
    """Classify a raw message (`mail_from`: the envelope sender, '' for a null one, None if unknown).
    Raises LimitExceeded for a message over the limits; otherwise never raises: a message the parser cannot read
    is a lead, so a person gets to see it."""
    try:
        mail = Mail(raw, limits or MimeLimits(), mail_from=mail_from)
    except LimitExceeded:
        raise
    except Exception:  # noqa: BLE001
        log.exception("could not parse an incoming message (%d bytes); treating it as a lead", len(raw))
        return Classification(MessageKind.LEAD, UNPARSEABLE)
    for _rule, verdict in run_rules(mail):
        if verdict is not None:
            return verdict
    return DEFAULT


RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES) + (DEFAULT.rule, UNPARSEABLE)
