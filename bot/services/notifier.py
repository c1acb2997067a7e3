"""How services report what happened: the events they emit and the Notifier port that carries them.

Services speak in domain terms; the Slack implementation (handlers/notifier.py) turns each event into messages.
Announcing is best effort: everything an event reports is already stored."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from models import Identity, LimitNotice, LimitRequest, StepName, StepStatus, VerificationStep

# Where a message was posted, so it can be updated in place: (channel, ts).
Posted = tuple[str, str]


@dataclass(frozen=True)
class StepEvent:
    """Something happened to a verification step: what the channel history records.

    `status` PENDING: an attempt is under way (`sent_to`/`route`: where its mail went; `wait`: how long Tracking
    waits for the copy). VERIFIED / FAILED: the outcome (`detail`: what was checked, or why it failed). NOT_RUN: the
    steps in `reset` must run again because settings changed (`detail`: which). `locked_until`: this failure locked
    the Receiving step (too many locked codes in a row) until then."""

    step: StepName
    status: StepStatus
    at: datetime
    actor: str | None
    detail: str = ""
    sent_to: str | None = None
    route: str | None = None
    wait: timedelta | None = None
    reset: tuple[StepName, ...] = ()
    locked_until: datetime | None = None


class SignInProblem(StrEnum):
    """Why a sign-in that came back did not give us a mailbox."""

    DECLINED = "declined"  # the person (or an administrator's policy) said no on the consent screen
    SCOPE_NOT_GRANTED = "scope_not_granted"  # the send-mail permission was unticked
    UNREACHABLE = "unreachable"
    FAILED = "failed"  # the provider refused the code exchange, or the id_token did not check out


@dataclass(frozen=True)
class SignInOutcome:
    """A "Sign in with Microsoft / Google" that came back, for the modal it was started from: the mailbox, or why
    not. `form` is what the Slack side stored when the button was clicked (None if that never arrived)."""

    slack_user_id: str
    view_id: str
    provider: str
    label: str
    mailbox: str | None = None
    problem: SignInProblem | None = None
    form: str | None = None
    link: str | None = field(default=None, repr=False)  # the modal's sign-in link, for "Sign in again"


class OperatorEvent(enum.StrEnum):
    OPERATOR_MAIL = "operator_mail"  # mail to postmaster@ / abuse@ one of our domains
    MESSAGE_PARKED = "message_parked"  # an inbound message whose processing failed too often: set aside


@dataclass(frozen=True)
class OperatorNotice:
    """Something the platform's operator should see (OPS_CHANNEL): mail to its postmaster@ / abuse@ mailboxes, or an
    inbound message parked after `attempts` failed attempts (`detail`: the last error)."""

    event: OperatorEvent
    inbound_id: int
    at: datetime
    sender: str
    recipients: tuple[str, ...]
    subject: str
    size: int
    attempts: int = 0
    detail: str = ""


class HealthEvent(enum.StrEnum):
    NEEDS_ATTENTION = "needs_attention"  # a run found problems (or different ones than before)
    HEALTHY_AGAIN = "healthy_again"  # the problems are gone
    PAUSED = "paused"  # bounce or complaint rate over the line: the gateway defers the identity's mail
    RESUMED = "resumed"  # a manager resumed it
    CHECKED = "checked"  # a run finished without changing anything (`actor`: who asked for it, if anyone)


@dataclass(frozen=True)
class HealthFinding:
    """What one health check found. `check`: login, tracking, spf, dmarc or dkim; `status`: ok, warning, problem or
    unknown; `code`: the login's diagnosis code, or the tracking probe's outcome; `message` and `fix` in plain
    language, `record`: DNS record(s) to publish; `summary`: a few words for the identity's health reason; `carried`:
    the check could not run this time, so its earlier finding stands."""

    check: str
    status: str
    subject: str = ""
    code: str = ""
    summary: str = ""
    message: str = ""
    fix: str = ""
    record: str = ""
    carried: bool = False


@dataclass(frozen=True)
class HealthNotice:
    """An identity's health changed, or a run of its checks finished. PAUSED carries the rates that paused it."""

    event: HealthEvent
    at: datetime
    findings: tuple[HealthFinding, ...] = ()
    actor: str | None = None
    sent: int = 0
    hard_bounces: int = 0
    complaints: int = 0


