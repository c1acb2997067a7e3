"""Replays: a signed Slack request sent a second time within the five minutes its signature is valid is
acknowledged and ignored — in whichever process it lands — while Slack's own retries (a new timestamp, so a new
signature) still act."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.app import Runtime
from bot.sandbox import FakeSlack, SlackClient
from bot.services.replay import ReplayGuard
from handlers.verification.ids import Verification as V
from models import AuditEvent, Database, Identity, SeenRequest
from tests.companymail import CompanyMail, start_company_mail
from tests.conftest import PLATFORM_DOMAIN, SIGNING_SECRET, TEAM, Bot, make_settings, start_bot
from tests.mailservers import TestCA, mail_ca  # noqa: F401
from tests.test_company_identity import create_company_identity
from tests.test_verification import click, panel_says

IGNORED = "ignored a replayed Slack request"


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


def ignored(caplog: pytest.LogCaptureFixture) -> int:
    return sum(IGNORED in r.getMessage() for r in caplog.records)


async def count(bot: Bot, what: object) -> int:
    async with bot.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(what)) or 0)  # type: ignore[arg-type]


async def test_the_same_signed_view_submission_twice_creates_one_identity(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=f"lea@{PLATFORM_DOMAIN}")
    mark = bot.fake.mark()
    first = await bot.slack.submit(view["id"])
    assert first.response_action == "update"
    await bot.fake.wait_for("chat.postMessage", lambda c: "lea@" in c.args.get("text", ""), after=mark)  # the panel
    audit = await count(bot, AuditEvent)

    again = await bot.slack.replay()
    assert again.status == 200 and again.body is None, "acknowledged, and nothing else"
    assert ignored(caplog) == 1
    assert await count(bot, Identity) == 1
    assert await count(bot, AuditEvent) == audit, "nothing acted on it"

    # Slack's retry of the same payload carries a new timestamp, so a new signature: it is handled (and, being
    # the same view, still creates nothing new).
    retry = await bot.slack.replay(resign_at=int(time.time()) + 1)
    assert retry.response_action == "update"
    assert ignored(caplog) == 1 and await count(bot, Identity) == 1


async def test_the_same_block_action_twice_sends_one_email(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bot = await start_bot(tmp_path, sqlite_url, fake_slack, RELAY_SMTP_URL=company.relay_url)
    try:
        identity = await create_company_identity(bot, company)
        mark = bot.fake.mark()
        await click(bot, identity.id, V.send_test_email)
        await panel_says(bot, identity.id, "Sending Verified", after=mark)
        sent = [m for m in company.mailbox.messages if m["Subject"] == "Sending verification"]
        assert len(sent) == 1
        audit = await count(bot, AuditEvent)

        again = await bot.slack.replay()  # the captured click, once the first run is over
        assert again.status == 200
        assert ignored(caplog) == 1, "refused before any listener ran"
        assert [m for m in company.mailbox.messages if m["Subject"] == "Sending verification"] == sent
        assert await count(bot, AuditEvent) == audit
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


async def test_a_replay_to_another_process_sharing_the_database_is_ignored(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = await start_bot(tmp_path / "a", database_url, fake_slack)
    key = (tmp_path / "a" / "data" / "secret.key").read_text().strip()
    second = Runtime(make_settings(tmp_path / "b", database_url, fake_slack.url, SECRET_KEYS=key))
    await second.start()
    other = SlackClient(second.http_url, SIGNING_SECRET, fake_slack, team_id=TEAM)
    try:
        view = await first.open_new_identity_form()
        await first.fill_platform_form(view["id"], address=f"lea@{PLATFORM_DOMAIN}")
        mark = fake_slack.mark()
        assert (await first.slack.submit(view["id"])).response_action == "update"
        await fake_slack.wait_for("chat.postMessage", lambda c: "lea@" in c.args.get("text", ""), after=mark)
        assert first.slack.last_signed is not None
        body, headers = first.slack.last_signed
        again = await other.raw(body, headers)  # the load balancer sends the replay to the other process
        assert again.status == 200 and again.body is None
        assert ignored(caplog) == 1
    finally:
        await other.close()
        await second.stop()
        await first.slack.close()
        await first.runtime.stop()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_seen_signatures_are_kept_while_valid_then_pruned(db: Database) -> None:
    clock = Clock()
    guard = ReplayGuard(db, clock=clock)
    ts = str(int(clock.now.timestamp()))
    assert await guard.first_sighting("v0=aaa", ts) is True
    assert await guard.first_sighting("v0=aaa", ts) is False
    clock.now += timedelta(minutes=4, seconds=59)  # Slack's timestamp check still accepts it: still refused
    assert await guard.first_sighting("v0=aaa", ts) is False
    clock.now += timedelta(minutes=10)  # long past the window: the timestamp check refuses it; the row goes
    assert await guard.first_sighting("v0=bbb", str(int(clock.now.timestamp()))) is True
    async with db.session() as session:
        kept = set(await session.scalars(select(SeenRequest.signature)))
    assert kept == {"v0=bbb"}


async def test_slack_is_answered_while_another_process_holds_the_database_write_lock(
    sqlite_bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite has one writer at a time and the inbound server commits mail all the time during a flood. Recording a
    request's signature is a write made before the ack: it must not queue behind mail (benchmarks/inbound.py saw
    acks of 1.6 s), and replays are still caught meanwhile."""
    caplog.set_level(logging.INFO)
    path = sqlite_bot.db.sqlite_path
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    # What the inbound door does for each group of messages it stores (off the event loop: the bot shares it).
    await asyncio.to_thread(holder.execute, "BEGIN IMMEDIATE")
    try:
        # Bounded well below SQLite's 30 s busy timeout: a request queued behind the lock gets no answer in time.
        help_text = await asyncio.wait_for(sqlite_bot.slack.command("help"), timeout=10)
        assert help_text.ok and "/identity new" in str(help_text.body)
        again = await asyncio.wait_for(sqlite_bot.slack.replay(), timeout=10)
        assert again.status == 200 and again.body is None
        assert ignored(caplog) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
