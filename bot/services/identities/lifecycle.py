"""An identity's whole life after creation: disabled (the gateway refuses its mail, replies still arrive), enabled
again, deleted.

Deleting keeps the row: its audit trail, the record of what it sent (late bounces and complaints are still matched)
and its team's suppressions stay. It revokes its gateway credentials, stops its pending checks and closes its
pending limit requests. Its address is held for ADDRESS_HOLD: the inbound server still accepts mail for it and leads
are still forwarded (replies to past campaigns arrive for weeks), and nobody can take the address. When the hold ends
the address is released (`release_expired`, run by the sweep, and at once when someone wants the address)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, String, and_, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit
from bot.services.errors import NotFound
from bot.services.notifier import LifecycleChange, LifecycleEvent, Notifier
from bot.services.policy import IdentityAction, Policy
from models import (
    Database,
    GatewayCredential,
    Identity,
    IdentityLifecycle,
    LimitRequest,
    LimitRequestStatus,
    StepStatus,
    VerificationStep,
)
from models.base import utcnow

ADDRESS_HOLD = timedelta(days=30)
RELEASED_PREFIX = "released:"


class Outcome(StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # it already was so


@dataclass(frozen=True)
class LifecycleResult:
    outcome: Outcome
    identity: Identity
    event: LifecycleEvent | None = None
    revoked: int = 0  # gateway credentials revoked (delete)


def held_until(identity: Identity) -> datetime | None:
    """Until when a deleted identity's address is held (None when it is not deleted)."""
    return identity.deleted_at + ADDRESS_HOLD if identity.deleted_at is not None else None


def not_deleted() -> ColumnElement[bool]:
    """SQL condition: the identity is not deleted."""
    return Identity.lifecycle != IdentityLifecycle.DELETED


def receives(now: datetime) -> ColumnElement[bool]:
    """SQL condition: the identity's addresses still receive mail (not deleted, or deleted within the hold)."""
    return (Identity.deleted_at.is_(None)) | (Identity.deleted_at > now - ADDRESS_HOLD)