class LifecycleChange(enum.StrEnum):
    DISABLED = "disabled"
    ENABLED = "enabled"
    DELETED = "deleted"


@dataclass(frozen=True)
class LifecycleEvent:
    """An identity was disabled, enabled or deleted by `actor` at `at`; a deleted one's address is held (still
    receives, can't be taken) until `held_until`."""

    change: LifecycleChange
    actor: str
    at: datetime
    held_until: datetime | None = None


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

    async def identity_not_ready(self, identity: Identity, event: StepEvent) -> None:
        """A ready identity is out of service: the step in `event` failed (the gateway refuses its mail now)."""

    async def receiving_locked(self, identity: Identity, until: datetime) -> None:
        """Too many codes in a row were locked: no new one-time password until `until`."""

    async def limit_request_created(self, identity: Identity, request: LimitRequest) -> list[Posted]:
        """Ask the approvers; returns where the request was posted."""

    async def limit_request_closed(self, identity: Identity, request: LimitRequest) -> None:
        """A pending request was superseded by a newer one (or decided while it was being posted)."""

    async def limit_request_decided(self, identity: Identity, request: LimitRequest) -> None:
        """A manager approved or denied a request."""

    async def limits_changed(self, identity: Identity, actor: str) -> None:
        """Limits were changed without needing approval (lowered, or within the defaults)."""

    async def sign_in_finished(self, outcome: SignInOutcome) -> None:
        """A "Sign in with Microsoft / Google" came back: update the modal it was started from in place."""

    async def identity_lifecycle(self, identity: Identity, event: LifecycleEvent) -> None:
        """An identity was disabled, enabled or deleted: tell its channel."""

    async def limit_reached(self, identity: Identity, notice: LimitNotice) -> Posted | None:
        """The gateway deferred recipients of the identity for its limit, for the first time this hour."""

    async def limit_notice_updated(self, identity: Identity, notice: LimitNotice) -> None:
        """More recipients were deferred since the notice was posted: update it in place."""

    async def limit_increase_ended(self, identity: Identity, request: LimitRequest) -> None:
        """A time-boxed increase ended (at its end, or early by a manager): the limits are back."""

    async def usage_changed(self, identity: Identity) -> None:
        """The identity sent mail (what the App Home shows of its usage changed)."""

    async def operator_notice(self, notice: OperatorNotice) -> None:
        """Tell the platform's operator (OPS_CHANNEL; only the log when it is unset)."""

    async def health_changed(
        self, identity: Identity, steps: dict[str, VerificationStep], notice: HealthNotice
    ) -> None:
        """The identity's health changed (one message in its channel), or a run finished (the panel shows it; the
        person who asked for it is told)."""


class NullNotifier:
    """Says nothing (commands without Slack, unit tests)."""

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

    async def identity_not_ready(self, identity: Identity, event: StepEvent) -> None:
        return None

    async def receiving_locked(self, identity: Identity, until: datetime) -> None:
        return None

    async def limit_request_created(self, identity: Identity, request: LimitRequest) -> list[Posted]:
        return []

    async def limit_request_closed(self, identity: Identity, request: LimitRequest) -> None:
        return None

    async def limit_request_decided(self, identity: Identity, request: LimitRequest) -> None:
        return None

    async def limits_changed(self, identity: Identity, actor: str) -> None:
        return None

    async def sign_in_finished(self, outcome: SignInOutcome) -> None:
        return None

    async def identity_lifecycle(self, identity: Identity, event: LifecycleEvent) -> None:
        return None

    async def limit_reached(self, identity: Identity, notice: LimitNotice) -> Posted | None:
        return None

    async def limit_notice_updated(self, identity: Identity, notice: LimitNotice) -> None:
        return None

    async def limit_increase_ended(self, identity: Identity, request: LimitRequest) -> None:
        return None

    async def usage_changed(self, identity: Identity) -> None:
        return None

    async def operator_notice(self, notice: OperatorNotice) -> None:
        return None

    async def health_changed(
        self, identity: Identity, steps: dict[str, VerificationStep], notice: HealthNotice
    ) -> None:
        return None
