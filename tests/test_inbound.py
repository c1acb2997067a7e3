"""The inbound SMTP server with real SMTP clients on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiosmtplib
import pytest
from sqlalchemy import func, select, text

from bot.mail.domains import PlatformDomains
from bot.services.incoming import InboundStore
from bot.services.incoming.store import dedup_key
from bot.smtp.inbound import InboundServer
from models import Database, InboundMessage

SERVED = "jane.doe@platform.example.com"
TRACKING = "cc-0123456789abcdef0123@track.example.com"
UNSERVED = "someone@elsewhere.example.net"
LEAD = "sam@customer.example.org"
MAX_SIZE = 64 * 1024

RAW = (
    b"From: Sam Lead <sam@customer.example.org>\r\n"
    b"To: Jane Doe <jane.doe@platform.example.com>\r\n"
    b"Subject: Re: Quick question\r\n"
    b"Message-ID: <reply-1@customer.example.org>\r\n"
    b"\r\n"
    b"Sounds good.\r\n"
    b".A line that starts with a dot survives dot-stuffing.\r\n"
    b"Sam\r\n"
)


class Directory:
    """A RecipientDirectory over a fixed set of addresses; remembers what it was asked."""

    def __init__(self, *served: str) -> None:
        self.served = {a.lower() for a in served}
        self.asked: list[str] = []

    async def serves(self, address: str) -> bool:
        self.asked.append(address)
        return address in self.served


class BrokenDirectory:
    async def serves(self, address: str) -> bool:
        raise RuntimeError("directory unavailable")


class DirectoryStore(InboundStore):
    """The real store, with the served addresses decided by a test directory."""

    def __init__(self, db: Database, directory: object, on_stored: object) -> None:
        super().__init__(db, PlatformDomains("platform.example.com", "track.example.com"), on_stored=on_stored)  # type: ignore[arg-type]
        self.directory = directory

    async def serves(self, address: str) -> bool:
        return await self.directory.serves(address)  # type: ignore[attr-defined]


@dataclass
class Inbound:
    server: InboundServer
    db: Database
    stored: list[int] = field(default_factory=list)
    stored_event: asyncio.Event = field(default_factory=asyncio.Event)

    def client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(hostname="127.0.0.1", port=self.server.port, start_tls=False, timeout=10)

    async def rows(self) -> list[InboundMessage]:
        async with self.db.session() as session:
            return list(await session.scalars(select(InboundMessage).order_by(InboundMessage.id)))


async def start_inbound(db: Database, directory: object) -> Inbound:
    inbound = Inbound(server=None, db=db)  # type: ignore[arg-type]

    async def on_stored(message_id: int) -> None:
        inbound.stored.append(message_id)
        inbound.stored_event.set()

    inbound.server = InboundServer(DirectoryStore(db, directory, on_stored), max_message_size=MAX_SIZE)
    await inbound.server.start("127.0.0.1", 0)
    return inbound


@pytest.fixture
async def inbound(db: Database) -> AsyncIterator[Inbound]:
    running = await start_inbound(db, Directory(SERVED, TRACKING))
    yield running
    await running.server.stop()


async def test_accepts_served_address_and_stores_exact_message_before_250(inbound: Inbound) -> None:
    async with inbound.client() as client:
        errors, response = await client.sendmail(LEAD, [SERVED], RAW)

    assert errors == {}
    assert response.startswith("2.0.0 Ok: queued as ")
    rows = await inbound.rows()
    assert len(rows) == 1
    row = rows[0]
    assert response == f"2.0.0 Ok: queued as {row.id}"
    assert row.raw == RAW
    assert row.size == len(RAW)
    assert row.mail_from == LEAD
    assert row.rcpt_tos == [SERVED]
    assert row.peer == "127.0.0.1"
    assert row.message_id == "<reply-1@customer.example.org>"
    assert row.dedup_key == dedup_key("<reply-1@customer.example.org>", RAW)
    assert row.processed_at is None and row.classification is None

    await asyncio.wait_for(inbound.stored_event.wait(), timeout=10)
    assert inbound.stored == [row.id]


async def test_recipient_lookup_is_case_insensitive_and_bounces_have_a_null_sender(inbound: Inbound) -> None:
    async with inbound.client() as client:
        errors, _ = await client.sendmail("", ["Jane.Doe@Platform.Example.COM"], RAW)

    assert errors == {}
    [row] = await inbound.rows()
    assert row.mail_from == ""
    assert row.rcpt_tos == ["Jane.Doe@Platform.Example.COM"]


async def test_unserved_recipient_is_refused_with_550_and_nothing_is_stored(inbound: Inbound) -> None:
    async with inbound.client() as client:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await client.sendmail(LEAD, [UNSERVED], RAW)

    [rejection] = refused.value.recipients
    assert rejection.code == 550
    assert rejection.message == f"5.1.1 <{UNSERVED}>: no such mailbox here"
    assert await inbound.rows() == []


async def test_mixed_recipients_only_served_ones_are_accepted(inbound: Inbound) -> None:
    async with inbound.client() as client:
        errors, response = await client.sendmail(LEAD, [UNSERVED, SERVED, TRACKING], RAW)

    assert set(errors) == {UNSERVED}
    assert errors[UNSERVED].code == 550
    [row] = await inbound.rows()
    assert row.rcpt_tos == [SERVED, TRACKING]
    assert response == f"2.0.0 Ok: queued as {row.id}"


async def test_oversized_message_is_refused_with_552_and_nothing_is_stored(inbound: Inbound) -> None:
    big = RAW + b"x" * 998 + b"\r\n"
    big = big * (MAX_SIZE // len(big) + 1)

    # smtplib declares SIZE: refused at MAIL FROM.
    def send_with_smtplib() -> None:
        with smtplib.SMTP("127.0.0.1", inbound.server.port, timeout=10) as client:
            client.sendmail(LEAD, [SERVED], big)

    with pytest.raises(smtplib.SMTPSenderRefused) as declared:
        await asyncio.to_thread(send_with_smtplib)
    assert declared.value.smtp_code == 552

    # Without SIZE the data is read and then refused.
    async with inbound.client() as client:
        await client.mail(LEAD)
        await client.rcpt(SERVED)
        with pytest.raises(aiosmtplib.SMTPDataError) as undeclared:
            await client.data(big)
    assert undeclared.value.code == 552
    assert await inbound.rows() == []


async def test_directory_failure_answers_451_not_500(db: Database) -> None:
    running = await start_inbound(db, BrokenDirectory())
    try:
        async with running.client() as client:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                await client.sendmail(LEAD, [SERVED], RAW)
            # The session is still usable: the failure was an answer, not a crash.
            code, _ = await client.noop()
        [rejection] = refused.value.recipients
        assert rejection.code == 451
        assert rejection.message == "4.3.0 Temporary failure, please retry"
        assert code == 250
        assert await running.rows() == []
    finally:
        await running.server.stop()


async def test_database_failure_during_data_answers_451_and_queues_nothing(
    inbound: Inbound, caplog: pytest.LogCaptureFixture
) -> None:
    async with inbound.db.transaction() as session:
        await session.execute(text("ALTER TABLE inbound_messages RENAME TO inbound_messages_away"))
    try:
        async with inbound.client() as client:
            with pytest.raises(aiosmtplib.SMTPDataError) as failed:
                await client.sendmail(LEAD, [SERVED], RAW)
    finally:
        async with inbound.db.transaction() as session:
            await session.execute(text("ALTER TABLE inbound_messages_away RENAME TO inbound_messages"))
        # Forget connections that may hold plans for the renamed table.
        await inbound.db.engine.dispose()

    assert failed.value.code == 451
    assert failed.value.message == "4.3.0 Temporary failure, please retry"
    assert await inbound.rows() == []
    # The failure is logged with its trace, but not with the message (SQL parameters hidden).
    assert "could not store a message from 127.0.0.1" in caplog.text
    assert "Traceback" in caplog.text
    assert "Sounds good" not in caplog.text

    # Once the database is back, the sender's retry succeeds.
    async with inbound.client() as client:
        errors, response = await client.sendmail(LEAD, [SERVED], RAW)
    [row] = await inbound.rows()
    assert response == f"2.0.0 Ok: queued as {row.id}"


async def test_same_message_delivered_twice_is_stored_once(inbound: Inbound) -> None:
    responses = []
    for _ in range(2):
        async with inbound.client() as client:
            errors, response = await client.sendmail(LEAD, [SERVED], RAW)
            assert errors == {}
            responses.append(response)

    [row] = await inbound.rows()
    assert responses == [f"2.0.0 Ok: queued as {row.id}"] * 2
    # stop() waits for scheduled processing: on_stored ran once, for the one row.
    await inbound.server.stop()
    assert inbound.stored == [row.id]


async def test_concurrent_deliveries_of_the_same_message_store_one_row(inbound: Inbound) -> None:
    async def deliver() -> str:
        async with inbound.client() as client:
            _, response = await client.sendmail(LEAD, [SERVED], RAW)
            return response

    responses = await asyncio.gather(*(deliver() for _ in range(5)))
    async with inbound.db.session() as session:
        count = await session.scalar(select(func.count()).select_from(InboundMessage))
    assert count == 1
    assert len(set(responses)) == 1


async def test_several_messages_in_one_session_each_get_a_row(inbound: Inbound) -> None:
    second = RAW.replace(b"reply-1@", b"reply-2@")
    async with inbound.client() as client:
        await client.sendmail(LEAD, [SERVED], RAW)
        await client.sendmail(LEAD, [TRACKING], second)
    rows = await inbound.rows()
    assert [(r.rcpt_tos, r.raw) for r in rows] == [([SERVED], RAW), ([TRACKING], second)]


async def test_concurrent_distinct_messages_are_all_stored_and_each_processed_once(inbound: Inbound) -> None:
    async def deliver(n: int) -> str:
        raw = RAW.replace(b"reply-1@", f"reply-{n}@".encode())
        async with inbound.client() as client:
            _, response = await client.sendmail(LEAD, [SERVED], raw)
            return response

    responses = await asyncio.gather(*(deliver(n) for n in range(20)))
    rows = await inbound.rows()
    assert sorted(responses) == sorted(f"2.0.0 Ok: queued as {row.id}" for row in rows)
    assert len(rows) == 20
    await inbound.server.stop()
    assert sorted(inbound.stored) == [row.id for row in rows]


def test_return_paths_name_one_token_on_the_platform_domain_only() -> None:
    from bot.mail.domains import new_verp_token

    domains = PlatformDomains("platform.example.com", "track.example.com")
    token = new_verp_token()
    path = domains.return_path(token)
    assert path == f"bounces+{token}@platform.example.com"
    assert domains.return_path_token(path.upper()) == token
    assert domains.return_path_token(f"bounces+{token}@elsewhere.example.com") is None
    assert domains.return_path_token(f"bounces+{token}x@platform.example.com") is None
    assert domains.return_path_token("bounces@platform.example.com") is None
