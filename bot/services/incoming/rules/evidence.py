"""What reports carry about the message they report on: the field blocks of machine-readable parts, the headers of
the returned message, and its Message-ID (how a report is matched to mail the team really sent)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import policy
from email.message import Message
from email.parser import BytesParser

from bot.mail.mime import Mail, header_text
from bot.services.incoming.rules.base import unique

_MESSAGE_ID = re.compile(r"<[^<>\s@]{1,250}@[^<>\s@]{1,250}>")
# A Message-ID line quoted in the text of a non-standard bounce ("Message-ID: <...>", "Message-Id:<...>").
_MESSAGE_ID_LINE = re.compile(r"^\s*>?\s*message-id:\s*(<[^<>\s]{1,500}>)", re.IGNORECASE | re.MULTILINE)
# Only this much of a report's text is searched for quoted headers.
SEARCH_CHARS = 200_000


def report_fields(mail: Mail, part: Message) -> list[dict[str, str]]:
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
        text = mail.text_of(part)
    for chunk in re.split(r"\r?\n\s*\r?\n", text[:SEARCH_CHARS]):
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


def returned_headers(mail: Mail) -> Iterator[Message]:
    """The headers of the message a report returns (message/rfc822 or text/rfc822-headers parts)."""
    for part in mail.parts:
        if part.get_content_type() == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                yield payload[0]
        elif part.get_content_type() == "text/rfc822-headers":
            text = mail.text_of(part)[:SEARCH_CHARS]
            yield BytesParser(policy=policy.default).parsebytes(text.encode("utf-8", "replace"), headersonly=True)


def original_message_ids(mail: Mail) -> tuple[str, ...]:
    """Message-IDs of the message a report is about: from the returned message or headers, from Message-ID lines
    quoted in the report's text, and the report's own In-Reply-To / References (some servers set them)."""
    found: list[str] = []
    for headers in returned_headers(mail):
        found += _MESSAGE_ID.findall(header_text(headers, "Message-ID"))
    found += _MESSAGE_ID_LINE.findall(mail.body_text[:SEARCH_CHARS])
    for part in mail.parts:
        if part.get_content_type() in ("text/plain", "message/delivery-status") and part is not mail.message:
            payload = part.get_payload()
            if isinstance(payload, str):
                found += _MESSAGE_ID_LINE.findall(payload[:SEARCH_CHARS])
    for name in ("In-Reply-To", "References"):
        found += _MESSAGE_ID.findall(mail.header(name))
    return unique(" ".join(m.split()) for m in found)
