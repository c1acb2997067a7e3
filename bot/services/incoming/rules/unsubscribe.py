"""Unsubscribe requests written by a person: a bare keyword ("STOP", "unsubscribe") as the subject or the whole new
text, or an opt-out sentence in the new text or the subject, in several languages.

Only the sender's own words count: the new text without the quoted history (mail-parser-reply, then our own pass)
and without mailing-list footers ("To unsubscribe from this list: send..."). A sentence that negates the request
("please don't remove me from your list") is not one."""

from __future__ import annotations

import re

from bot.mail.mime import Mail
from bot.services.incoming.rules.base import Classification
from models import MessageKind

# The whole subject or the whole first line of the new text being one of these is a request.
_BARE = re.compile(
    r"^\W*(?:stop|stop all|stopall|unsubscribe|unsub|remove|remove me|opt[- ]?out|baja|darme de baja"
    r"|dar de baja|abmelden|abbestellen|austragen|désinscription|desinscription|désabonner|désabonnement"
    r"|se désabonner|afmelden|uitschrijven|cancella|cancellami|disiscrivimi|descadastrar|descadastre"
    r"|cancelar|avregistrera|wypisz|odhlásit)\W*$",
    re.IGNORECASE,
)
# Opt-out sentences. Each alternative is a request unless a negation stands right before it.
_PHRASES = re.compile(
    r"\bunsubscribe\b|\bremove me\b|\bremove (?:my|our|this|the) (?:e-?mail|address|name|contact)"
    r"|\bremove (?:us|him|her) from\b|\btake (?:me|us) off (?:of )?(?:your|the|this|ur|all)? ?(?:mailing |e-?mail "
    r"|distribution |contact |marketing |sales )?(?:list|lists|database|mailings?|e-?mails?)\b"
    r"|\bstop (?:e-?mailing|mailing|emails|sending|contacting|writing to)\b|\bopt(?:-| )?(?:me |us )?out\b"
    r"|\bnot interested\b[^\n]{0,40}\bremove\b|\b(?:do not|don'?t|never) (?:e-?mail|contact|write to|message) "
    r"(?:me|us)\b|\bno more e-?mails\b|\bdelete (?:me|my (?:e-?mail|address|data))\b"
    r"|\babmelden\b|\babbestellen\b|\baustragen\b|\bkeine (?:weiteren )?(?:e-?mails|nachrichten|mails)\b"
    r"|\baus (?:ihrem|dem|ihrer|der|eurem|eurer) (?:verteiler|liste|e-?mail-?liste|newsletter)\b"
    r"|\bmelden sie mich\b[^.\n]{0,30}\bab\b|\bentfernen sie mich\b|\blöschen sie (?:mich|meine)\b"
    r"|\bdésabonne|\bdesabonne|\bdésinscri|\bdesinscri|\bretirez[- ]moi\b|\bsupprimez[- ]moi\b|\bne plus recevoir\b"
    r"|\bde baja\b|\bno me (?:envíe|envie|envíen|envien|escriba|escriban|contacte|contacten)\b"
    r"|\belim[ií]n(?:a|e|en)me\b|\beliminarme\b|\bquit(?:a|e|en)me\b|\bquitarme\b|\bsac(?:a|e|en)me\b"
    r"|\bsacarme\b|\bborr(?:a|e|en)me\b|\bborrarme\b|\bno (?:quiero|deseo) recibir\b"
    r"|\bcancellarmi\b|\bcancellatemi\b|\bdisiscriv|\brimuover(?:mi|e il mio)\b|\brimuovetemi\b"
    r"|\bnon (?:mi )?(?:scrivete|contattate)\b|\bnon voglio (?:più )?ricevere\b"
    r"|\bafmelden\b|\buitschrijven\b|\bverwijder (?:mij|me|mijn)\b|\bgeen (?:e-?mails?|berichten) meer\b"
    r"|\bdescadastr|\bcancelar (?:a )?inscrição\b|\bremover-me\b|\bremova (?:meu|o meu|me)\b|\bme (?:remova|tire)\b"
    r"|\bnão (?:quero|desejo) (?:mais )?receber\b|\bta bort mig\b|\bavregistrera\b|\bwypisz mnie\b|\busuń mnie\b",
    re.IGNORECASE,
)
# Words that, just before a phrase, turn it around: "please don't remove me", "no need to unsubscribe me".
_NEGATION = re.compile(
    r"(?:\b(?:don['’]?t|do not|never|not|no need to|no reason to|nicht|kein|ne|pas|no|non|niet|não|nie)\b"
    r"|\w+n['’]t\b)(?:[\s,'’-]+[\w'’]+){0,2}[\s,'’-]*$",
    re.IGNORECASE,
)
# Mailing-list and campaign footers that mention unsubscribing: never the sender's own words.
_FOOTER_LINE = re.compile(
    r"https?://|mailto:|@|send the line|^\W*to unsubscribe\b|listinfo|majordomo|you received this"
    r"|you are receiving|subscribed to|reply (?:with )?[\"'“]?(?:unsubscribe|stop|remove)|if you(?:'d| would) rather"
    r"|click here|manage (?:your )?(?:preferences|subscription)|to stop receiving",
    re.IGNORECASE,
)
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|vs|r|rif|antw|res|tr|fw|fwd|wg|enc|odp)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_LIST_TAG = re.compile(r"^\s*\[[^\]]{1,40}\]\s*")


def own_words(text: str) -> str:
    """The new text without the lines of list and campaign footers."""
    return "\n".join(line for line in text.splitlines() if not _FOOTER_LINE.search(line))


def asks_to_unsubscribe(text: str, *, subject: bool = False) -> bool:
    """Whether the text holds an opt-out sentence that is not negated. In a subject the bare word "unsubscribe"
    inside a longer subject ("Re: [PATCH] fix the unsubscribe link") needs a "please" or "me" to count."""
    for found in _PHRASES.finditer(text):
        before = text[max(0, found.start() - 40) : found.start()]
        if _NEGATION.search(before):
            continue
        if subject and found.group(0).lower() == "unsubscribe" and not _PLEASE.search(text):
            continue
        return True
    return False


_PLEASE = re.compile(r"please|unsubscribe (?:me|us)|bitte|por favor|s'il vous plaît", re.I)


class UnsubscribeRequest:
    """The sender asks to stop receiving mail: a bare keyword as subject or as the first line of the new text, or an
    opt-out sentence in either (quoted text, list footers and negated sentences do not count). The unsubscriber is
    the From address."""

    name = "unsubscribe-request"

    def check(self, mail: Mail) -> Classification | None:
        subject = _LIST_TAG.sub("", _REPLY_PREFIX.sub("", mail.subject))
        text = own_words(mail.new_text)
        first_line = next((line for line in text.splitlines() if line.strip()), "")
        if not (
            _BARE.match(subject)
            or _BARE.match(first_line)
            or asks_to_unsubscribe(subject, subject=True)
            or asks_to_unsubscribe(text[:20_000])
        ):
            return None
        addresses = (mail.from_address,) if mail.from_address else ()
        return Classification(MessageKind.UNSUBSCRIBE, self.name, addresses=addresses)
