"""How services report events. The Slack implementation lives in handlers/notifier.py."""

from __future__ import annotations

from typing import Protocol

from models import Identity, LimitRequest


class Notifier(Protocol):
    async def identity_created(self, identity: Identity, request: LimitRequest | None) -> None:
        """A new identity was saved: tell its notices channel."""


class NullNotifier:
    """Says nothing (unit tests and commands without Slack)."""

    async def identity_created(self, identity: Identity, request: LimitRequest | None) -> None:
        return None
