"""From findings to an identity's health: what counts, what a run concludes, and the words of the health reason.

"unknown" (a check that could not run) never changes anything on its own: a problem found earlier stands while
its check can't run (it is carried into the new run), and a check that can't run is no problem."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.mail.domain_checks import Status
from bot.services.notifier import HealthFinding
from bot.services.rates import MAX_BOUNCE_RATE, MAX_COMPLAINT_RATE, RATE_WINDOW, Rates
from models import CheckOutcome

Key = tuple[str, str, str]


def carry(current: Sequence[HealthFinding], previous: Sequence[HealthFinding]) -> list[HealthFinding]:
    """This run's findings, plus the earlier problems of every check that this run could not do (all its findings
    unknown, or none at all)."""
    known = {f.check for f in current if f.status != Status.UNKNOWN}
    kept = [replace(f, carried=True) for f in previous if f.status == Status.PROBLEM and f.check not in known]
    return [*current, *kept]


def outcome_of(findings: Sequence[HealthFinding]) -> CheckOutcome:
    statuses = {f.status for f in findings}
    if Status.PROBLEM in statuses:
        return CheckOutcome.PROBLEMS
    if Status.UNKNOWN in statuses:
        return CheckOutcome.INCOMPLETE
    if Status.WARNING in statuses:
        return CheckOutcome.WARNINGS
    return CheckOutcome.PASSED


def problems(findings: Sequence[HealthFinding]) -> list[HealthFinding]:
    return [f for f in findings if f.status == Status.PROBLEM]


def problem_keys(findings: Sequence[HealthFinding]) -> set[Key]:
    """What is broken, as a set: a run that finds other problems than the last one is a change worth a message."""
    return {(f.check, f.subject, f.code) for f in problems(findings)}


def reason(findings: Sequence[HealthFinding]) -> str:
    """The identity's health reason: the problems in a few words each."""
    return "; ".join(dict.fromkeys(f.summary or f.check for f in problems(findings)))


def percent(rate: float) -> str:
    """8%, 5.2%, 0.33%: two decimals under one percent (where the complaint line is)."""
    digits = 2 if rate < 0.01 else 1
    return f"{rate * 100:.{digits}f}".rstrip("0").rstrip(".") + "%"


def pause_reason(rates: Rates) -> str:
    """Why the identity was paused, with the figures (also the gateway's 451 text)."""
    days = RATE_WINDOW.days
    parts = []
    if rates.bounce_rate > MAX_BOUNCE_RATE:
        parts.append(
            f"{percent(rates.bounce_rate)} hard bounces ({rates.hard_bounces} of {rates.sent} emails in {days} days; "
            f"the line is {percent(MAX_BOUNCE_RATE)})"
        )
    if rates.complaint_rate > MAX_COMPLAINT_RATE:
        parts.append(
            f"{percent(rates.complaint_rate)} spam complaints ({rates.complaints} of {rates.sent} emails in {days} "
            f"days; the line is {percent(MAX_COMPLAINT_RATE)})"
        )
    return " and ".join(parts)
