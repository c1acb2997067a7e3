"""Reading untrusted MIME: a parsed message with the views the incoming-mail rules need (subject, parts, the
readable body, the new text of a reply without its quoted history), tolerant of every malformation we have seen,
and bounded: parsing stops with `LimitExceeded` at a limit on parts, nesting depth, header lines or decoded text,
so a hostile message costs a bounded amount of work (see MimeLimits)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from email import policy
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from functools import cached_property
from typing import Any

from mailparser_reply import EmailReplyParser

# mail-parser-reply's languages (it silently drops codes it does not know, e.g. pt).
REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "cs"]
# The reply splitter is linear but not cheap: it reads at most this much of a body.
REPLY_SPLIT_CHARS = 100_000


@dataclass(frozen=True)
class MimeLimits:
    """How much of a message we are willing to look at. Real mail is far below each (the corpus in tests/data:
    at most a few dozen parts, depth 4, a few hundred header lines)."""

    max_parts: int = 500
    max_depth: int = 25
    max_header_lines: int = 5_000
    max_decoded: int = 16 * 1024 * 1024  # bytes of part text decoded for the rules, all parts together


DEFAULT_LIMITS = MimeLimits()


class LimitExceeded(Exception):
    """The message is over one of the MimeLimits; `limit` names which."""

    def __init__(self, limit: str) -> None:
        super().__init__(f"over the {limit} limit")
        self.limit = limit


class _BoundedParser(BytesFeedParser):
    """The standard library's feed parser, counting as it goes. `_new_message` and `_parse_headers` are internals
    of email.feedparser that have not changed since Python 3.3; they are the only places that see every part and
    every header line as it is created, so the parse stops at a limit instead of building 150,000 parts first."""

    def __init__(self, limits: MimeLimits) -> None:
        super().__init__(policy=policy.default)
        self._limits = limits
        self._parts = 0
        self._header_lines = 0

    def _new_message(self) -> None:
        self._parts += 1
        if self._parts > self._limits.max_parts:
            raise LimitExceeded("parts")
        if len(self._msgstack) >= self._limits.max_depth:  # type: ignore[attr-defined]
            raise LimitExceeded("depth")
        super()._new_message()  # type: ignore[misc]

    def _parse_headers(self, lines: list[str]) -> None:
        self._header_lines += len(lines)
        if self._header_lines > self._limits.max_header_lines:
            raise LimitExceeded("header lines")
        super()._parse_headers(lines)  # type: ignore[misc]


def parse_bounded(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> EmailMessage:
    """Parse a message, raising LimitExceeded as soon as it goes over a limit."""
    parser = _BoundedParser(limits)
    try:
        parser.feed(raw)
        return parser.close()  # type: ignore[return-value]
    except RecursionError:  # a structure deeper than the interpreter allows, whatever max_depth says
        raise LimitExceeded("depth") from None


class Mail:
    """A parsed message with the views rules need, computed once and only when asked for."""

    def __init__(self, raw: bytes, limits: MimeLimits = DEFAULT_LIMITS, *, mail_from: str | None = None) -> None:
        """Raises LimitExceeded. `mail_from`: the envelope sender, when known ('' for a null reverse path)."""
        self.raw = raw
        self.limits = limits
        self.mail_from = mail_from
        self.message: EmailMessage = parse_bounded(raw, limits)
        self._decoded = 0

    def text_of(self, part: Message) -> str:
        """The decoded text of a part, counted against the decoded-size limit (raises LimitExceeded)."""
        text = part_text(part)
        self._decoded += len(text)
        if self._decoded > self.limits.max_decoded:
            raise LimitExceeded("decoded size")
        return text

    def header(self, name: str, message: Message | None = None) -> str:
        """A header as text ('' when absent or unreadable); never raises on malformed values."""
        return header_text(message if message is not None else self.message, name)

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
        text = self.text_of(body)
        if body.get_content_type() == "text/html":
            text = html_to_text(text, drop_quotes=False)
        return text

    @cached_property
    def new_text(self) -> str:
        """The text the sender wrote in this message: the body above the quoted part, without quoted lines.
        mail-parser-reply cuts the quoted history (headers of many clients, many languages); our own pass then
        drops what it keeps by design ('>' lines of bottom-posted or interleaved replies, attributions it does not
        know)."""
        try:
            body = self.message.get_body(preferencelist=("plain", "html"))
        except Exception:  # noqa: BLE001
            body = None
        if body is None:
            return ""
        text = self.text_of(body)
        if body.get_content_type() == "text/html":
            text = html_to_text(text, drop_quotes=True)
        return strip_quoted(latest_reply(text[:REPLY_SPLIT_CHARS]))


def latest_reply(text: str) -> str:
    """The newest reply in a thread's text (mail-parser-reply); the text itself if the library finds none."""
    try:
        found = _reply_parser().parse_reply(text=text.replace("\r\n", "\n"))
    except Exception:  # noqa: BLE001 - the library failing on odd text must not lose the text
        return text
    return found if isinstance(found, str) and found.strip() else text


_PARSERS: dict[str, Any] = {}


def _reply_parser() -> Any:
    if "parser" not in _PARSERS:
        _PARSERS["parser"] = EmailReplyParser(languages=REPLY_LANGUAGES)
    return _PARSERS["parser"]


def header_summary(raw: bytes) -> dict[str, str]:
    """From, To, Subject and Message-ID of a raw message as text (only its first 64 KB of headers are read)."""
    try:
        headers = BytesHeaderParser(policy=policy.default).parsebytes(raw[:65536])
    except Exception:  # noqa: BLE001 - unreadable headers: an empty summary
        return {}
    return {name: header_text(headers, name)[:500] for name in ("From", "To", "Subject", "Message-ID")}


def header_text(message: Message, name: str) -> str:
    try:
        values = message.get_all(name) or []
        return " ".join(str(v) for v in values).strip()
    except Exception:  # noqa: BLE001 - a header the parser cannot model: read it raw
        raw_values = [v for k, v in message.raw_items() if k.lower() == name.lower()]
        return " ".join(str(v) for v in raw_values).strip()


def first_address(value: str) -> str:
    """The first addr-spec in an address header value, lower-cased ('' if none)."""
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
