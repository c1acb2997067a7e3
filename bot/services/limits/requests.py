"""Opening a limit request: the one place a request row (and its audit event) is created, whether it comes from
the *New identity* form or from *Change limits*."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit
from bot.services.limits.evidence import gather
from models import Identity, LimitRequest


async def open_request(
    session: AsyncSession,
    identity: Identity,
    *,
    actor: str,
    hourly: int,
    daily: int,
    reason: str,
    now: datetime,
    superseded: Sequence[LimitRequest] = (),
    until: datetime | None = None,
) -> LimitRequest:
    """A pending request to raise `identity` (already flushed) to hourly/daily (until `until`, when time-boxed), in
    the caller's transaction, with the evidence a manager decides on."""
    request = LimitRequest(
        until=until,
        evidence=await gather(session, identity, now),
        identity_id=identity.id,
        requested_by=actor,
        previous_hourly=identity.hourly_limit,
        previous_daily=identity.daily_limit,
        requested_hourly=hourly,
        requested_daily=daily,
        reason=reason,
        created_at=now,
    )
    session.add(request)
    await session.flush()
    audit.record(
        session,
        actor=actor,
        action="limits.requested",
        identity_id=identity.id,
        request_id=request.id,
        hourly=hourly,
        daily=daily,
        reason=reason,
        superseded=[r.id for r in superseded],
        until=until.isoformat() if until else None,
    )
    return request
