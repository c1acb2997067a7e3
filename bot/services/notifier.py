"""How services report events. The Slack implementation lives in handlers/notifier.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from models import Identity, LimitRequest, VerificationStep

if TYPE_CHECKING:
    from bot.services.verification import StepEvent

# Where a message was posted, so it can be updated in place: (channel, ts).
Posted = tuple[str, str]


class Notifier(Protocol):
    async def identity_created(self, identity: Identity, request: LimitRequest | None) -> Posted | None:
        """A new identity was saved: post its panel to the notices channel."""

    async def identity_updated(self, identity: Identity, changed: list[str], actor: str) -> None:
        """An identity was edited (`changed` names the fields; never values of secrets)."""

    async def panel_posted(self, identity: Identity, steps: dict[str, VerificationStep]) -> Posted | None:
        """Post a fresh verification panel."""

    async def step_changed(self, identity: Identity, steps: dict[str, VerificationStep], event: StepEvent) -> None:
        """A verification step changed: update the panel, keep the history."""

    async def identity_ready(self, identity: Identity, steps: dict[str, VerificationStep]) -> None:
        """All three steps passed."""

    async def limit_request_created(self, identity: Identity, request: LimitRequest) -> list[Posted]:
        """Ask the approvers; returns where the request was posted."""

    async def limit_request_closed(self, identity: Identity, request: LimitRequest) -> None:
        """A pending request was superseded by a newer one."""

    async def limit_request_decided(self, identity: Identity, request: LimitRequest) -> None:
        """A manager approved or denied a request."""

    async def limits_changed(self, identity: Identity, actor: str) -> None:
        """Limits were changed without needing approval (lowered, or within the defaults)."""


class NullNotifier:
    """Says nothing (unit tests and commands without Slack)."""

    async def identity_created(self, identity: Identity, request: LimitRequest | None) -> Posted | None:
        return None

    async def identity_updated(self, identity: Identity, changed: list[str], actor: str) -> None:
        return None

    async def panel_posted(self, identity: Identity, steps: dict[str, VerificationStep]) -> Posted | None:
        return None

    async def step_changed(self, identity: Identity, steps: dict[str, VerificationStep], event: StepEvent) -> None:
        return None

    async def identity_ready(self, identity: Identity, steps: dict[str, VerificationStep]) -> None:
        return None

    async def limit_request_created(self, identity: Identity, request: LimitRequest) -> list[Posted]:
        return []

    async def limit_request_closed(self, identity: Identity, request: LimitRequest) -> None:
        return None

    async def limit_request_decided(self, identity: Identity, request: LimitRequest) -> None:
        return None

    async def limits_changed(self, identity: Identity, actor: str) -> None:
        return None