async def release_expired_holds(session: AsyncSession, now: datetime, address: str | None = None) -> int:
    """Release the addresses of identities deleted more than ADDRESS_HOLD ago (only `address`, when given): the
    address moves to `former_address` and `address` becomes "released:<id>", which no mail or form can name."""
    conditions = [
        Identity.lifecycle == IdentityLifecycle.DELETED,
        Identity.released_at.is_(None),
        Identity.deleted_at <= now - ADDRESS_HOLD,
    ]
    if address is not None:
        conditions.append(Identity.address == address)
    result = await session.execute(
        update(Identity)
        .where(and_(*conditions))
        .values(
            former_address=Identity.address,
            address=RELEASED_PREFIX + cast(Identity.id, String),
            released_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class IdentityLifecycleService:
    def __init__(
        self, db: Database, notifier: Notifier, policy: Policy, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.policy = policy
        self.clock = clock

    async def _load(self, identity_id: int) -> Identity:
        async with self.db.session() as session:
            identity = await session.get(Identity, identity_id)
        if identity is None or identity.lifecycle == IdentityLifecycle.DELETED:
            raise NotFound("This identity no longer exists.")
        return identity

    async def disable(self, identity_id: int, *, actor: str) -> LifecycleResult:
        """Stop its sending: the gateway refuses its mail from now on. Replies still arrive and are forwarded.
        Raises NotPermitted (creator or manager) or NotFound."""
        return await self._switch(identity_id, actor, to=IdentityLifecycle.DISABLED)

    async def enable(self, identity_id: int, *, actor: str) -> LifecycleResult:
        """Let a disabled identity send again (if it is verified)."""
        return await self._switch(identity_id, actor, to=IdentityLifecycle.ACTIVE)

    async def _switch(self, identity_id: int, actor: str, *, to: IdentityLifecycle) -> LifecycleResult:
        identity = await self._load(identity_id)
        await self.policy.require(actor, identity, IdentityAction.DISABLE)
        now = self.clock()
        came_from = IdentityLifecycle.ACTIVE if to == IdentityLifecycle.DISABLED else IdentityLifecycle.DISABLED
        async with self.db.transaction() as session:
            won = await session.execute(
                update(Identity)
                .where(Identity.id == identity_id, Identity.lifecycle == came_from)
                .values(lifecycle=to, disabled_at=now if to == IdentityLifecycle.DISABLED else None, updated_at=now)
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                return LifecycleResult(Outcome.UNCHANGED, identity)
            change = LifecycleChange.DISABLED if to == IdentityLifecycle.DISABLED else LifecycleChange.ENABLED
            audit.record(session, actor=actor, action=f"identity.{change}", identity_id=identity_id)
            fresh = await session.get(Identity, identity_id, populate_existing=True)
        assert fresh is not None
        return LifecycleResult(Outcome.CHANGED, fresh, LifecycleEvent(change, actor, now))

    async def delete(self, identity_id: int, *, actor: str) -> LifecycleResult:
        """Delete the identity (see the module's docstring). Raises NotPermitted or NotFound."""
        identity = await self._load(identity_id)
        await self.policy.require(actor, identity, IdentityAction.DELETE)
        now = self.clock()
        async with self.db.transaction() as session:
            locked = await session.get(Identity, identity_id, with_for_update=True, populate_existing=True)
            if locked is None or locked.lifecycle == IdentityLifecycle.DELETED:
                raise NotFound("This identity no longer exists.")
            locked.lifecycle, locked.deleted_at, locked.updated_at = IdentityLifecycle.DELETED, now, now
            revoked = await session.execute(
                update(GatewayCredential)
                .where(GatewayCredential.identity_id == identity_id, GatewayCredential.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await self._stop_checks(session, identity_id, now)
            closed = await self._close_requests(session, identity_id, actor, now)
            audit.record(
                session,
                actor=actor,
                action="identity.deleted",
                identity_id=identity_id,
                address=locked.address,
                credentials_revoked=int(revoked.rowcount or 0),  # type: ignore[attr-defined]
                requests_closed=closed,
                address_held_until=(now + ADDRESS_HOLD).isoformat(),
            )
        event = LifecycleEvent(LifecycleChange.DELETED, actor, now, held_until=now + ADDRESS_HOLD)
        return LifecycleResult(Outcome.CHANGED, locked, event, revoked=int(revoked.rowcount or 0))  # type: ignore[attr-defined]

    @staticmethod
    async def _stop_checks(session: AsyncSession, identity_id: int, now: datetime) -> None:
        """Pending verification steps stop: no tracking wait runs out on a deleted identity."""
        await session.execute(
            update(VerificationStep)
            .where(VerificationStep.identity_id == identity_id, VerificationStep.status == StepStatus.PENDING)
            .values(
                status=StepStatus.NOT_RUN, token=None, deadline=None, detail="the identity was deleted", updated_at=now
            )
        )

    @staticmethod
    async def _close_requests(session: AsyncSession, identity_id: int, actor: str, now: datetime) -> list[int]:
        """Pending limit requests are closed (nothing left to decide) and a running time-boxed increase ends."""
        pending = list(
            (
                await session.scalars(
                    select(LimitRequest.id).where(
                        LimitRequest.identity_id == identity_id, LimitRequest.status == LimitRequestStatus.PENDING
                    )
                )
            ).all()
        )
        if pending:
            await session.execute(
                update(LimitRequest)
                .where(LimitRequest.id.in_(pending))
                .values(status=LimitRequestStatus.SUPERSEDED, decided_by=actor, decided_at=now)
            )
        await session.execute(
            update(LimitRequest)
            .where(
                LimitRequest.identity_id == identity_id,
                LimitRequest.until.is_not(None),
                LimitRequest.ended_at.is_(None),
            )
            .values(ended_at=now, ended_by="deleted")
        )
        return pending

    async def announce(self, result: LifecycleResult) -> None:
        """Tell the identity's channel (after the ack)."""
        if result.event is not None:
            await self.notifier.identity_lifecycle(result.identity, result.event)
            if result.event.change == LifecycleChange.DELETED:
                await self._retire_request_messages(result.identity)

    async def _retire_request_messages(self, identity: Identity) -> None:
        async with self.db.session() as session:
            closed = list(
                (
                    await session.scalars(
                        select(LimitRequest).where(
                            LimitRequest.identity_id == identity.id,
                            LimitRequest.status == LimitRequestStatus.SUPERSEDED,
                            LimitRequest.decided_at == identity.deleted_at,
                        )
                    )
                ).all()
            )
        for request in closed:
            await self.notifier.limit_request_closed(identity, request)

    async def release_expired(self) -> int:
        """Release the addresses whose hold ended (the sweep)."""
        async with self.db.transaction() as session:
            return await release_expired_holds(session, self.clock())

    async def holder(self, address: str) -> Identity | None:
        """The deleted identity holding `address`, if its hold has not ended."""
        now = self.clock()
        async with self.db.session() as session:
            return await session.scalar(
                select(Identity).where(
                    func.lower(Identity.address) == address.lower(),
                    Identity.lifecycle == IdentityLifecycle.DELETED,
                    receives(now),
                )
            )
