"""The submission gateway over real SMTP, and its credentials. The headline test bursts from 8 client processes
through 2 gateway processes and checks the limit holds exactly, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import func, select

from bot.cli import main as cli_main
from bot.services.errors import NotFound
from bot.services.gateway import SentMail, Submission, Suppressions
from bot.services.gateway.credentials import GatewayCredentials, IssuedCredential, verify_password
from bot.services.gateway.window import LimitDecision, SendingLimits
from bot.smtp.gateway import SubmissionGateway, format_retry_at
from models import (
    AuditEvent,
    Database,
    GatewayCredential,
    Identity,
    SentMessage,
    SentRecipient,
    SlotState,
    Suppression,
    SuppressionReason,
)
from tests.gateway_helpers import Clock, RecordingRelay, make_identity, message_bytes

ROOT = Path(__file__).resolve().parent.parent
SENDER = "jane@acme.example.com"
TO = "lead@customer.example.org"


@dataclass
class Rig:
    db: Database
    gateway: SubmissionGateway
    relay: RecordingRelay
    clock: Clock
    identity: Identity
    credential: IssuedCredential
    credentials: GatewayCredentials


async def start_rig(db: Database, *, hourly: int = 40, daily: int = 200, **gateway_kwargs: object) -> Rig:
    identity = await make_identity(db, SENDER, hourly=hourly, daily=daily)
    credentials = GatewayCredentials(db)
    credential = await credentials.issue(SENDER, actor="U_LEAD")
    relay = RecordingRelay()
    clock = Clock()
    gateway = SubmissionGateway(Submission(db, credentials, SendingLimits(db, clock=clock), relay), **gateway_kwargs)  # type: ignore[arg-type]
    await gateway.start("127.0.0.1", 0)
    return Rig(db, gateway, relay, clock, identity, credential, credentials)


@pytest.fixture
async def rig(db: Database) -> AsyncIterator[Rig]:
    r = await start_rig(db)
    yield r
    await r.gateway.stop()


async def connect(port: int, **kwargs: object) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10, **kwargs)  # type: ignore[arg-type]
    await client.connect()  # logs in too when given username and password
    if client.last_ehlo_response is None:
        await client.ehlo()
    return client


async def submit(
    rig: Rig,
    *,
    sender: str = SENDER,
    rcpts: tuple[str, ...] = (TO,),
    subject: str = "Hello",
    username: str | None = None,
    password: str | None = None,
    size: int = 0,
    header_from: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, str]:
    """One message over a fresh connection: the reply that ended it (a refusal at any stage, or DATA's)."""
    client = await connect(rig.gateway.port)
    try:
        await client.login(username or rig.credential.username, password or rig.credential.password)
        await client.mail(sender)
        for rcpt in rcpts:
            await client.rcpt(rcpt)
        body = raw or message_bytes(header_from or sender, rcpts[0], subject=subject, size=size)
        reply = await client.data(body)
        return reply.code, reply.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    finally:
        client.close()


async def sent_count(db: Database, identity_id: int | None = None) -> int:
    query = select(func.count()).select_from(SentMessage)
    if identity_id is not None:
        query = query.where(SentMessage.identity_id == identity_id)
    async with db.session() as session:
        return int(await session.scalar(query) or 0)


# --- credentials ---


async def test_credentials_store_only_a_scrypt_hash_and_authenticate(db: Database) -> None:
    identity = await make_identity(db, "Mixed.Case@acme.example.com")
    credentials = GatewayCredentials(db)
    issued = await credentials.issue("  mixed.case@ACME.example.com ", actor="U_LEAD")
    assert issued.username.startswith("mixed.case-") and len(issued.username) == len("mixed.case-") + 6
    assert issued.password not in repr(issued)

    async with db.session() as session:
        row = (await session.execute(select(GatewayCredential))).scalar_one()
        events = list((await session.execute(select(AuditEvent))).scalars())
    assert row.identity_id == identity.id and row.created_by == "U_LEAD"
    assert row.password_hash.startswith("scrypt$16384$8$1$") and issued.password not in row.password_hash
    assert verify_password(issued.password, row.password_hash)
    assert [(e.action, e.actor, e.identity_id) for e in events] == [
        ("gateway.credential_issued", "U_LEAD", identity.id)
    ]
    assert issued.password not in json.dumps(events[0].detail)

    assert await credentials.authenticate(issued.username, issued.password) == identity.id
    assert await credentials.authenticate(issued.username, issued.password + "x") is None
    assert await credentials.authenticate("nobody-000000", issued.password) is None

    second = await credentials.issue(identity.address)
    assert second.username != issued.username and second.password != issued.password
    assert await credentials.revoke(issued.username) is True
    assert await credentials.authenticate(issued.username, issued.password) is None
    assert await credentials.authenticate(second.username, second.password) == identity.id

    with pytest.raises(NotFound):
        await credentials.issue("unknown@acme.example.com")
    assert not verify_password("x", "scrypt$notanumber$8$1$AA==$AA==")
    assert not verify_password("x", "scrypt$1073741824$8$1$AA==$AA==")  # absurd cost from a tampered row


async def test_credentials_cli_prints_username_and_password_once(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))

    def issue_credentials_cli(_url: str, address: str) -> int:
        return cli_main(["credentials", "issue", address])

    db = Database(sqlite_url)
    await db.upgrade()
    identity = await make_identity(db, SENDER)
    await db.dispose()

    assert await asyncio.to_thread(issue_credentials_cli, sqlite_url, SENDER) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("username: ") and out[1].startswith("password: ")
    username, password = out[0].removeprefix("username: "), out[1].removeprefix("password: ")

    db = Database(sqlite_url)
    try:
        assert await GatewayCredentials(db).authenticate(username, password) == identity.id
    finally:
        await db.dispose()

    assert await asyncio.to_thread(issue_credentials_cli, sqlite_url, "nobody@acme.example.com") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "nobody@" in captured.err


