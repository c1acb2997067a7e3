"""Processing never on the event loop and never forever: hostile structures are judged in a worker process within
limits and still reach the forwarding address; a worker that hangs or dies is replaced; failed processing is retried
with backoff and parked after a few attempts, visibly (logged once, told to OPS_CHANNEL)."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

import aiohttp
import pytest
from sqlalchemy import select

from bot.services.incoming import IncomingMail, JudgePool
from bot.services.incoming.forwarding import ForwardTarget, Original, build_forward
from bot.services.incoming.judging import Job, Verdict
from bot.services.incoming.workers import JudgeFailed
from bot.services.notifier import NullNotifier, OperatorEvent, OperatorNotice
from models import Database, InboundMessage, MessageKind
from tests.test_gateway_recipients import eventually
from tests.test_inbound_door import ADDRESS, OPS, Door, door  # noqa: F401
from tests.test_incoming import DOMAINS, LEAD_REPLY, Calls, identity, store  # noqa: F401

FORWARD_TIMEOUT = 60.0


def many_parts(n: int) -> bytes:
    head = (
        f"From: Pat <pat@prospect.example>\r\nTo: {ADDRESS}\r\nSubject: Re: many parts\r\n"
        "Message-ID: <many@prospect.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYes, let's talk.\r\n"
    )
    return (head + "--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" * n + "--B--\r\n").encode()


def deep(n: int) -> bytes:
    raw = (
        f"From: Pat <pat@prospect.example>\r\nTo: {ADDRESS}\r\nSubject: Re: deep\r\nMessage-ID: <deep@prospect.example>"
        "\r\nMIME-Version: 1.0\r\n"
    )
    raw += "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(n))
    raw += "Content-Type: text/plain\r\n\r\nDeeply interested.\r\n"
    raw += "".join(f"--b{i}--\r\n" for i in reversed(range(n)))
    return raw.encode()


async def test_30000_part_and_1500_deep_leads_are_forwarded_and_slack_and_healthz_stay_fast(door: Door) -> None:
    for raw, subject in ((many_parts(30_000), "many parts"), (deep(1_500), "deep")):
        sending = asyncio.ensure_future(door.send(raw))
        forwarded = asyncio.ensure_future(
            door.mailbox.wait_for(lambda m, s=subject: s in str(m["Subject"]), timeout=FORWARD_TIMEOUT)
        )
        async with aiohttp.ClientSession() as http:
            while not forwarded.done():
                async with asyncio.timeout(1):  # Slack's ack and /healthz each answer within a second
                    ack = await door.bot.slack.command("help")
                    async with http.get(f"{door.bot.runtime.http_url}/healthz") as health:
                        assert health.status == 200
                assert ack.status == 200
                await asyncio.sleep(0.05)
        assert (await sending).code == 250
        forward = await forwarded
        [attachment] = list(forward.iter_attachments())
        assert attachment.get_payload(decode=True) == raw  # the original, untouched

    async def outcomes() -> list[tuple[str | None, int, object]]:
        async with door.bot.db.session() as session:
            rows = list(await session.scalars(select(InboundMessage).order_by(InboundMessage.id)))
        return [(r.classification, r.attempts, r.parked_at) for r in rows]

    # The forward goes out before its row records the outcome: wait (bounded) for the record, not just the forward.
    await eventually(outcomes, [("lead", 0, None), ("lead", 0, None)])


class FailingJudge:
    """A judge that always fails, as a poison message would."""

    def __init__(self) -> None:
        self.calls = 0

    async def judge(self, job: Job) -> Verdict:
        self.calls += 1
        raise RecursionError("maximum recursion depth exceeded")

    async def close(self) -> None:
        return None


class Notices(NullNotifier):
    def __init__(self) -> None:
        self.notices: list[OperatorNotice] = []

    async def operator_notice(self, notice: OperatorNotice) -> None:
        self.notices.append(notice)


async def test_a_poison_message_is_retried_with_backoff_then_parked_visibly(
    db: Database, identity: object, caplog: pytest.LogCaptureFixture
) -> None:
    judge, notices, calls = FailingJudge(), Notices(), Calls()
    incoming = IncomingMail(
        db, DOMAINS, on_tokens=calls.on_tokens, forward=calls.forward, notifier=notices, judge=judge,
        retry_delays=(0.0, 0.0, 0.0),
    )  # fmt: skip
    message_id = await store(db, LEAD_REPLY, [ADDRESS.replace("jane@", "jane.doe@")])
    for _ in range(10):
        await incoming.process_pending()
    assert judge.calls == incoming.max_attempts == 4  # then never again
    async with db.session() as session:
        row = await session.get(InboundMessage, message_id)
    assert row is not None and row.parked_at is not None and row.processed_at is None and row.attempts == 4
    assert "RecursionError" in (row.last_error or "")
    assert caplog.text.count("parked after 4 failed attempts") == 1
    assert "Traceback" not in caplog.text
    [notice] = notices.notices
    assert (notice.event, notice.inbound_id, notice.attempts) == (OperatorEvent.MESSAGE_PARKED, message_id, 4)

    # With real delays, a failed message waits for its retry instead of being taken again at once.
    waiting = IncomingMail(db, DOMAINS, on_tokens=calls.on_tokens, forward=calls.forward, judge=FailingJudge())
    other = await store(db, LEAD_REPLY.replace(b"lead-1@", b"lead-2@"), [ADDRESS])
    with pytest.raises(RecursionError):
        await waiting.process(other)
    assert other not in await waiting.due()


async def test_the_judge_pool_kills_a_slow_worker_replaces_a_dead_one_and_stops_cleanly() -> None:
    target = ForwardTarget("Jane", ADDRESS, "leads@acme.example.com", ADDRESS)
    job = Job(Original(1, LEAD_REPLY, "k" * 128, datetime.now(UTC)), "sam@customer.example.org", target)
    pool = JudgePool(1, timeout=30)
    try:
        assert (await pool.judge(job)).classification.kind == MessageKind.LEAD
        [first] = pool.pids
        os.kill(first, signal.SIGKILL)  # killed while idle: replaced before the next job
        async with asyncio.timeout(10):
            while first in pool.pids:  # until the kernel has reaped it
                await asyncio.sleep(0.01)
        assert (await pool.judge(job)).forward is not None
        [second] = pool.pids
        assert second != first

        os.kill(second, signal.SIGSTOP)  # a worker that hangs: stopped by the timeout, and the job fails
        pool.timeout = 0.5
        with pytest.raises(JudgeFailed, match="longer than"):
            await pool.judge(job)
        assert pool.pids == []
        pool.timeout = 30
        assert (await pool.judge(job)).classification.kind == MessageKind.LEAD
        [third] = pool.pids
        assert third not in (first, second)
    finally:
        await pool.close()
    assert pool.pids == []
    with pytest.raises(ProcessLookupError):
        os.kill(third, 0)


def test_a_forward_built_twice_from_the_same_stored_message_is_the_same_message() -> None:
    target = ForwardTarget("Jane", ADDRESS, "leads@acme.example.com", ADDRESS)
    original = Original(9, LEAD_REPLY, "a1" * 64, datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    first, second = build_forward(target, original), build_forward(target, original)
    parse = BytesParser(policy=policy.default).parsebytes
    assert parse(first)["Message-ID"] == parse(second)["Message-ID"]
    assert first == second
    other = Original(10, LEAD_REPLY, "b2" * 64, original.received_at)
    assert parse(build_forward(target, other))["Message-ID"] != parse(first)["Message-ID"]
