"""Unsubscribe requests written by a person: phrases in the new text of a reply, in several languages."""

from __future__ import annotations

import re

from bot.mail.mime import Mail
from bot.services.incoming.rules.base import Classification
from models import MessageKind


class UnsubscribePhrase:
    """The sender asks to stop receiving mail: a phrase in the new text (quoted text is ignored, so a reply that
    quotes our footer's "unsubscribe" stays a lead). The unsubscriber is the From address."""

    name = "unsubscribe-phrase"
    _PHRASES = re.compile(
        r"\bunsubscribe\b|\bremove me\b|\bremove my (?:e-?mail|address)\b|\btake me off\b|\bstop (?:e-?mailing|emails"
        r"|sending|contacting)\b|\bopt(?:-| )?(?:me )?out\b|\bnot interested\b[^\n]{0,40}\bremove\b"
        r"|\b(?:do not|don'?t) (?:e-?mail|contact|write to) me\b|\bno more e-?mails\b"
        r"|\babmelden\b|\babbestellen\b|\baustragen\b|\bkeine (?:weiteren )?(?:e-?mails|nachrichten)\b"
        r"|\baus (?:ihrem|dem|ihrer|der) (?:verteiler|liste|e-?mail-?liste)\b|\bmelden sie mich\b[^.\n]{0,30}\bab\b"
        r"|\bdésabonner\b|\bdésinscri|\bdesabonner\b|\bretirez-moi\b|\bne plus recevoir\b"
        r"|\bde baja\b|\bno me (?:envíe|envie|escriba)|\beliminarme\b"
        r"|\bcancellarmi\b|\bdisiscriv|\brimuovermi\b|\bnon (?:mi )?(?:scrivete|contattate)\b"
        r"|\bafmelden\b|\buitschrijven\b|\bverwijder (?:mij|me)\b"
        r"|\bdescadastr|\bcancelar (?:a )?inscrição\b|\bremover-me\b",
        re.IGNORECASE,
    )

    def check(self, mail: Mail) -> Classification | None:
        if not self._PHRASES.search(mail.new_text):
            return None
        addresses = (mail.from_address,) if mail.from_address else ()
        return Classification(MessageKind.UNSUBSCRIBE, self.name, addresses=addresses)