# --- the SMTP dialogue ---


async def test_a_verified_identity_sends_through_the_gateway(rig: Rig) -> None:
    code, text = await submit(rig, sender="JANE@acme.example.com", rcpts=(TO, "second@customer.example.org"))
    assert (code, text) == (250, "2.0.0 Ok: relayed")
    assert rig.relay.sent == [(SENDER, "JANE@acme.example.com", [TO, "second@customer.example.org"], "Hello")]
    async with rig.db.session() as session:
        row = (await session.execute(select(SentMessage))).scalar_one()
    assert (row.identity_id, row.state, row.recipients, row.sent_at) == (rig.identity.id, "sent", 2, rig.clock.now)


async def test_auth_login_mechanism_works_too(rig: Rig) -> None:
    client = await connect(rig.gateway.port)
    try:
        reply = await client.auth_login(rig.credential.username, rig.credential.password)
        assert reply.code == 235
    finally:
        client.close()


async def test_mail_before_auth_is_refused(rig: Rig) -> None:
    client = await connect(rig.gateway.port)
    try:
        assert client.supports_extension("auth")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail(SENDER)
        assert refused.value.code == 530 and refused.value.message.startswith("5.7.0")
    finally:
        client.close()
    assert rig.relay.sent == []


async def test_wrong_password_or_unknown_user_is_refused(rig: Rig) -> None:
    for username, password in ((rig.credential.username, "wrong"), ("nobody-123456", rig.credential.password)):
        code, text = await submit(rig, username=username, password=password)
        assert (code, text.split(" ")[0]) == (535, "5.7.8")
    # A revoked credential no longer works.
    await rig.credentials.revoke(rig.credential.username)
    assert (await submit(rig))[0] == 535
    assert rig.relay.sent == []


async def test_sending_as_another_identity_is_refused(rig: Rig) -> None:
    await make_identity(rig.db, "john@acme.example.com")
    code, text = await submit(rig, sender="john@acme.example.com")
    assert code == 553 and text == "5.7.1 Not authorized to send as john@acme.example.com"
    assert rig.relay.sent == []


