"""What a rule answers: the Classification, and the Rule protocol every rule follows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.mail.mime import Mail
from models import MessageKind

# At most this many addresses / Message-IDs are kept from one report: a report naming 80,000 addresses costs no
# more than one naming a few (and only a handful can ever act: see the pipeline's attribution).
MAX_EVIDENCE = 50


@dataclass(frozen=True)
class Classification:
    """What a message is, which rule decided it, and what that rule extracted:
    `addresses` the failed recipients (bounce), complainers (complaint) or the unsubscriber; `permanent` whether a
    bounce is a permanent failure (only those suppress); `original_ids` the Message-IDs of the message a report is
    about, for attributing it to mail the team sent; `tokens` our verification tokens."""

    kind: MessageKind
    rule: str
    addresses: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()
    permanent: bool = False
    original_ids: tuple[str, ...] = ()


class Rule(Protocol):
    """One question about a message. `name` shows up in the database and the audit trail."""

    name: str

    def check(self, mail: Mail) -> Classification | None: ...


def unique(values: Iterable[str], limit: int = MAX_EVIDENCE) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for value in values:
        if value and value not in found:
            found[value] = None
            if len(found) >= limit:
                break
    return tuple(found)


# A plain addr-spec as reports carry it: no route, no pipe, no encoded word, a dotted domain.
_ADDR_SPEC = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{}~.-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def clean_address(value: str) -> str:
    """A report's address in plain form, or '' when it is not one (a pipe to a program, a route, an encoded word,
    a bare local part, a Message-ID in angle brackets with a '$' in it...)."""
    text = value.strip().strip("<>").strip().strip(".,;:'\"").lower()
    if text.startswith("rfc822;"):
        text = text[7:].strip().strip("<>")
    if "=?" in text or "|" in text or "/" in text.partition("@")[0][:1]:
        return ""
    return text if _ADDR_SPEC.match(text) and ".." not in text else ""


def null_reverse_path(mail: Mail) -> bool:
    """The message came with a null reverse path (`MAIL FROM:<>`, or a Return-Path: <> an upstream MTA recorded):
    only automatic mail is sent that way."""
    if mail.mail_from == "":
        return True
    values = mail.message.get_all("Return-Path") or []
    return bool(values) and all(str(v).strip() in ("<>", "") for v in values)
