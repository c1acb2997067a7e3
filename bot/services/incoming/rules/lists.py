"""Mail from mailing-list managers (Mailman, Sympa, LISTSERV, Google Groups...): held for moderation, rejected,
confirmations, command results, loop alerts. Written by software, never a lead.

List-Id, List-Unsubscribe or Precedence: list on their own do NOT make a message a list manager's: people reply
through lists, and those headers are on most such replies."""

from __future__ import annotations

import re

from bot.mail.mime import Mail
from bot.services.incoming.rules.base import Classification
from models import MessageKind

# Addresses list managers send from: list-bounces@, list-owner@, list-request@, list-confirm+token@, owner-list@...
_MANAGER_SENDER = re.compile(
    r"^(?:[^@]+-(?:bounces|owner|request|confirm|admin|join|leave|unsubscribe)(?:\+[^@]*)?|owner-[^@]+"
    r"|mailman|listserv|sympa|majordomo|listmaster|ecartis|lyris|googlegroups-noreply|noreply-[^@]*groups)@",
    re.IGNORECASE,
)
_SUBJECT = re.compile(
    r"awaits moderator approval|request to mailing list .* rejected|^confirm [0-9a-f]{12,}|results of your email "
    r"command|last autoresponse notification|your message to .* (?:awaits|has been rejected|was rejected|is being held)"
    r"|posting to .* (?:rejected|held)|message (?:held|rejected) for moderation|moderation required"
    r"|subscription (?:request|confirmation)|welcome to the .* (?:mailing )?list|you are not a member"
    r"|not a member of|non-member submission|mail loop detected|rejected posting",
    re.IGNORECASE,
)
_BODY = re.compile(
    r"is being held until the list moderator|post by non-member to a members-only list|not from a list member"
    r"|you are not (?:a )?(?:member|subscribed)|only members (?:can|may) post|is not a member of"
    r"|your message has been rejected by the (?:list )?moderator|we have received a message from your address"
    r"|autoresponse notifications? for today|to confirm that you want to be (?:added|removed)"
    r"|the results of your email commands",
    re.IGNORECASE,
)


class ListManagerNotice:
    """A list manager's notice: its sender is a list's service address and its subject or opening text is one of
    the notices list managers send."""

    name = "list-manager"

    def check(self, mail: Mail) -> Classification | None:
        from_manager = bool(_MANAGER_SENDER.match(mail.from_address))
        subject = bool(_SUBJECT.search(mail.subject))
        if not (from_manager or subject):
            return None
        if from_manager and subject:
            return Classification(MessageKind.LIST_MANAGER, self.name)
        if _BODY.search(mail.body_text[:5000]):
            return Classification(MessageKind.LIST_MANAGER, self.name)
        return None
