"""Time-boxed increases end to end: asked "until" a date (at most 90 days), approved with the evidence a manager
needs, reverted by themselves at the end exactly once with two bots on one database, or ended early by a manager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.sandbox import FakeSlack
from handlers.limits.ids import Limits as L
from models import AuditEvent, Identity, LimitRequest, SentRecipient, SlotState
from models.base import utcnow
from tests.conftest import CHANNEL, Bot, start_bot
from tests.gateway_helpers import make_identity
from tests.test_limits import ADDRESS, APPROVALS, approval_message, limits_modal, limits_of

MANAGERS = "U_MANAGER,U_MANAGER2"


@pytest.fixture
async def tbot(tmp_path: Path, database_url: str, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    bot = await start_bot(tmp_path, database_url, fake_slack, MANAGERS=MANAGERS, APPROVALS_CHANNEL=APPROVALS)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def ask_until(bot: Bot, hourly: str, daily: str, days: int | None) -> dict:
    view = await limits_modal(bot)
    bot.slack.type(view["id"], L.hourly_limit, hourly)
    bot.slack.type(view["id"], L.daily_limit, daily)
    if days is not None:
        bot.slack.type(view["id"], L.until, (utcnow().date() + timedelta(days=days)).isoformat())
    ack = await bot.slack.submit(view["id"])
    assert ack.status == 200
    return ack.body


async def sent_history(bot: Bot, identity: Identity) -> None:
    """Three days of sending: 30 recipients a day, 2 hard bounces."""
    now = utcnow()
    async with bot.db.transaction() as session:
        for day in range(3):
            for n in range(30):
                session.add(
                    SentRecipient(
                        identity_id=identity.id,
                        team_id=identity.team_id,
                        recipient=f"r{day}.{n}@customer.example.org",
                        recipient_key=f"r{day}.{n}@customer.example.org",
                        state=SlotState.SENT,
                        sent_at=now - timedelta(days=day, minutes=n),
                        bounced_at=now if (day, n) in ((0, 0), (1, 1)) else None,
                    )
                )


async def test_a_3_day_increase_reverts_by_itself_exactly_once_across_two_bots(
    tbot: Bot, tmp_path: Path, database_url: str, fake_slack: FakeSlack
) -> None:
    identity = await make_identity(tbot.db, ADDRESS)
    await sent_history(tbot, identity)

    # Bad ends are refused on the date input, nothing is asked.
    assert L.until in (await ask_until(tbot, "60", "240", 91))["errors"]
    assert L.until in (await ask_until(tbot, "60", "240", 0))["errors"]
    assert L.until in (await ask_until(tbot, "20", "100", 3))["errors"]  # lowering has no end

    mark = tbot.fake.mark()
    body = await ask_until(tbot, "60", "240", 3)
    assert body["response_action"] == "update" and "until" in str(body["view"])
    channel, ts = await approval_message(tbot, after=mark)
    request_text = str(tbot.fake.messages[(channel, ts)]["blocks"])
    # The evidence: use of the current limits over 7 days, bounce and complaint rates, health.
    assert "Last 7 days" in request_text and "Sent 90 emails" in request_text
    assert "Busiest day 30 of 200" in request_text
    assert "*Bounces* 2.2 % (2 of 90)" in request_text and "*Complaints* 0.0 %" in request_text
    assert "healthy" in request_text and "until <!date^" in request_text

    await tbot.slack.click_message(channel, ts, L.approve, user="U_MANAGER")
    await tbot.fake.wait_for("chat.update", lambda c: "approved" in c.args.get("text", ""), after=mark)
    assert await limits_of(tbot) == (60, 240)
    assert "End now" in str(tbot.fake.messages[(channel, ts)]["blocks"])

    # Its end comes: two bots sweep at once, one reverts, one message.
    async with tbot.db.transaction() as session:
        await session.execute(update(LimitRequest).values(until=utcnow() - timedelta(seconds=1)))
    second = await start_bot(tmp_path, database_url, fake_slack, MANAGERS=MANAGERS, APPROVALS_CHANNEL=APPROVALS)
    try:
        mark = tbot.fake.mark()
        ended = await asyncio.gather(
            tbot.runtime.services.time_boxes.end_expired(), second.runtime.services.time_boxes.end_expired()
        )
        assert sum(ended) <= 1  # (the bots' own sweeps may have got there first: they run every few seconds)
        await tbot.fake.wait_for("chat.postMessage", lambda c: "increase of" in c.args.get("text", ""))
        assert await limits_of(tbot) == (40, 200)
        await asyncio.gather(
            tbot.runtime.services.time_boxes.end_expired(), second.runtime.services.time_boxes.end_expired()
        )
    finally:
        await second.slack.close()
        await second.runtime.stop()
    ended_messages = [
        c for c in tbot.fake.calls_to("chat.postMessage") if "increase of" in c.args.get("text", "") and c.ok
    ]
    assert len(ended_messages) == 1 and ended_messages[0].args["channel"] == CHANNEL
    assert "went back" in str(tbot.fake.messages[(channel, ts)]["blocks"])
    async with tbot.db.session() as session:
        [request] = list(await session.scalars(select(LimitRequest).where(LimitRequest.status == "approved")))
    assert request.ended_by == "expiry" and request.ended_at is not None
    async with tbot.db.session() as session:
        reverts = list(await session.scalars(select(AuditEvent).where(AuditEvent.action == "limits.increase_ended")))
    assert len(reverts) == 1


async def test_a_manager_ends_an_increase_early_from_the_request(tbot: Bot) -> None:
    await make_identity(tbot.db, ADDRESS)
    mark = tbot.fake.mark()
    await ask_until(tbot, "50", "220", 30)
    channel, ts = await approval_message(tbot, after=mark)
    await tbot.slack.click_message(channel, ts, L.approve, user="U_MANAGER")
    await tbot.fake.wait_for("chat.update", lambda c: "approved" in c.args.get("text", ""), after=mark)
    assert await limits_of(tbot) == (50, 220)

    # Not a manager: nothing changes.
    mark = tbot.fake.mark()
    await tbot.slack.click_message(channel, ts, L.end_increase, user="U_OTHER")
    refusal = await tbot.fake.wait_for("chat.postEphemeral", after=mark)
    assert "Only managers can end an increase early" in refusal.args["text"]
    assert await limits_of(tbot) == (50, 220)

    await tbot.slack.click_message(channel, ts, L.end_increase, user="U_MANAGER2")
    await tbot.fake.wait_for("chat.postMessage", lambda c: "ended" in c.args.get("text", ""), after=mark)
    assert await limits_of(tbot) == (40, 200)
    assert "Ended early by <@U_MANAGER2>" in str(tbot.fake.messages[(channel, ts)]["blocks"])
    assert "End now" not in str(tbot.fake.messages[(channel, ts)]["blocks"])