@pytest.mark.parametrize(
    "raw",
    [
        b"From: CEO <ceo@acme.example.com>\r\nTo: x@example.com\r\nSubject: Wire money\r\n\r\nNow.\r\n",
        b"From: jane@acme.example.com, ceo@acme.example.com\r\nTo: x@example.com\r\nSubject: Hi\r\n\r\nHi\r\n",
        b"From: jane@acme.example.com\r\nSender: ceo@acme.example.com\r\nTo: x@example.com\r\nSubject: Hi\r\n"
        b"\r\nHi\r\n",
        b"To: x@example.com\r\nSubject: No author\r\n\r\nHi\r\n",
    ],
    ids=["other-from", "two-authors", "other-sender", "no-from"],
)
async def test_the_header_from_must_be_the_identity_too(rig: Rig, raw: bytes) -> None:
    code, text = await submit(rig, raw=raw.replace(b"jane@acme.example.com", SENDER.encode()))
    assert code == 550 and ("5.7.1" in text or "5.6.0" in text), text
    assert rig.relay.sent == []
    assert await sent_count(rig.db) == 0, "a refused message takes no slot"


async def test_the_identitys_own_display_name_in_from_is_fine(rig: Rig) -> None:
    code, _ = await submit(rig, header_from=f"Jane Doe <{SENDER.upper()}>")
    assert code == 250 and len(rig.relay.sent) == 1


async def test_an_unverified_identity_cannot_send(db: Database) -> None:
    identity = await make_identity(db, "new@acme.example.com", ready=False)
    credentials = GatewayCredentials(db)
    credential = await credentials.issue(identity.address)
    relay = RecordingRelay()
    gateway = SubmissionGateway(Submission(db, credentials, SendingLimits(db), relay))
    await gateway.start("127.0.0.1", 0)
    try:
        client = await connect(gateway.port, username=credential.username, password=credential.password)
        try:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await client.mail(identity.address)
        finally:
            client.close()
    finally:
        await gateway.stop()
    assert refused.value.code == 550
    assert refused.value.message == (
        "5.7.1 Identity new@acme.example.com is not verified yet: run the three verification steps"
    )
    assert relay.sent == [] and await sent_count(db) == 0


async def test_suppressed_recipients_are_refused(rig: Rig) -> None:
    async with rig.db.transaction() as session:
        await Suppressions(rig.db).add(
            session,
            team_id=rig.identity.team_id,
            address="gone@customer.example.org",
            reason=SuppressionReason.UNSUBSCRIBE,
            source_message_id=None,
        )
    client = await connect(rig.gateway.port, username=rig.credential.username, password=rig.credential.password)
    try:
        await client.mail(SENDER)
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("Gone@Customer.example.org")
        assert refused.value.code == 550
        assert refused.value.message == (
            "5.7.1 <Gone@Customer.example.org> is on the suppression list (unsubscribed or bounced)"
        )
        # The other recipients of the same message still go.
        await client.rcpt(TO)
        reply = await client.data(message_bytes(SENDER, TO))
        assert reply.code == 250
    finally:
        client.close()
    assert [s[2] for s in rig.relay.sent] == [[TO]]


async def test_suppression_holds_against_case_tags_and_gmail_dots_and_stays_in_its_team(db: Database) -> None:
    other_team = await make_identity(db, "sam@other.example.com", team_id="T0OTHER")
    suppressions = Suppressions(db)
    async with db.transaction() as session:
        for address in ("victim@example.com", "john.smith@gmail.com"):
            await suppressions.add(
                session, team_id="T0TEST", address=address, reason=SuppressionReason.COMPLAINT, source_message_id=None
            )
    variants = (
        "Victim+promo@Example.com",
        "VICTIM@example.com",
        "johnsmith+x@googlemail.com",
        "J.o.h.n.Smith@Gmail.com",
    )
    for variant in variants:
        found = await suppressions.find("T0TEST", variant)
        assert found is not None and found.reason == SuppressionReason.COMPLAINT, variant
    assert await suppressions.find("T0TEST", "victim.x@example.com") is None, "dots matter outside Gmail"
    assert await suppressions.find(other_team.team_id, "victim@example.com") is None, "another team may still mail it"
    async with db.transaction() as session:  # a suppression from before teams were recorded binds every team
        session.add(Suppression(address="old@example.com", address_key="old@example.com", reason="unsubscribe"))
    assert await suppressions.find(other_team.team_id, "Old+2@example.com") is not None


