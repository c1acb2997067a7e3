"""Changing sending limits: lowering applies at once, raising above the defaults waits for a manager.

A manager's decision is a conditional update (… WHERE status = 'pending'), so when two managers click at the same
moment exactly one decision counts and the other is told who decided and when."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit
from bot.services.errors import FormErrors, NotFound
from bot.services.limits.requests import open_request
from bot.services.limits.rules import parse_limits, parse_until
from bot.services.limits.time_boxes import replace_running
from bot.services.notifier import Notifier
from bot.services.policy import IdentityAction, Policy
from models import Database, Identity, IdentityLifecycle, LimitRequest, LimitRequestStatus
from models.base import utcnow
from models.tables import DEFAULT_DAILY_LIMIT, DEFAULT_HOURLY_LIMIT, MAX_DAILY_LIMIT

MAX_REASON = 500
log = logging.getLogger(__name__)


class ChangeOutcome(StrEnum):
    APPLIED = "applied"  # lowered, or within what needs no approval: in force now
    REQUESTED = "requested"  # waits for a manager
    UNCHANGED = "unchanged"


@dataclass
class LimitChange:
    outcome: ChangeOutcome
    identity: Identity
    request: LimitRequest | None = None
    superseded: list[LimitRequest] | None = None


class AlreadyDecided(Exception):
    def __init__(self, request: LimitRequest) -> None:
        super().__init__(f"request {request.id} was already {request.status}")
        self.request = request


@dataclass
class Decision:
    request: LimitRequest
    identity: Identity


class LimitService:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        policy: Policy,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.policy = policy
        self.clock = clock

    async def _identity(self, identity_id: int) -> Identity:
        async with self.db.session() as session:
            identity = await session.get(Identity, identity_id)
        if identity is None or identity.lifecycle == IdentityLifecycle.DELETED:
            raise NotFound("This identity no longer exists.")
        return identity

    async def pending_request(self, identity_id: int) -> LimitRequest | None:
        """The identity's newest request still waiting for a manager."""
        async with self.db.session() as session:
            return await session.scalar(
                select(LimitRequest)
                .where(LimitRequest.identity_id == identity_id, LimitRequest.status == LimitRequestStatus.PENDING)
                .order_by(LimitRequest.id.desc())
            )

    @staticmethod
    def needs_manager(identity: Identity, hourly: int, daily: int) -> bool:
        """Raising a limit above both the default and what the identity already has needs a manager."""
        return hourly > max(identity.hourly_limit, DEFAULT_HOURLY_LIMIT) or daily > max(
            identity.daily_limit, DEFAULT_DAILY_LIMIT
        )

    async def change(
        self,
        identity_id: int,
        hourly_text: str | None,
        daily_text: str | None,
        reason: str | None,
        *,
        actor: str,
        until_text: str | None = None,
    ) -> LimitChange:
        """Apply or request new limits (an increase may be time-boxed: `until_text`, a date). Raises FormErrors
        (nothing changes) or NotAllowed."""
        identity = await self._identity(identity_id)
        await self.policy.require(actor, identity, IdentityAction.CHANGE_LIMITS)
        now = self.clock()
        hourly, daily, reason, until = self._read_form(identity, hourly_text, daily_text, reason, until_text, now)
        if (hourly, daily) == (identity.hourly_limit, identity.daily_limit):
            return LimitChange(ChangeOutcome.UNCHANGED, identity)
        async with self.db.transaction() as session:
            locked = await session.get(Identity, identity_id, with_for_update=True)
            if locked is None:
                raise NotFound("This identity no longer exists.")
            superseded = await self._supersede_pending(session, identity_id, now)
            if self.needs_manager(locked, hourly, daily):
                request = await open_request(
                    session,
                    locked,
                    actor=actor,
                    hourly=hourly,
                    daily=daily,
                    reason=reason,
                    now=now,
                    superseded=superseded,
                    until=until,
                )
                result = LimitChange(ChangeOutcome.REQUESTED, locked, request, superseded)
            else:
                before = (locked.hourly_limit, locked.daily_limit)
                await replace_running(session, identity_id, now)  # these limits stand: a running box won't revert
                locked.hourly_limit, locked.daily_limit, locked.updated_at = hourly, daily, now
                audit.record(
                    session,
                    actor=actor,
                    action="limits.changed",
                    identity_id=identity_id,
                    previous={"hourly": before[0], "daily": before[1]},
                    current={"hourly": hourly, "daily": daily},
                    reason=reason,
                    superseded=[r.id for r in superseded],
                )
                result = LimitChange(ChangeOutcome.APPLIED, locked, None, superseded)
        return result

    def _read_form(
        self,
        identity: Identity,
        hourly_text: str | None,
        daily_text: str | None,
        reason: str | None,
        until_text: str | None,
        now: datetime,
    ) -> tuple[int, int, str, datetime | None]:
        """The form's limits, reason and last day, or FormErrors naming each field that is wrong."""
        hourly, daily, errors = parse_limits(hourly_text, daily_text)
        reason = (reason or "").strip()
        if len(reason) > MAX_REASON:
            errors["reason"] = f"Keep the reason under {MAX_REASON} characters."
        until, err = parse_until(until_text, now.date())
        if err:
            errors["until"] = err
        elif until is not None and not errors and not self.needs_manager(identity, hourly, daily):
            errors["until"] = "Only an increase that needs approval can have an end: leave it empty."
        if errors:
            raise FormErrors(errors)
        return hourly, daily, reason, until

    @staticmethod
    async def _supersede_pending(session: AsyncSession, identity_id: int, now: datetime) -> list[LimitRequest]:
        """Close the identity's pending requests (a newer change replaces them). They are locked: a manager deciding
        one at this moment either went first (it is no longer pending here) or waits for us and is then told it was
        superseded."""
        superseded = list(
            (
                await session.scalars(
                    select(LimitRequest)
                    .where(LimitRequest.identity_id == identity_id, LimitRequest.status == LimitRequestStatus.PENDING)
                    .with_for_update()
                )
            ).all()
        )
        for request in superseded:
            request.status, request.decided_at = LimitRequestStatus.SUPERSEDED, now
        return superseded

    async def announce(self, change: LimitChange, *, actor: str) -> None:
        """Tell managers about a request (and the channel about an applied change); retire superseded requests."""
        for old in change.superseded or []:
            await self.notifier.limit_request_closed(change.identity, old)
        if change.outcome == ChangeOutcome.REQUESTED and change.request is not None:
            await self.post_request(change.request.id)
        elif change.outcome == ChangeOutcome.APPLIED:
            await self.notifier.limits_changed(change.identity, actor)

    async def post_request(self, request_id: int) -> None:
        """Post a pending request to the approvers once (a claim in the database), and remember where, to update it
        once decided. If it reached nobody the claim is released, so the background sweep tries again."""
        now = self.clock()
        async with self.db.transaction() as session:
            claimed = await session.execute(
                update(LimitRequest)
                .where(
                    LimitRequest.id == request_id,
                    LimitRequest.status == LimitRequestStatus.PENDING,
                    LimitRequest.posted_at.is_(None),
                )
                .values(posted_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return
            request = await session.get(LimitRequest, request_id)
        assert request is not None
        try:
            identity = await self._identity(request.identity_id)
            posted = await self.notifier.limit_request_created(identity, request)
        except Exception:
            log.exception("could not post limit request %s", request_id)
            posted = []
        async with self.db.transaction() as session:
            current = await session.get(LimitRequest, request_id, with_for_update=True)
            if current is None:
                return
            # A decision may already have been made in one of these messages: keep what it recorded too.
            merged = list(current.messages or []) + [
                {"channel": c, "ts": t} for c, t in posted if {"channel": c, "ts": t} not in (current.messages or [])
            ]
            current.messages = merged
            if not posted:
                current.posted_at = None
            decided_meanwhile = current.status != LimitRequestStatus.PENDING
        if decided_meanwhile and posted:
            # A manager decided in one of these messages before they were all recorded: show it in every one.
            refreshed = await self.get_request(request_id)
            await self.notifier.limit_request_closed(identity, refreshed)

    async def post_unposted(self, *, older_than: timedelta = timedelta(minutes=1)) -> int:
        """Post pending requests that never reached the approvers (the process died, or Slack was down)."""
        cutoff = self.clock() - older_than
        async with self.db.session() as session:
            ids = (
                await session.scalars(
                    select(LimitRequest.id).where(
                        LimitRequest.status == LimitRequestStatus.PENDING,
                        LimitRequest.posted_at.is_(None),
                        LimitRequest.created_at <= cutoff,
                    )
                )
            ).all()
        for request_id in ids:
            await self.post_request(request_id)
        return len(ids)

    async def get_request(self, request_id: int) -> LimitRequest:
        async with self.db.session() as session:
            request = await session.get(LimitRequest, request_id)
        if request is None:
            raise NotFound("This limit request no longer exists.")
        return request

    async def decide(
        self,
        request_id: int,
        *,
        approve: bool,
        decider: str,
        seen_in: tuple[str, str] | None = None,
    ) -> Decision:
        """Approve or deny a pending request, exactly once. Raises NotAllowed or AlreadyDecided.
        `seen_in` is the message the decision was made in: it is recorded even if posting had not recorded it."""
        request = await self.get_request(request_id)
        await self.policy.require_decide(decider, request)
        now = self.clock()
        status = LimitRequestStatus.APPROVED if approve else LimitRequestStatus.DENIED
        identity: Identity | None = None
        async with self.db.transaction() as session:
            # Lock order as in change(): the identity first, then its requests (no deadlock on PostgreSQL).
            locked = await session.get(Identity, request.identity_id, with_for_update=True)
            if locked is None:
                raise NotFound("This identity no longer exists.")
            won = await session.execute(
                update(LimitRequest)
                .where(LimitRequest.id == request_id, LimitRequest.status == LimitRequestStatus.PENDING)
                .values(status=status, decided_by=decider, decided_at=now)
            )
            if won.rowcount == 1:  # type: ignore[attr-defined]
                identity = locked
                fresh = await session.get(LimitRequest, request_id, populate_existing=True)
                assert fresh is not None
                messages = list(fresh.messages or [])
                if seen_in and {"channel": seen_in[0], "ts": seen_in[1]} not in messages:
                    messages.append({"channel": seen_in[0], "ts": seen_in[1]})
                # Assigned to the row of this session (a new list, so the JSON column is seen as changed).
                fresh.messages = request.messages = messages
                if approve:
                    replaced = await replace_running(session, identity.id, now, besides=request_id)
                    if fresh.until is not None:  # time-boxed: back to the limits before any box, at its end
                        fresh.revert_hourly = replaced.revert_hourly if replaced else identity.hourly_limit
                        fresh.revert_daily = replaced.revert_daily if replaced else identity.daily_limit
                        request.revert_hourly, request.revert_daily = fresh.revert_hourly, fresh.revert_daily
                    identity.hourly_limit = request.requested_hourly
                    identity.daily_limit = min(request.requested_daily, MAX_DAILY_LIMIT)
                    identity.updated_at = now
                audit.record(
                    session,
                    actor=decider,
                    action=f"limits.{status}",
                    identity_id=identity.id,
                    request_id=request_id,
                    hourly=request.requested_hourly,
                    daily=request.requested_daily,
                    requested_by=request.requested_by,
                )
        if identity is None:  # someone else decided first: tell who and when
            raise AlreadyDecided(await self.get_request(request_id))
        request.status, request.decided_by, request.decided_at = status, decider, now
        decision = Decision(request, identity)
        await self.notifier.limit_request_decided(identity, request)
        return decision
