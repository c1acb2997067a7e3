"""What a manager needs to decide a limit increase, gathered when it is asked for and kept with the request: how the
identity used its current limits over the last 7 days, how often they held it back, its bounce and complaint rates,
and its health. Plain JSON (the request's `evidence` column); the Slack side words it."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.rates import RATE_WINDOW, Rates
from models import Identity, LimitNotice, SentRecipient, SlotState

EVIDENCE_DAYS = 7


async def gather(session: AsyncSession, identity: Identity, now: datetime) -> dict[str, Any]:
    """The evidence for a request about `identity`, as of `now`."""
    since = now - timedelta(days=EVIDENCE_DAYS)
    sent_at = list(
        (
            await session.scalars(
                select(SentRecipient.sent_at).where(
                    SentRecipient.identity_id == identity.id, SentRecipient.sent_at > since
                )
            )
        ).all()
    )
    # Days counted back from now (day 0 = the last 24 hours), hours by the clock.
    per_day = Counter(min(EVIDENCE_DAYS - 1, int((now - t).total_seconds() // 86400)) for t in sent_at)
    per_hour = Counter(t.replace(minute=0, second=0, microsecond=0) for t in sent_at)
    deferred = await session.scalar(
        select(func.coalesce(func.sum(LimitNotice.deferred), 0)).where(
            LimitNotice.identity_id == identity.id, LimitNotice.opened_at > since
        )
    )
    rates = await _rates(session, identity.id, now - RATE_WINDOW)
    days = [per_day.get(d, 0) for d in reversed(range(EVIDENCE_DAYS))]  # oldest first
    return {
        "hourly_limit": identity.hourly_limit,
        "daily_limit": identity.daily_limit,
        "sent": len(sent_at),
        "days": days,
        "busiest_day": max(days),
        "busiest_hour": max(per_hour.values(), default=0),
        "days_at_limit": sum(1 for n in days if n >= identity.daily_limit),
        "hours_at_limit": sum(1 for n in per_hour.values() if n >= identity.hourly_limit),
        "deferred": int(deferred or 0),
        "rates": {"sent": rates.sent, "hard_bounces": rates.hard_bounces, "complaints": rates.complaints},
        "health": str(identity.health),
        "health_reason": identity.health_reason or "",
    }


async def _rates(session: AsyncSession, identity_id: int, since: datetime) -> Rates:
    """As services/rates.py counts them, in the caller's session."""
    sent, bounced, complained = (
        await session.execute(
            select(func.count(), func.count(SentRecipient.bounced_at), func.count(SentRecipient.complained_at)).where(
                SentRecipient.identity_id == identity_id,
                SentRecipient.state == SlotState.SENT,
                SentRecipient.sent_at > since,
            )
        )
    ).one()
    return Rates(int(sent or 0), int(bounced or 0), int(complained or 0))


def rates_of(evidence: dict[str, Any]) -> Rates:
    r = evidence.get("rates") or {}
    return Rates(int(r.get("sent", 0)), int(r.get("hard_bounces", 0)), int(r.get("complaints", 0)))