async def test_relayed_mail_is_recorded_per_recipient_for_later_reports(rig: Rig) -> None:
    code, _ = await submit(rig, subject="Quarterly update", rcpts=(TO, "b@customer.example.org"))
    assert code == 250
    sent = SentMail(rig.db)
    async with rig.db.session() as session:
        rows = list(await session.scalars(select(SentRecipient).order_by(SentRecipient.recipient)))
    assert [(r.recipient, r.team_id, r.state) for r in rows] == [
        ("b@customer.example.org", rig.identity.team_id, SlotState.SENT),
        (TO, rig.identity.team_id, SlotState.SENT),
    ]
    message_id = rows[0].message_id
    assert message_id and rows[1].message_id == message_id
    assert await sent.by_message(rig.identity.team_id, message_id, "B+x@Customer.example.org") is not None
    assert await sent.by_message("T0OTHER", message_id, TO) is None
    assert await sent.has_mailed(rig.identity.team_id, TO) and not await sent.has_mailed("T0OTHER", TO)


async def test_relay_failure_answers_451_and_gives_the_slot_back(db: Database) -> None:
    rig = await start_rig(db, hourly=1, daily=1)
    try:
        rig.relay.fail_next = 1
        code, text = await submit(rig, subject="first try")
        assert (code, text) == (451, "4.4.1 Could not relay: try again later")
        assert "hunter2" not in text
        assert await sent_count(db) == 0
        # The only slot of the hour is free again: the retry goes through, and then the limit is reached.
        assert (await submit(rig, subject="retry"))[0] == 250
        assert (await submit(rig, subject="one too many"))[0] == 451
    finally:
        await rig.gateway.stop()
    assert [s[3] for s in rig.relay.sent] == ["retry"]


async def test_over_the_hourly_limit_the_reply_says_when_to_retry(db: Database) -> None:
    rig = await start_rig(db, hourly=2, daily=10)  # the clock stands at 13:04:30 UTC
    try:
        assert [(await submit(rig))[0] for _ in range(2)] == [250, 250]
        rig.clock.advance(minutes=1)
        code, text = await submit(rig)
        assert code == 451
        assert text == f"4.7.1 Hourly limit of 2 reached for {SENDER}; try after 14:05 UTC"
        # Once the first send leaves the window, a message goes again.
        rig.clock.advance(hours=1)
        assert (await submit(rig))[0] == 250
    finally:
        await rig.gateway.stop()
    assert len(rig.relay.sent) == 3 and await sent_count(db) == 3


async def test_over_the_daily_limit_the_reply_gives_the_date(db: Database) -> None:
    rig = await start_rig(db, hourly=2, daily=2)
    try:
        assert [(await submit(rig))[0] for _ in range(2)] == [250, 250]
        code, text = await submit(rig)
    finally:
        await rig.gateway.stop()
    assert (code, text) == (451, f"4.7.1 Daily limit of 2 reached for {SENDER}; try after 2026-01-06 13:05 UTC")


async def test_too_big_is_552_and_handler_errors_are_451_not_500(db: Database) -> None:
    class BrokenLimits(SendingLimits):
        async def reserve(self, identity_id: int, *, recipients: int = 1) -> LimitDecision:
            raise RuntimeError("database on fire: secret=hunter2")

    identity = await make_identity(db, SENDER)
    credentials = GatewayCredentials(db)
    credential = await credentials.issue(identity.address)
    relay = RecordingRelay()
    gateway = SubmissionGateway(Submission(db, credentials, BrokenLimits(db), relay), max_message_size=2000)
    await gateway.start("127.0.0.1", 0)
    rig = Rig(db, gateway, relay, Clock(), identity, credential, credentials)
    try:
        code, text = await submit(rig, size=5000)
        assert code == 552
        code, text = await submit(rig)
        assert (code, text) == (451, "4.3.0 Temporary server error: try again later")
    finally:
        await gateway.stop()
    assert relay.sent == []


