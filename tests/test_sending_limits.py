"""The per-identity sliding window on SQLite and PostgreSQL: one slot per recipient. Time moves by an injected clock,
never by sleeping."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.services.errors import NotFound
from bot.services.gateway.window import Delivered, SendingLimits
from models import Database, Identity, SentRecipient
from tests.gateway_helpers import Clock, make_identity


async def sent_rows(db: Database, identity_id: int) -> list[SentRecipient]:
    async with db.session() as session:
        result = await session.execute(
            select(SentRecipient).where(SentRecipient.identity_id == identity_id).order_by(SentRecipient.id)
        )
        return list(result.scalars())


def to(n: int = 0) -> str:
    return f"lead{n}@customer.example.org"


async def test_hourly_limit_allows_exactly_the_limit_then_refuses_until_the_first_send_leaves(db: Database) -> None:
    identity = await make_identity(db, "jane@acme.example.com", hourly=40, daily=200)
    clock = Clock()
    limits = SendingLimits(db, clock=clock)
    first = clock.now

    decisions = []
    for _ in range(40):
        decisions.append(await limits.reserve(identity, to()))
        clock.advance(seconds=10)
    assert all(d.allowed and d.reservation_id is not None for d in decisions)
    assert len({d.reservation_id for d in decisions}) == 40
    assert decisions[-1].sent_last_hour == 40

    refused = await limits.reserve(identity, to())
    assert not refused.allowed and refused.reservation_id is None
    assert (refused.limit, refused.limit_value) == ("hourly", 40)
    assert refused.retry_at == first + timedelta(hours=1)
    assert (refused.sent_last_hour, refused.sent_last_day) == (40, 40)
    assert len(await sent_rows(db, identity.id)) == 40

    # One second before the first send leaves the window: still full. At the instant it leaves: one slot.
    clock.now = first + timedelta(seconds=3599)
    assert not (await limits.reserve(identity, to())).allowed
    clock.now = first + timedelta(seconds=3600)
    again = await limits.reserve(identity, to())
    assert again.allowed and again.sent_last_hour == 40 and again.sent_last_day == 41
    # ... and only one: the second send of the first hour is still inside.
    blocked = await limits.reserve(identity, to())
    assert not blocked.allowed and blocked.retry_at == first + timedelta(seconds=3610)


async def test_daily_limit_holds_across_hours(db: Database) -> None:
    identity = await make_identity(db, "daily@acme.example.com", hourly=40, daily=50)
    clock = Clock()
    limits = SendingLimits(db, clock=clock)
    first = clock.now

    for _ in range(40):
        assert (await limits.reserve(identity, to())).allowed
    clock.advance(hours=1, seconds=1)
    for _ in range(10):
        assert (await limits.reserve(identity, to())).allowed
    refused = await limits.reserve(identity, to())
    assert not refused.allowed
    assert (refused.limit, refused.limit_value) == ("daily", 50)
    assert refused.retry_at == first + timedelta(days=1)
    assert (refused.sent_last_hour, refused.sent_last_day) == (10, 50)

    # Hours later, the hourly window is empty but the day is still full.
    clock.advance(hours=10)
    still = await limits.reserve(identity, to())
    assert not still.allowed and still.limit == "daily" and still.sent_last_hour == 0
    # The first 40 leave the day window together: 40 slots free again (and the hourly limit applies).
    clock.now = first + timedelta(days=1)
    assert (await limits.reserve(identity, to())).allowed


async def test_when_both_are_full_the_limit_that_frees_last_is_reported(db: Database) -> None:
    identity = await make_identity(db, "both@acme.example.com", hourly=5, daily=5)
    clock = Clock()
    limits = SendingLimits(db, clock=clock)
    for _ in range(5):
        assert (await limits.reserve(identity, to())).allowed
    refused = await limits.reserve(identity, to())
    assert (refused.limit, refused.retry_at) == ("daily", clock.now + timedelta(days=1))


async def test_release_gives_the_slot_back_and_settle_keeps_delivered_ones(db: Database) -> None:
    identity = await make_identity(db, "release@acme.example.com", hourly=2, daily=10)
    limits = SendingLimits(db, clock=Clock())
    one = await limits.reserve(identity, "Ann+News@Customer.example.org")
    two = await limits.reserve(identity, to(2))
    assert one.reservation_id and two.reservation_id
    assert not (await limits.reserve(identity, to(3))).allowed

    await limits.settle([Delivered(one.reservation_id, "<m1@test>", "a" * 20)], [two.reservation_id])
    rows = await sent_rows(db, identity.id)
    assert [(r.id, r.state, r.recipient, r.recipient_key, r.message_id, r.verp_token) for r in rows] == [
        (one.reservation_id, "sent", "Ann+News@Customer.example.org", "ann@customer.example.org", "<m1@test>", "a" * 20)
    ]

    three = await limits.reserve(identity, to(3))
    assert three.allowed and three.sent_last_hour == 2
    assert not (await limits.reserve(identity, to(4))).allowed
    assert three.reservation_id is not None
    await limits.release([three.reservation_id])
    assert (await limits.reserve(identity, to(4))).allowed


async def test_usage_reports_counts_and_the_next_free_slot(db: Database) -> None:
    identity = await make_identity(db, "usage@acme.example.com", hourly=3, daily=10)
    other = await make_identity(db, "other@acme.example.com", hourly=3, daily=10)
    clock = Clock()
    limits = SendingLimits(db, clock=clock)

    empty = await limits.usage(identity.id)
    assert (empty.allowed, empty.sent_last_hour, empty.sent_last_day, empty.retry_at) == (True, 0, 0, None)

    first = clock.now
    for _ in range(3):
        await limits.reserve(identity, to())
        clock.advance(minutes=5)
    await limits.reserve(other, to())  # another identity's sends do not count

    full = await limits.usage(identity.id)
    assert not full.allowed and full.reservation_id is None
    assert (full.limit, full.limit_value, full.retry_at) == ("hourly", 3, first + timedelta(hours=1))
    assert (full.sent_last_hour, full.sent_last_day) == (3, 3)
    assert len(await sent_rows(db, identity.id)) == 3  # usage reserved nothing

    clock.now = first + timedelta(hours=2)
    later = await limits.usage(identity.id)
    assert (later.allowed, later.sent_last_hour, later.sent_last_day) == (True, 0, 3)

    ghost = Identity(id=999_999, team_id="T0TEST")
    with pytest.raises(NotFound):
        await limits.usage(999_999)
    with pytest.raises(NotFound):
        await limits.reserve(ghost, to())


async def test_lowering_the_limit_below_the_count_frees_a_slot_only_when_enough_sends_leave(db: Database) -> None:
    identity = await make_identity(db, "lowered@acme.example.com", hourly=10, daily=10)
    clock = Clock()
    limits = SendingLimits(db, clock=clock)
    first = clock.now
    for _ in range(6):
        await limits.reserve(identity, to())
        clock.advance(minutes=1)
    async with db.transaction() as session:
        from models import Identity

        row = await session.get(Identity, identity.id)
        assert row is not None
        row.hourly_limit = 4
    refused = await limits.reserve(identity, to())
    # 6 sends against a limit of 4: a slot frees when the 3rd oldest leaves.
    assert refused.limit == "hourly" and refused.retry_at == first + timedelta(minutes=2, hours=1)


async def test_concurrent_reservations_never_exceed_the_limit(db: Database) -> None:
    """Many reservations at once through separate connections (the cross-process case is in test_gateway.py)."""
    identity = await make_identity(db, "race@acme.example.com", hourly=40, daily=200)
    limits = SendingLimits(db, clock=Clock())
    decisions = await asyncio.gather(*(limits.reserve(identity, to()) for _ in range(60)))
    assert sum(d.allowed for d in decisions) == 40
    assert all(d.limit == "hourly" for d in decisions if not d.allowed)
    async with db.session() as session:
        count = await session.scalar(select(func.count()).select_from(SentRecipient))
    assert count == 40
