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

import html
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from functools import cached_property
from typing import Protocol

from bot.mail.messages import TOKEN_HEADER  # the header our verification mails carry (one definition)

log = logging.getLogger(__name__)

KINDS = ("verification", "bounce", "complaint", "auto_reply", "loop", "unsubscribe", "lead")
TOKEN_PATTERN = re.compile(r"IDBOT-[A-Z2-7]{26}")
FORWARDED_HEADER = "X-Identity-Bot-Forwarded"

# An address inside free text (bounce bodies); deliberately conservative.
_ADDRESS_IN_TEXT = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)
_DAEMON_LOCAL_PARTS = {"mailer-daemon", "mailer_daemon", "mail-daemon", "maildaemon", "postmaster", "mail.daemon"}


@dataclass(frozen=True)
class Classification:
    """What a message is, which rule decided it, and the addresses / tokens that rule extracted."""

    kind: str
    rule: str
    addresses: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()


# ---- the parsed message the rules look at -------------------------------------------------------------------------


class Mail:
    """A parsed message with the views rules need, computed once and only when asked for."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.message: EmailMessage = BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[assignment]

    def header(self, name: str, message: Message | None = None) -> str:
        """A header as text ('' when absent or unreadable); never raises on malformed values."""
        return _header(message if message is not None else self.message, name)

    @cached_property
    def subject(self) -> str:
        return " ".join(self.header("Subject").split())

    @cached_property
    def content_type(self) -> str:
        return self.message.get_content_type()

    @cached_property
    def report_type(self) -> str:
        return str(self.message.get_param("report-type", "") or "").lower()

    @cached_property
    def from_address(self) -> str:
        return first_address(self.header("From"))

    @cached_property
    def parts(self) -> list[Message]:
        """Every part, descending into attached messages (message/rfc822 and report blocks)."""
        return list(self.message.walk())

    @cached_property
    def body_text(self) -> str:
        """The readable text of the message itself (not of attachments), HTML turned into text."""
        try:
            body = self.message.get_body(preferencelist=("plain", "html"))
        except Exception:  # noqa: BLE001 - malformed structure: treat as no body
            body = None
        if body is None:
            return ""
        text = part_text(body)
        if body.get_content_type() == "text/html":
            text = html_to_text(text, drop_quotes=False)
        return text

    @cached_property
    def new_text(self) -> str:
        """The text the sender wrote in this message: the body above the quoted part, without quoted lines."""
        try:
            body = self.message.get_body(preferencelist=("plain", "html"))
        except Exception:  # noqa: BLE001
            body = None
        if body is None:
            return ""
        text = part_text(body)
        if body.get_content_type() == "text/html":
            text = html_to_text(text, drop_quotes=True)
        return strip_quoted(text)


def _header(message: Message, name: str) -> str:
    try:
        values = message.get_all(name) or []
        return " ".join(str(v) for v in values).strip()
    except Exception:  # noqa: BLE001 - a header the parser cannot model: read it raw
        raw_values = [v for k, v in message.raw_items() if k.lower() == name.lower()]
        return " ".join(str(v) for v in raw_values).strip()


def first_address(value: str) -> str:
    """The first addr-spec in an address header value, lower-cased ('' if none)."""
    from email.utils import getaddresses

    for _name, addr in getaddresses([value]):
        if "@" in addr:
            return addr.strip().lower()
    return ""


def part_text(part: Message) -> str:
    """Decoded text of a text/* part; tolerant of wrong or missing charsets and broken encodings (undeclared 8-bit
    text is nearly always UTF-8)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    declared = part.get_content_charset() or "utf-8"
    for charset in (declared, "utf-8"):
        try:
            return payload.decode("utf-8" if charset in ("us-ascii", "ascii") else charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1")


_HTML_QUOTE_START = re.compile(
    r"<blockquote\b|<div[^>]+class=[\"']?gmail_quote|<div[^>]+id=[\"']?(?:divRplyFwdMsg|appendonsend)"
    r"|<div[^>]+class=[\"']?(?:OutlookMessageHeader|moz-cite-prefix|yahoo_quoted)",
    re.IGNORECASE,
)
_HTML_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_BREAK = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d)\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]+>")


def html_to_text(markup: str, *, drop_quotes: bool) -> str:
    """Good-enough HTML to text for classification; with drop_quotes, everything from the first quote block on
    (blockquote, Gmail/Outlook/Thunderbird quote containers) is left out."""
    if drop_quotes:
        found = _HTML_QUOTE_START.search(markup)
        if found:
            markup = markup[: found.start()]
    markup = _HTML_DROP.sub(" ", markup)
    markup = _HTML_BREAK.sub("\n", markup)
    return html.unescape(_HTML_TAG.sub("", markup))


# Lines that start the quoted part of a reply, in the languages our customers' leads write in.
_QUOTE_SEPARATORS = re.compile(
    r"^\s*(?:"
    r"-{2,}\s*(?:original message|forwarded message|ursprüngliche nachricht|weitergeleitete nachricht"
    r"|message d'origine|message transféré|mensaje original|mensaje reenviado|messaggio originale"
    r"|messaggio inoltrato|oorspronkelijk bericht|doorgestuurd bericht|mensagem original|ursprungligt meddelande"
    r"|oprindelig meddelelse|opprinnelig melding)\s*-{2,}"
    r"|_{10,}"
    r"|-- "
    r")\s*$",
    re.IGNORECASE,
)
# "On <date>, <name> wrote:" and its translations; may be wrapped over two lines by the sender's client.
_ATTRIBUTION = re.compile(
    r"^\s*(?:on\b.*\bwrote|am\b.*\bschrieb|le\b.*\ba écrit|el\b.*\bescribió|il\b.*\bha scritto"
    r"|op\b.*\bschreef|em\b.*\bescreveu|den\b.*\bskrev)\s*:?\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_START = re.compile(r"^\s*(?:on|am|le|el|il|op|em|den)\s", re.IGNORECASE)
# Outlook's quoted header block: a "From:" line (in several languages) followed shortly by Sent/Date/To lines.
_OUTLOOK_FROM = re.compile(r"^\s*\*?(?:from|von|de|da|van|från|fra|od)\s*:\*?\s*\S", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(
    r"^\s*\*?(?:sent|date|to|subject|gesendet|datum|an|betreff|envoyé|à|objet|enviado|para|asunto|inviato|a|oggetto"
    r"|verzonden|aan|onderwerp|skickat|till|ämne)\s*:",
    re.IGNORECASE,
)


def strip_quoted(text: str) -> str:
    """The new text of a reply: stop at the first quote separator / attribution / Outlook header block, and
    drop lines quoted with '>' (interleaved replies keep the sender's own lines between quotes)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _QUOTE_SEPARATORS.match(line) or _ATTRIBUTION.match(line):
            break
        if _ATTRIBUTION_START.match(line) and i + 1 < len(lines) and _ATTRIBUTION.match(line + " " + lines[i + 1]):
            break
        if _OUTLOOK_FROM.match(line) and any(_OUTLOOK_NEXT.match(nxt) for nxt in lines[i + 1 : i + 5]):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


# ---- rules --------------------------------------------------------------------------------------------------------


class Rule(Protocol):
    """One question about a message. `name` shows up in the database and the audit trail."""

    name: str

    def check(self, mail: Mail) -> Classification | None: ...


def _report_fields(part: Message) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status or message/feedback-report part, lower-cased names."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                blocks.append({k.lower(): " ".join(str(v).split()) for k, v in block.raw_items()})
        return blocks
    text = payload if isinstance(payload, str) else ""
    if part.get("Content-Transfer-Encoding", "").lower() in ("base64", "quoted-printable"):
        text = part_text(part)
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in chunk.splitlines():
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                last = key.strip().lower()
                fields[last] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _typed_address(value: str) -> str:
    """'rfc822; <User@Example.org>' -> 'user@example.org'."""
    _, _, addr = value.rpartition(";")
    addr = addr.strip().strip("<>").strip().lower()
    return addr if "@" in addr else ""


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


class ArfComplaint:
    """An ARF feedback report (RFC 5965): a recipient pressed "report spam". The complainer is the original
    recipient (Original-Rcpt-To, else the To of the returned message or headers)."""

    name = "arf-report"

    def check(self, mail: Mail) -> Classification | None:
        reports = [p for p in mail.parts if p.get_content_type() == "message/feedback-report"]
        if not reports and not (mail.content_type == "multipart/report" and mail.report_type == "feedback-report"):
            return None
        addresses = [
            _typed_address(block.get("original-rcpt-to", "")) for report in reports for block in _report_fields(report)
        ]
        if not any(addresses):
            addresses = [first_address(_header(headers, "To")) for headers in _returned_headers(mail)]
        return Classification("complaint", self.name, addresses=_unique(addresses))


def _returned_headers(mail: Mail) -> Iterator[Message]:
    """The headers of the message a report returns (message/rfc822 or text/rfc822-headers parts)."""
    for part in mail.parts:
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                yield payload[0]
        elif part.get_content_type() == "text/rfc822-headers":
            yield BytesParser(policy=policy.default).parsebytes(part_text(part).encode(), headersonly=True)


class DeliveryStatusReport:
    """An RFC 3464 delivery status notification. Only `Action: failed` with a 5.x.x status (or no status) is a
    permanent failure worth suppressing; delayed / 4.x.x reports are bounces with no addresses."""

    name = "dsn-report"
    _STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")

    def check(self, mail: Mail) -> Classification | None:
        reports = [p for p in mail.parts if p.get_content_type() in self._STATUS_PARTS]
        if not reports and not (mail.content_type == "multipart/report" and mail.report_type == "delivery-status"):
            return None
        failed: list[str] = []
        for report in reports:
            for block in _report_fields(report):
                action = block.get("action", "").split(" ")[0].lower()
                status = block.get("status", "").split(" ")[0]
                if action == "failed" and (status.startswith("5") or not status):
                    recipient = block.get("final-recipient") or block.get("original-recipient") or ""
                    failed.append(_typed_address(recipient))
        return Classification("bounce", self.name, addresses=_unique(failed))


class MailerDaemonBounce:
    """Non-standard bounces: plain-text reports from MAILER-DAEMON / postmaster, or with a typical bounce subject.
    Failed addresses are extracted best-effort from the text above the returned copy, unless it reads transient."""

    name = "mailer-daemon-bounce"
    _SUBJECT = re.compile(
        r"^\s*(?:undelivered mail returned to sender|undeliverable\b|undelivered\b|delivery status notification"
        r"|mail delivery failed|delivery failure|failure notice|returned mail\b|mail delivery (?:failure|system)"
        r"|message not delivered|nondeliverable|non-delivery|unzustellbar|non remis|no se puede entregar"
        r"|non recapitabile|onbestelbaar|delayed mail|warning: could not send message|delivery delayed)",
        re.IGNORECASE,
    )
    _TRANSIENT = re.compile(
        r"\bdelay(?:ed)?\b|\bwill (?:be )?retr(?:y|ied)\b|still being retried|\bwarning\b|temporar(?:y|ily)"
        r"|\(delay\)|has not yet been delivered",
        re.IGNORECASE,
    )
    _PERMANENT_STATUS = re.compile(r"\b5\.\d{1,3}\.\d{1,3}\b|\b55\d\b")
    _TRANSIENT_STATUS = re.compile(r"\b4\.\d{1,3}\.\d{1,3}\b|\b4[25]\d\b")
    _ORIGINAL_MARKER = re.compile(
        r"^.*(?:original message|returned message|copy of the message|message headers follow|original text"
        r"|below this line|undelivered message|message follows).*$",
        re.IGNORECASE | re.MULTILINE,
    )

    def check(self, mail: Mail) -> Classification | None:
        local = mail.from_address.partition("@")[0]
        from_daemon = local in _DAEMON_LOCAL_PARTS or "mailer-daemon" in mail.header("From").lower()
        bounce_subject = bool(self._SUBJECT.match(mail.subject))
        if not (bounce_subject or (from_daemon and local != "postmaster")):
            return None
        text = mail.body_text
        marker = self._ORIGINAL_MARKER.search(text)
        report = text[: marker.start()] if marker else text
        transient = bool(self._TRANSIENT.search(mail.subject)) or (
            bool(self._TRANSIENT_STATUS.search(report) or self._TRANSIENT.search(report))
            and not self._PERMANENT_STATUS.search(report)
        )
        if transient:
            return Classification("bounce", self.name)
        ours = {mail.from_address}
        addresses = [
            a.lower()
            for a in _ADDRESS_IN_TEXT.findall(report)
            if a.lower() not in ours and a.partition("@")[0].lower() not in _DAEMON_LOCAL_PARTS
        ]
        return Classification("bounce", self.name, addresses=_unique(addresses))


class OwnToken:
    """One of our verification mails (or a forwarded / attached copy of one): its token is in our header or in
    the text of any part."""

    name = "own-token"

    def check(self, mail: Mail) -> Classification | None:
        found: list[str] = []
        for part in mail.parts:
            found += TOKEN_PATTERN.findall(_header(part, TOKEN_HEADER))
            if part.get_content_maintype() == "text":
                found += TOKEN_PATTERN.findall(part_text(part))
        tokens = _unique(found)
        return Classification("verification", self.name, tokens=tokens) if tokens else None


class OwnForward:
    """A lead we forwarded, coming back to us (e.g. the forwarding address forwards to a tracking address).
    Checked on attached copies too, for forward-as-attachment rules."""

    name = "own-forward"

    def check(self, mail: Mail) -> Classification | None:
        if any(part.get(FORWARDED_HEADER) is not None for part in mail.parts):
            return Classification("loop", self.name)
        return None


class AutoSubmittedHeader:
    """RFC 3834: any Auto-Submitted value other than `no` marks machine-generated mail."""

    name = "auto-submitted-header"

    def check(self, mail: Mail) -> Classification | None:
        value = mail.header("Auto-Submitted").split(";")[0].strip().lower()
        return Classification("auto_reply", self.name) if value and value != "no" else None


class AutoReplyHeaders:
    """Vendor auto-reply marks. X-Auto-Response-Suppress is a request to others, not a mark, so it is not here."""

    name = "autoreply-header"
    _HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response", "X-Autoresponse", "X-Autogenerated")

    def check(self, mail: Mail) -> Classification | None:
        for header in self._HEADERS:
            value = mail.header(header).strip().lower()
            if mail.message.get(header) is not None and value not in ("no", "false", "0"):
                return Classification("auto_reply", self.name)
        return None


class PrecedenceHeader:
    """Precedence / X-Precedence: bulk, junk, list or auto_reply."""

    name = "precedence-header"
    _VALUES = {"bulk", "junk", "list", "auto_reply", "auto-reply"}

    def check(self, mail: Mail) -> Classification | None:
        for header in ("Precedence", "X-Precedence"):
            if mail.header(header).strip().lower() in self._VALUES:
                return Classification("auto_reply", self.name)
        return None


class NullReturnPath:
    """A null reverse path recorded by an upstream MTA: only automatic mail is sent with `<>`."""

    name = "null-return-path"

    def check(self, mail: Mail) -> Classification | None:
        values = mail.message.get_all("Return-Path") or []
        if values and all(str(v).strip() in ("<>", "") for v in values):
            return Classification("auto_reply", self.name)
        return None


class OutOfOfficeSubject:
    """Exchange and many webmails send out-of-office notices with none of the headers: match the subject."""

    name = "out-of-office-subject"
    _SUBJECT = re.compile(
        r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response)|autoreply|auto-reply|out of (?:the )?office"
        r"|abwesenheitsnotiz|automatische antwort|abwesend|réponse automatique|absence du bureau|absent(?:e)? du bureau"
        r"|respuesta automática|respuesta automatica|fuera de la oficina|risposta automatica|fuori ufficio"
        r"|afwezig|automatisch antwoord|resposta automática|ausente do escritório|autosvar|automaattinen vastaus"
        r"|automatyczna odpowiedź|poza biurem|vacation reply|on vacation)\b"
        r"|\bis out of (?:the )?office\b|\bout of office\b|\(away\)|\bauto-?reply\b",
        re.IGNORECASE,
    )

    def check(self, mail: Mail) -> Classification | None:
        return Classification("auto_reply", self.name) if self._SUBJECT.search(mail.subject) else None


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
        return Classification("unsubscribe", self.name, addresses=addresses)


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
DEFAULT = Classification("lead", "default")


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
        return Classification("lead", "unparseable")
    for _rule, verdict in run_rules(mail):
        if verdict is not None:
            return verdict
    return DEFAULT


RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES) + (DEFAULT.rule, "unparseable")
