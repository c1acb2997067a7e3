"""The limits count recipients, and a message is never sent twice to anyone: slots are reserved at RCPT (452 over
the limit), the mailer hears 250 once any recipient was accepted upstream, recipients the upstream refused give
their slot back and are reported by a DSN to the return path. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from email import message_from_bytes
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import func, select

from bot.mail.domains import PlatformDomains
from bot.mail.outbound import MailSender
from bot.services.gateway import DeliveryReports
from bot.services.incoming.rules import classify
from models import Database, MessageKind, SentRecipient, SlotState
from tests.conftest import TEAM, Bot, start_bot
from tests.gateway_helpers import TEST_PLATFORM_DOMAIN, make_identity, message_bytes
from tests.test_gateway import SENDER, TO, Rig, connect, sent_count, start_rig

GOOD = "good@customer.example.org"
BAD = "nobody@customer.example.org"
DOMAINS = PlatformDomains(TEST_PLATFORM_DOMAIN, TEST_PLATFORM_DOMAIN)


def outbox_reports(tmp_path: Path) -> DeliveryReports:
    """Reports delivered the way platform mail is, into the local outbox (no relay configured)."""
    from bot.mail.delivery import Delivery

    delivery = Delivery(MailSender(), relay=None, domains=DOMAINS, inbound=lambda: None, outbox=tmp_path / "outbox")
    return DeliveryReports(delivery, DOMAINS)


async def transaction(rig: Rig, rcpts: tuple[str, ...], *, subject: str = "Hello") -> list[tuple[int, str]]:
    """One message over a fresh connection, as a mailer sends it: every RCPT's reply, then DATA's (if a RCPT was
    accepted)."""
    client = await connect(rig.gateway.port, username=rig.credential.username, password=rig.credential.password)
    replies: list[tuple[int, str]] = []
    try:
        await client.mail(SENDER)
        for rcpt in rcpts:
            try:
                reply = await client.rcpt(rcpt)
            except aiosmtplib.SMTPRecipientRefused as exc:
                replies.append((exc.code, exc.message))
            else:
                replies.append((reply.code, reply.message))
        if any(code == 250 for code, _ in replies):
            try:
                reply = await client.data(message_bytes(SENDER, rcpts[0], subject=subject))
            except aiosmtplib.SMTPResponseException as exc:
                replies.append((exc.code, exc.message))
            else:
                replies.append((reply.code, reply.message))
    finally:
        client.close()
    return replies


async def eventually(value: Callable[[], Awaitable[object]], expected: object, timeout: float = 10) -> None:
    """Wait (bounded) until `value()` is `expected`: for what happens after the other side of a socket notices."""
    async with asyncio.timeout(timeout):
        while await value() != expected:
            await asyncio.sleep(0.01)


async def relayed_to(rig: Rig) -> list[str]:
    return [recipient for _address, _senders, recipients, _subject in rig.relay.sent for recipient in recipients]


@pytest.fixture
async def reports_rig(db: Database, tmp_path: Path) -> AsyncIterator[Rig]:
    rig = await start_rig(db, hourly=2, daily=10, submission_kwargs={"reports": outbox_reports(tmp_path)})
    rig.relay.refuse[BAD] = (550, "5.1.1 <nobody@customer.example.org>: Recipient address rejected")
    yield rig
    await rig.gateway.stop()


async def test_a_refused_recipient_frees_its_slot_and_is_reported_by_dsn_the_mailer_hears_250(
    reports_rig: Rig, tmp_path: Path
) -> None:
    rig = reports_rig
    replies = await transaction(rig, (GOOD, BAD), subject="Spring offer")
    assert replies == [
        (250, "2.1.5 Ok"),
        (250, "2.1.5 Ok"),
        (
            250,
            "2.0.0 Ok: relayed to 1 of 2 recipients; the receiving server refused the others, a delivery status "
            "notification names them",
        ),
    ]
    assert await relayed_to(rig) == [GOOD]
    async with rig.db.session() as session:
        rows = list(await session.scalars(select(SentRecipient)))
    assert [(r.recipient, r.state) for r in rows] == [(GOOD, SlotState.SENT)], "one slot used"
    assert (await rig.gateway.handler.submission.window.usage(rig.identity.id)).sent_last_hour == 1

    await rig.gateway.handler.drain()  # the report goes out in the background
    [report_file] = list((tmp_path / "outbox").iterdir())
    envelope_from, envelope_to, raw = report_file.read_bytes().split(b"\n", 2)
    assert (envelope_from, envelope_to) == (b"X-Envelope-From: ", f"X-Envelope-To: {SENDER}".encode()), "null sender"
    report = message_from_bytes(raw)
    assert report.get_content_type() == "multipart/report" and report.get_param("report-type") == "delivery-status"
    assert report["From"] == f"Mail Delivery System <MAILER-DAEMON@{TEST_PLATFORM_DOMAIN}>"
    assert "Spring offer" in report["Subject"] and report["Auto-Submitted"] == "auto-replied"
    verdict = classify(raw)
    assert (verdict.kind, verdict.addresses) == (MessageKind.BOUNCE, (BAD,))
    assert GOOD not in raw.decode().split("message/delivery-status")[1].split("text/rfc822-headers")[0]
    unfolded = b" ".join(raw.split())
    assert b"Action: failed Status: 5.1.1 Diagnostic-Code: smtp; 550 5.1.1 <nobody@customer" in unfolded


async def test_limit_1_per_hour_mailer_retries_never_deliver_a_second_copy(db: Database) -> None:
    """The bug: one message to a deliverable and a refused recipient, a mailer that retries whatever did not get
    250. Before: five 451s, five copies to the good recipient, none counted. Now: one copy, one slot, 452s."""
    rig = await start_rig(db, hourly=1, daily=10)
    rig.relay.refuse[BAD] = (550, "5.1.1 Recipient address rejected")
    try:
        first = await transaction(rig, (GOOD, BAD))
        assert [code for code, _ in first] == [250, 452, 250]  # the second recipient waits for a free slot
        retries = [await transaction(rig, (GOOD, BAD)) for _ in range(5)]
        next_message = await transaction(rig, (TO,))
    finally:
        await rig.gateway.stop()
    assert all([code for code, _ in r] == [452, 452] for r in retries)
    assert [code for code, _ in next_message] == [452]
    assert await relayed_to(rig) == [GOOD], "exactly one copy reached anyone"
    assert await sent_count(db) == 1


async def test_limit_5_per_hour_a_message_to_8_gets_5_accepted_and_3_452(db: Database) -> None:
    rig = await start_rig(db, hourly=5, daily=10)
    rcpts = tuple(f"lead{i}@customer.example.org" for i in range(8))
    try:
        replies = await transaction(rig, rcpts)
    finally:
        await rig.gateway.stop()
    assert [code for code, _ in replies[:8]] == [250] * 5 + [452] * 3
    assert all(text.startswith("4.5.3 Hourly limit of 5 emails (recipients) reached") for _, text in replies[5:8])
    assert replies[8] == (250, "2.0.0 Ok: relayed")
    assert await relayed_to(rig) == list(rcpts[:5])
    assert await sent_count(db) == 5


async def test_every_recipient_refused_for_good_is_554_and_temporarily_451_slots_free(
    reports_rig: Rig, tmp_path: Path
) -> None:
    rig = reports_rig
    replies = await transaction(rig, (BAD,))
    assert replies[-1] == (
        554,
        "5.0.0 The receiving server refused every recipient (<nobody@customer.example.org>: 550 5.1.1 "
        "<nobody@customer.example.org>: Recipient address rejected)",
    )
    rig.relay.refuse[GOOD] = (451, "4.7.1 Greylisted, try again")
    assert (await transaction(rig, (GOOD, BAD)))[-1] == (451, "4.4.1 Could not relay: try again later")
    assert await sent_count(rig.db) == 0
    await rig.gateway.handler.drain()
    assert not (tmp_path / "outbox").exists(), "the mailer heard a failure: no report"


async def test_slots_of_a_transaction_that_ends_without_data_are_given_back(db: Database) -> None:
    rig = await start_rig(db, hourly=3, daily=10)
    try:
        client = await connect(rig.gateway.port, username=rig.credential.username, password=rig.credential.password)
        await client.mail(SENDER)
        await client.rcpt(GOOD)
        await client.rcpt(GOOD.upper())  # the same recipient again: one copy, one slot
        assert await sent_count(db) == 1
        await client.rset()
        await rig.gateway.handler.drain()
        assert await sent_count(db) == 0, "RSET"
        await client.mail(SENDER)
        await client.rcpt(GOOD)
        await client.ehlo()
        await rig.gateway.handler.drain()
        assert await sent_count(db) == 0, "a new EHLO"
        await client.mail(SENDER)
        await client.rcpt(GOOD)
        await client.rcpt(TO)
        assert await sent_count(db) == 2
        client.close()  # the mailer goes away mid-transaction
        await eventually(lambda: sent_count(db), 0)
        # All three slots are free: a full message goes.
        assert [c for c, _ in await transaction(rig, (GOOD, TO, "c@customer.example.org"))] == [250] * 4
    finally:
        await rig.gateway.stop()
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(SentRecipient)) == 3


def test_reports_never_go_to_a_null_daemon_or_our_own_return_paths(tmp_path: Path) -> None:
    reports = outbox_reports(tmp_path)
    assert reports.wanted("jane@acme.example.com")
    for address in (
        "",
        "<>",
        "MAILER-DAEMON@example.org",
        "postmaster@example.org",
        f"bounces+{'a' * 20}@{TEST_PLATFORM_DOMAIN}",
        f"unsubscribe+{'b' * 32}@{TEST_PLATFORM_DOMAIN}",
    ):
        assert not reports.wanted(address), address


# --- /identity show counts recipients ---


@pytest.fixture
async def gbot(tmp_path: Path, database_url: str, fake_slack: object) -> AsyncIterator[Bot]:
    b = await start_bot(tmp_path, database_url, fake_slack)  # type: ignore[arg-type]
    yield b
    await b.slack.close()
    await b.runtime.stop()


async def test_identity_show_reports_recipients_against_the_limit(gbot: Bot) -> None:
    bot = gbot
    address = f"ann@{TEST_PLATFORM_DOMAIN}"
    await make_identity(bot.db, address, hourly=5, daily=10, team_id=TEAM)
    issued = await bot.runtime.services.credentials.issue(address)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bot.runtime.gateway.port, start_tls=False, timeout=10)
    await client.connect(username=issued.username, password=issued.password)
    try:
        await client.mail(address)
        codes = []
        for i in range(8):
            try:
                codes.append((await client.rcpt(f"lead{i}@customer.example.org")).code)
            except aiosmtplib.SMTPRecipientRefused as exc:
                codes.append(exc.code)
        assert codes == [250] * 5 + [452] * 3
        assert (await client.data(message_bytes(address, "lead0@customer.example.org"))).code == 250
    finally:
        client.close()
    n = len(bot.fake.responses)
    await bot.slack.command(f"show {address}")
    shown = await bot.fake.wait_for_response(after=n)
    text = str(shown["blocks"])
    assert "Sent in the last hour:* 5 of 5 emails (recipients)" in text
    assert "Sent in the last 24 hours:* 5 of 10 emails (recipients)" in text
    assert "5/5 emails (recipients) in the last hour" in shown["text"]
