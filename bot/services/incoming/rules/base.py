"""What a rule answers: the Classification, and the Rule protocol every rule follows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.mail.mime import Mail
from models import MessageKind


@dataclass(frozen=True)
class Classification:
    """What a message is, which rule decided it, and the addresses / tokens that rule extracted."""

    kind: MessageKind
    rule: str
    addresses: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()


class Rule(Protocol):
    """One question about a message. `name` shows up in the database and the audit trail."""

    name: str

    def check(self, mail: Mail) -> Classification | None: ...


def unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))
