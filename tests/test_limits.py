"""Changing limits and managers' approvals end to end through the fake Slack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.sandbox import FakeSlack
from handlers.limits.ids import Limits as L
from models import AuditEvent, Identity, LimitRequest, LimitRequestStatus, SentRecipient
from models.base import utcnow
from tests.conftest import CHANNEL, LEAD, PLATFORM_DOMAIN, Bot, start_bot

APPROVALS = "C_APPROVALS"
ADDRESS = f"jane.doe@{PLATFORM_DOMAIN}"


@pytest.fixture
async def lbot(tmp_path: Path, database_url: str, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    bot = await start_bot(
        tmp_path, database_url, fake_slack, MANAGERS="U_MANAGER,U_MANAGER2", APPROVALS_CHANNEL=APPROVALS
    )
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def create(bot: Bot, **fields: str) -> Identity:
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=ADDRESS, **fields)
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity).where(Identity.address == ADDRESS))
    assert identity is not None
    return identity


async def limits_modal(bot: Bot, *, user: str = LEAD) -> dict:
    mark = bot.fake.mark()
    await bot.slack.command(f"limits {ADDRESS}", user=user)
    return await bot.loaded_form(mark, L.callback)


async def ask(bot: Bot, hourly: str, daily: str, reason: str = "Campaign season", *, user: str = LEAD) -> dict:
    view = await limits_modal(bot, user=user)
    bot.slack.type(view["id"], L.hourly_limit, hourly)
    bot.slack.type(view["id"], L.daily_limit, daily)
    bot.slack.type(view["id"], L.reason, reason)
    ack = await bot.slack.submit(view["id"], user=user)
    assert ack.status == 200
    return ack.body


async def approval_message(bot: Bot, *, after: int = 0, channel: str = APPROVALS) -> tuple[str, str]:
    call = await bot.fake.wait_for(
        "chat.postMessage", lambda c: c.ok and "Limit increase request" in c.args.get("text", ""), after=after
    )
    assert call.response["channel"] == channel
    return call.response["channel"], call.response["ts"]


async def limits_of(bot: Bot) -> tuple[int, int]:
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity).where(Identity.address == ADDRESS))
    assert identity is not None
    return identity.hourly_limit, identity.daily_limit


async def test_increase_approved_by_a_manager_applies_at_once(lbot: Bot) -> None:
    bot = lbot
    await create(bot)
    mark = bot.fake.mark()
    answer = await ask(bot, "60", "250")
    assert answer["response_action"] == "update" and "went to the managers" in str(answer["view"])
    channel, ts = await approval_message(bot, after=mark)
    request_msg = bot.fake.messages[(channel, ts)]
    text = str(request_msg["blocks"])
    assert ADDRESS in text and f"<@{LEAD}>" in text and "Campaign season" in text
    assert "40 emails (recipients) per hour · 200 per day → *60 emails (recipients) per hour · 250 per day*" in text
    assert "Approve" in text and "Deny" in text and "confirm" in text
    assert await limits_of(bot) == (40, 200), "nothing changes before a manager decides"

    mark = bot.fake.mark()
    ack = await bot.slack.click_message(channel, ts, L.approve, user="U_MANAGER")
    assert ack.status == 200
    update_call = await bot.fake.wait_for("chat.update", lambda c: c.args["ts"] == ts, after=mark)
    decided = str(update_call.args["blocks"])
    assert "Approved" in decided and "<@U_MANAGER>" in decided and "<!date^" in decided
    assert "limit-request-approve" not in decided, "the buttons are gone once decided"
    told = await bot.fake.wait_for("chat.postMessage", lambda c: c.args["channel"] == CHANNEL, after=mark)
    assert "approved" in told.args["text"] and "60 emails (recipients) per hour · 250 per day" in told.args["text"]
    assert await limits_of(bot) == (60, 250)
    async with bot.db.session() as session:
        request = await session.scalar(select(LimitRequest))
        assert request is not None and (request.status, request.decided_by) == (
            LimitRequestStatus.APPROVED,
            "U_MANAGER",
        )
        actions = [e.action for e in (await session.scalars(select(AuditEvent))).all()]
    assert actions.count("limits.approved") == 1 and "limits.requested" in actions


async def test_increase_denied_keeps_the_limits(lbot: Bot) -> None:
    bot = lbot
    await create(bot)
    mark = bot.fake.mark()
    await ask(bot, "50", "220")
    channel, ts = await approval_message(bot, after=mark)
    mark = bot.fake.mark()
    await bot.slack.click_message(channel, ts, L.deny, user="U_MANAGER2")
    update_call = await bot.fake.wait_for("chat.update", lambda c: c.args["ts"] == ts, after=mark)
    assert "Denied" in str(update_call.args["blocks"]) and "<@U_MANAGER2>" in str(update_call.args["blocks"])
    assert await limits_of(bot) == (40, 200)


async def test_a_non_manager_click_changes_nothing(lbot: Bot) -> None:
    bot = lbot
    await create(bot)
    mark = bot.fake.mark()
    await ask(bot, "60", "250")
    channel, ts = await approval_message(bot, after=mark)
    mark = bot.fake.mark()
    await bot.slack.click_message(channel, ts, L.approve, user="U_OTHER")
    note = await bot.fake.wait_for("chat.postEphemeral", after=mark)
    assert note.args["user"] == "U_OTHER" and "Only managers" in note.args["text"]
    assert await limits_of(bot) == (40, 200)
    assert not [c for c in bot.fake.calls[mark:] if c.method == "chat.update"]
    async with bot.db.session() as session:
        assert await session.scalar(select(LimitRequest.status)) == LimitRequestStatus.PENDING


async def test_a_manager_cannot_decide_their_own_request(lbot: Bot) -> None:
    bot = lbot
    await create(
        bot,
    )
    # A manager may change any identity's limits, but not approve their own request.
    mark = bot.fake.mark()
    await ask(bot, "60", "250", user="U_MANAGER")
    channel, ts = await approval_message(bot, after=mark)
    mark = bot.fake.mark()
    await bot.slack.click_message(channel, ts, L.approve, user="U_MANAGER")
    note = await bot.fake.wait_for("chat.postEphemeral", after=mark)
    assert "own request" in note.args["text"]
    assert await limits_of(bot) == (40, 200)


async def test_two_managers_at_the_same_moment_one_decision(lbot: Bot) -> None:
    bot = lbot
    await create(bot)
    mark = bot.fake.mark()
    await ask(bot, "60", "250")
    channel, ts = await approval_message(bot, after=mark)
    mark = bot.fake.mark()
    await asyncio.gather(
        bot.slack.click_message(channel, ts, L.approve, user="U_MANAGER"),
        bot.slack.click_message(channel, ts, L.deny, user="U_MANAGER2"),
    )
    loser = await bot.fake.wait_for("chat.postEphemeral", after=mark)
    assert "already" in loser.args["text"] and "<!date^" in loser.args["text"]
    await bot.fake.wait_for("chat.update", lambda c: c.args["ts"] == ts, after=mark)
    async with bot.db.session() as session:
        request = await session.scalar(select(LimitRequest))
        decisions = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.in_(["limits.approved", "limits.denied"]))
        )
    assert request is not None and request.status in (LimitRequestStatus.APPROVED, LimitRequestStatus.DENIED)
    assert decisions == 1
    assert loser.args["user"] != request.decided_by
    expected = (60, 250) if request.status == LimitRequestStatus.APPROVED else (40, 200)
    assert await limits_of(bot) == expected


@pytest.mark.parametrize(
    ("hourly", "daily", "block", "message"),
    [
        ("40", "251", L.daily_limit, "at most 250"),
        ("120", "100", L.hourly_limit, "can't be more than the daily limit"),
        ("0", "100", L.hourly_limit, "at least 1"),
        ("ten", "100", L.hourly_limit, "whole number"),
    ],
)
async def test_invalid_limits_are_refused_on_the_right_input(
    lbot: Bot, hourly: str, daily: str, block: str, message: str
) -> None:
    bot = lbot
    await create(bot)
    answer = await ask(bot, hourly, daily)
    assert answer["response_action"] == "errors"
    assert message in answer["errors"][block]
    assert await limits_of(bot) == (40, 200)


async def test_lowering_applies_at_once_and_supersedes_a_pending_increase(lbot: Bot) -> None:
    bot = lbot
    await create(bot)
    mark = bot.fake.mark()
    await ask(bot, "60", "250")
    channel, ts = await approval_message(bot, after=mark)
    mark = bot.fake.mark()
    answer = await ask(bot, "20", "100", "Warming up slowly")
    assert answer["response_action"] == "update" and "starting now" in str(answer["view"])
    assert await limits_of(bot) == (20, 100)
    superseded = await bot.fake.wait_for("chat.update", lambda c: c.args["ts"] == ts, after=mark)
    assert "Superseded" in str(superseded.args["blocks"])
    told = await bot.fake.wait_for("chat.postMessage", lambda c: c.args["channel"] == CHANNEL, after=mark)
    assert "20 emails (recipients) per hour · 100 per day" in told.args["text"]
    assert L.approve not in str(superseded.args["blocks"]), "a superseded request can't be approved any more"
    async with bot.db.session() as session:
        statuses = sorted((await session.scalars(select(LimitRequest.status))).all())
    assert statuses == ["superseded"]


async def test_requests_from_the_new_identity_form_reach_managers_by_dm(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack
) -> None:
    fake_slack.add_usergroup("S_MANAGERS", ["U_MANAGER", "U_MANAGER2"])
    bot = await start_bot(tmp_path, sqlite_url, fake_slack, MANAGERS="S_MANAGERS")
    try:
        mark = bot.fake.mark()
        await create(bot, hourly_limit="60", daily_limit="250")
        dms = set()
        for _ in range(2):
            call = await bot.fake.wait_for(
                "chat.postMessage",
                lambda c: "Limit increase request" in c.args.get("text", "") and c.args["channel"] not in dms,
                after=mark,
            )
            dms.add(call.args["channel"])
        assert dms == {"U_MANAGER", "U_MANAGER2"}
        # A member of the group is a manager.
        channel_ts = [
            (c.response["channel"], c.response["ts"])
            for c in bot.fake.calls
            if c.method == "chat.postMessage" and "Limit increase request" in c.args.get("text", "")
        ]
        mark = bot.fake.mark()
        await bot.slack.click_message(*channel_ts[0], L.approve, user="U_MANAGER2")
        # Both DMs show the decision.
        updated: set[str] = set()
        for _ in range(2):
            call = await bot.fake.wait_for(
                "chat.update", lambda c: c.args["channel"] not in updated and "Approved" in str(c.args), after=mark
            )
            updated.add(call.args["channel"])
        assert len(updated) == 2
        assert await limits_of(bot) == (60, 250)
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


async def test_show_reports_usage_and_the_next_free_slot(lbot: Bot) -> None:
    bot = lbot
    identity = await create(bot)
    now = utcnow()
    async with bot.db.transaction() as session:
        for i in range(40):
            session.add(
                SentRecipient(
                    identity_id=identity.id,
                    team_id=identity.team_id,
                    recipient=f"lead{i}@customer.example.org",
                    recipient_key=f"lead{i}@customer.example.org",
                    sent_at=now - timedelta(minutes=59) + timedelta(seconds=i),
                    state="sent",
                )
            )
    n = len(bot.fake.responses)
    await bot.slack.command(f"show {ADDRESS}")
    shown = await bot.fake.wait_for_response(after=n)
    text = str(shown["blocks"])
    assert "Sent in the last hour:* 40 of 40 emails (recipients)" in text
    assert "Sent in the last 24 hours:* 40 of 200 emails (recipients)" in text
    assert "hourly limit is reached; the next email can go <!date^" in text
    assert "Not run yet" in text


async def test_a_request_slack_could_not_take_is_posted_later_and_only_once(lbot: Bot) -> None:
    bot = lbot
    identity = await create(bot)
    limits = bot.runtime.services.limits
    change = await limits.change(identity.id, "60", "250", "Q4", actor=LEAD)
    assert change.outcome == "requested" and change.request is not None
    mark = bot.fake.mark()
    bot.fake.inject_error("chat.postMessage", "channel_not_found", times=2)  # the request, then the notice
    await limits.post_request(change.request.id)
    assert [c.ok for c in bot.fake.calls[mark:] if c.method == "chat.postMessage"] == [False, False]
    # What the background sweep does once Slack takes messages again: two sweeps at once post it once.
    await asyncio.gather(limits.post_unposted(older_than=timedelta(0)), limits.post_unposted(older_than=timedelta(0)))
    posted = [
        c
        for c in bot.fake.calls[mark:]
        if c.ok and c.method == "chat.postMessage" and "Limit increase request" in c.args.get("text", "")
    ]
    assert len(posted) == 1 and posted[0].response["channel"] == APPROVALS
    assert await limits.post_unposted(older_than=timedelta(0)) == 0
    async with bot.db.session() as session:
        stored = await session.get(LimitRequest, change.request.id)
    assert stored is not None and stored.messages == [{"channel": APPROVALS, "ts": posted[0].response["ts"]}]


async def test_a_decision_records_the_message_it_was_made_in(lbot: Bot) -> None:
    # The process posting the request died before recording where it went: the message a manager decides in
    # must still be stored, so the decision can be shown there (and later updates reach it).
    bot = lbot
    identity = await create(bot)
    limits = bot.runtime.services.limits
    change = await limits.change(identity.id, "60", "250", "Q4", actor=LEAD)
    assert change.request is not None
    mark = bot.fake.mark()
    await limits.post_request(change.request.id)
    channel, ts = await approval_message(bot, after=mark)
    async with bot.db.transaction() as session:
        request = await session.get(LimitRequest, change.request.id)
        assert request is not None and request.messages == [{"channel": channel, "ts": ts}]
        request.messages = []
    await bot.slack.click_message(channel, ts, L.approve, user="U_MANAGER")
    await bot.fake.wait_for("chat.update", lambda c: c.args["ts"] == ts, after=mark)
    async with bot.db.session() as session:
        stored = await session.get(LimitRequest, change.request.id)
    assert stored is not None and stored.status == LimitRequestStatus.APPROVED
    assert stored.messages == [{"channel": channel, "ts": ts}]
