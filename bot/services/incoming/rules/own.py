"""Mail that is ours: a verification mail carrying our token (or a forwarded copy of one), and a lead we forwarded
coming back to us."""

from __future__ import annotations

from bot.mail.messages import FORWARDED_HEADER, TOKEN_HEADER, TOKEN_PATTERN
from bot.mail.mime import Mail, header_text
from bot.services.incoming.rules.base import Classification, unique
from models import MessageKind


class OwnToken:
    """One of our verification mails (or a forwarded / attached copy of one): its token is in our header or in
    the text of any part."""

    name = "own-token"

    def check(self, mail: Mail) -> Classification | None:
        found: list[str] = []
        for part in mail.parts:
            found += TOKEN_PATTERN.findall(header_text(part, TOKEN_HEADER))
            if part.get_content_maintype() == "text":
                found += TOKEN_PATTERN.findall(mail.text_of(part))
        tokens = unique(found)
        return Classification(MessageKind.VERIFICATION, self.name, tokens=tokens) if tokens else None


class OwnForward:
    """A lead we forwarded, coming back to us (e.g. the forwarding address forwards to a tracking address).
    Checked on attached copies too, for forward-as-attachment rules."""

    name = "own-forward"

    def check(self, mail: Mail) -> Classification | None:
        if any(part.get(FORWARDED_HEADER) is not None for part in mail.parts):
            return Classification(MessageKind.LOOP, self.name)
        return None