async def test_off_loopback_the_gateway_needs_tls_and_offers_auth_only_after_starttls(db: Database) -> None:
    trustme = pytest.importorskip("trustme")
    identity = await make_identity(db, SENDER)
    credentials = GatewayCredentials(db)
    credential = await credentials.issue(identity.address)
    relay = RecordingRelay()

    with pytest.raises(ValueError, match="TLS"):
        await SubmissionGateway(Submission(db, credentials, SendingLimits(db), relay)).start("0.0.0.0", 0)

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    gateway = SubmissionGateway(Submission(db, credentials, SendingLimits(db), relay), tls_context=server_tls)
    await gateway.start("0.0.0.0", 0)  # not loopback: the TLS rules apply (we still connect over 127.0.0.1)
    try:
        plain = await connect(gateway.port)
        try:
            assert not plain.supports_extension("auth") and plain.supports_extension("starttls")
            reply = await plain.execute_command(b"AUTH", b"PLAIN", b"AGZvbwBiYXI=")
            assert reply.code == 530
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await plain.mail(SENDER)
            assert refused.value.code == 530
        finally:
            plain.close()

        secure = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.port, start_tls=True, tls_context=client_tls)
        await secure.connect()
        await secure.ehlo()  # after STARTTLS the earlier EHLO answer no longer counts
        try:
            assert secure.supports_extension("auth")
            await secure.login(credential.username, credential.password)
            await secure.mail(SENDER)
            await secure.rcpt(TO)
            assert (await secure.data(message_bytes(SENDER, TO))).code == 250
        finally:
            secure.close()
    finally:
        await gateway.stop()
    assert len(relay.sent) == 1


def test_retry_time_is_rounded_up_to_the_minute() -> None:
    now = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)
    assert format_retry_at(datetime(2026, 1, 5, 14, 5, tzinfo=UTC), now) == "14:05 UTC"
    assert format_retry_at(datetime(2026, 1, 5, 14, 4, 0, 1, tzinfo=UTC), now) == "14:05 UTC"
    assert format_retry_at(datetime(2026, 1, 5, 23, 59, 30, tzinfo=UTC), now) == "2026-01-06 00:00 UTC"
    assert format_retry_at(now + timedelta(days=1), now) == "2026-01-06 23:30 UTC"


# --- the headline: the limit holds across processes ---


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.gateway_helpers",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _line(process: asyncio.subprocess.Process, timeout: float = 30) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    assert line, f"process {process.pid} ended early with {await process.wait()}"
    return line.decode().strip()


async def test_burst_from_8_client_processes_through_2_gateway_processes_sends_exactly_the_limit(
    database_url: str,
) -> None:
    db = Database(database_url)
    await db.upgrade()
    processes: list[asyncio.subprocess.Process] = []
    try:
        identity = await make_identity(db, SENDER, hourly=40, daily=200)
        credential = await GatewayCredentials(db).issue(SENDER)

        gateways = [await _spawn("serve", database_url) for _ in range(2)]
        processes += gateways
        ports = []
        for gateway in gateways:
            word, port = (await _line(gateway)).split()
            assert word == "listening"
            ports.append(port)

        clients = [
            await _spawn("send", ports[i % 2], credential.username, credential.password, SENDER, TO, "10")
            for i in range(8)
        ]
        processes += clients
        for client in clients:
            assert await _line(client) == "ready"
        for client in clients:  # all at once: the burst
            assert client.stdin is not None
            client.stdin.write(b"go\n")
            await client.stdin.drain()
        replies = [reply for client in clients for reply in json.loads(await _line(client, timeout=60))]
        assert [await asyncio.wait_for(c.wait(), 10) for c in clients] == [0] * 8

        relayed = 0
        for gateway in gateways:
            assert gateway.stdin is not None
            gateway.stdin.close()
            word, count = (await _line(gateway)).split()
            assert word == "relayed"
            relayed += int(count)
            assert await asyncio.wait_for(gateway.wait(), 10) == 0

        async with db.session() as session:
            rows = list((await session.execute(select(SentMessage))).scalars())
        first = min(row.sent_at for row in rows)
        retry = format_retry_at(first + timedelta(hours=1), first)
        expected_refusal = f"4.7.1 Hourly limit of 40 reached for {SENDER}; try after {retry}"
        accepted = [r for r in replies if r[0] == 250]
        refused = [r for r in replies if r[0] == 451]
        assert len(replies) == 80
        assert len(accepted) == 40 and len(refused) == 40, sorted({tuple(r) for r in replies})
        assert {r[1] for r in refused} == {expected_refusal}
        assert relayed == 40
        assert (
            len(rows) == 40
            and {row.state for row in rows} == {"sent"}
            and {r.identity_id for r in rows} == {identity.id}
        )
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await db.dispose()
