"""What the verification steps report back: a recorded step change, where a one-time password went, a step that
is already running."""

from __future__ import annotations

from dataclasses import dataclass

from bot.services.notifier import StepEvent
from models import IdentityStatus, StepName


@dataclass(frozen=True)
class Recorded:
    """A step change stored in the database, waiting to be announced."""

    identity_id: int
    event: StepEvent
    readiness: IdentityStatus | None  # the identity's new status when it changed with this step


@dataclass(frozen=True)
class CodeSent:
    """What became of a one-time password: emailed to `to` (by `route`), or not, and why (`problem`)."""

    to: str
    route: str | None
    problem: str | None = None

    @property
    def sent(self) -> bool:
        return self.problem is None


class AlreadyRunning(Exception):
    def __init__(self, step: StepName) -> None:
        super().__init__(f"{step} verification is already running")
        self.step = step
