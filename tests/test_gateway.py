"""The submission gateway over real SMTP, and its credentials. The headline test bursts from 8 client processes
through 2 gateway processes and checks the limit holds exactly (in recipients), on SQLite and PostgreSQL."""

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

from bot.services.gateway import Suppressions
from bot.services.gateway.credentials import GatewayCredentials, IssuedCredential
from bot.services.gateway.window import LimitDecision, SendingLimits
from bot.smtp.gateway import SubmissionGateway
from bot.smtp.gateway_replies import format_retry_at
from models import (
    Database,
    Identity,
    SentRecipient,
    SlotState,
    Suppression,
    SuppressionReason,
)
from tests.gateway_helpers import (
    Clock,
    RecordingRelay,
    make_identity,
    make_submission,
    message_bytes,
    secret_box,
)

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


async def start_rig(
    db: Database,
    *,
    hourly: int = 40,
    daily: int = 200,
    sender: str = SENDER,
    kind: str = "company",
    submission_kwargs: dict[str, object] | None = None,
    **gateway_kwargs: object,
) -> Rig:
    identity = await make_identity(db, sender, hourly=hourly, daily=daily, kind=kind)
    credentials = GatewayCredentials(db, secret_box())
    credential = await credentials.issue(sender, actor="U_LEAD")
    relay = RecordingRelay()
    clock = Clock()
    submission = make_submission(db, relay, clock=clock, **(submission_kwargs or {}))  # type: ignore[arg-type]
    gateway_kwargs.setdefault("auth_failure_delay", 0)  # tests/test_gateway_credentials.py covers the pause
    gateway = SubmissionGateway(submission, **gateway_kwargs)  # type: ignore[arg-type]
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
    """Slots taken: recipients reserved or sent."""
    query = select(func.count()).select_from(SentRecipient)
    if identity_id is not None:
        query = query.where(SentRecipient.identity_id == identity_id)
    async with db.session() as session:
        return int(await session.scalar(query) or 0)


# --- the SMTP dialogue ---


async def test_a_verified_identity_sends_through_the_gateway(rig: Rig) -> None:
    code, text = await submit(rig, sender="JANE@acme.example.com", rcpts=(TO, "second@customer.example.org"))
    assert (code, text) == (250, "2.0.0 Ok: relayed")
    # One copy per recipient; a company identity's return path stays its own address.
    assert rig.relay.sent == [(SENDER, ["JANE@acme.example.com"] * 2, [TO, "second@customer.example.org"], "Hello")]
    async with rig.db.session() as session:
        rows = list(await session.scalars(select(SentRecipient).order_by(SentRecipient.id)))
    assert [(r.identity_id, r.recipient, r.state, r.sent_at) for r in rows] == [
        (rig.identity.id, TO, SlotState.SENT, rig.clock.now),
        (rig.identity.id, "second@customer.example.org", SlotState.SENT, rig.clock.now),
    ]
    assert rows[0].message_id == "<Hello@test>" and rows[0].verp_token is None


async def test_platform_mail_leaves_with_a_return_path_per_recipient(db: Database) -> None:
    rig = await start_rig(db, sender="ann@platform.example.com", kind="platform")
    try:
        code, _ = await submit(rig, sender=rig.identity.address, rcpts=(TO, "b@customer.example.org"))
    finally:
        await rig.gateway.stop()
    assert code == 250
    async with db.session() as session:
        rows = {r.recipient: r for r in await session.scalars(select(SentRecipient))}
    copies = {c.recipient: c for c in rig.relay.copies}
    assert set(copies) == {TO, "b@customer.example.org"}
    for recipient, copy in copies.items():
        token = rows[recipient].verp_token
        assert token and copy.sender == f"bounces+{token}@platform.example.com"
    assert len({r.verp_token for r in rows.values()}) == 2


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
        b"Resent-From: ceo@acme.example.com\r\nFrom: jane@acme.example.com\r\nTo: x@example.com\r\nSubject: Fwd\r\n"
        b"\r\nHi\r\n",
        b"Resent-Sender: ceo@acme.example.com\r\nResent-From: jane@acme.example.com\r\nFrom: jane@acme.example.com"
        b"\r\nTo: x@example.com\r\nSubject: Fwd\r\n\r\nHi\r\n",
    ],
    ids=["other-from", "two-authors", "other-sender", "no-from", "other-resent-from", "other-resent-sender"],
)
async def test_the_header_from_must_be_the_identity_too(rig: Rig, raw: bytes) -> None:
    code, text = await submit(rig, raw=raw.replace(b"jane@acme.example.com", SENDER.encode()))
    assert code == 550 and ("5.7.1" in text or "5.6.0" in text), text
    assert rig.relay.sent == []
    assert await sent_count(rig.db) == 0, "a refused message takes no slot"


async def test_resent_from_someone_else_gets_the_same_550_as_a_spoofed_from(rig: Rig) -> None:
    spoofed = b"From: ceo@acme.example.com\r\nTo: x@example.com\r\nSubject: Hi\r\n\r\nHi\r\n"
    resent = b"Resent-From: ceo@acme.example.com\r\nFrom: jane@acme.example.com\r\nTo: x@example.com\r\n\r\nHi\r\n"
    assert (
        await submit(rig, raw=resent)
        == await submit(rig, raw=spoofed)
        == (
            550,
            "5.7.1 The From, Sender and Resent-From/-Sender headers may only name this identity, "
            "not ceo@acme.example.com",
        )
    )
    # Naming the identity itself is fine.
    own = b"Resent-From: Jane <JANE@acme.example.com>\r\nFrom: jane@acme.example.com\r\nTo: x@example.com\r\n\r\nHi\r\n"
    assert (await submit(rig, raw=own))[0] == 250
    assert len(rig.relay.sent) == 1


async def test_the_identitys_own_display_name_in_from_is_fine(rig: Rig) -> None:
    code, _ = await submit(rig, header_from=f"Jane Doe <{SENDER.upper()}>")
    assert code == 250 and len(rig.relay.sent) == 1


async def test_an_unverified_identity_cannot_send(db: Database) -> None:
    identity = await make_identity(db, "new@acme.example.com", ready=False)
    credentials = GatewayCredentials(db, secret_box())
    credential = await credentials.issue(identity.address)
    relay = RecordingRelay()
    gateway = SubmissionGateway(make_submission(db, relay))
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


async def test_suppressed_recipients_are_refused_at_rcpt_with_the_reason_and_date(rig: Rig) -> None:
    reasons = {
        "victim@example.com": SuppressionReason.UNSUBSCRIBE,
        "gone@customer.example.org": SuppressionReason.HARD_BOUNCE,
        "angry@customer.example.org": SuppressionReason.COMPLAINT,
    }
    async with rig.db.transaction() as session:
        for address, reason in reasons.items():
            await Suppressions(rig.db).add(
                session, team_id=rig.identity.team_id, address=address, reason=reason, source_message_id=None
            )
    async with rig.db.session() as session:
        day = f"{(await session.scalars(select(Suppression))).first().created_at:%Y-%m-%d}"  # type: ignore[union-attr]
    client = await connect(rig.gateway.port, username=rig.credential.username, password=rig.credential.password)
    try:
        await client.mail(SENDER)
        replies = {}
        for rcpt in ("Victim+promo@Example.com", "Gone@Customer.example.org", "angry@customer.example.org"):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(rcpt)
            replies[rcpt] = (refused.value.code, refused.value.message)
        # The other recipients of the same message still go.
        await client.rcpt(TO)
        reply = await client.data(message_bytes(SENDER, TO))
        assert reply.code == 250
    finally:
        client.close()
    tail = "mail to this address is not sent"
    assert replies == {
        "Victim+promo@Example.com": (
            550,
            f"5.7.1 <Victim+promo@Example.com> is on the suppression list: unsubscribed on {day}; {tail}",
        ),
        "Gone@Customer.example.org": (
            550,
            f"5.7.1 <Gone@Customer.example.org> is on the suppression list: bounced on {day}; {tail}",
        ),
        "angry@customer.example.org": (
            550,
            f"5.7.1 <angry@customer.example.org> is on the suppression list: complained (marked the mail as spam) "
            f"on {day}; {tail}",
        ),
    }
    assert [s[2] for s in rig.relay.sent] == [[TO]]
    assert await sent_count(rig.db) == 1, "a suppressed recipient takes no slot"


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
    async with rig.db.session() as session:
        rows = list(await session.scalars(select(SentRecipient).order_by(SentRecipient.recipient)))
    assert [(r.recipient, r.team_id, r.state) for r in rows] == [
        ("b@customer.example.org", rig.identity.team_id, SlotState.SENT),
        (TO, rig.identity.team_id, SlotState.SENT),
    ]
    message_id = rows[0].message_id
    assert message_id and rows[1].message_id == message_id
    assert [r.recipient_key for r in rows] == ["b@customer.example.org", TO], "kept in the suppressions' normal form"


async def test_relay_failure_answers_451_and_gives_the_slots_back(db: Database) -> None:
    rig = await start_rig(db, hourly=1, daily=1)
    try:
        rig.relay.fail_next = 1
        code, text = await submit(rig, subject="first try")
        assert (code, text) == (451, "4.4.1 Could not relay: try again later")
        assert "hunter2" not in text
        assert await sent_count(db) == 0
        # The only slot of the hour is free again: the retry goes through, and then the limit is reached.
        assert (await submit(rig, subject="retry"))[0] == 250
        assert (await submit(rig, subject="one too many"))[0] == 452
    finally:
        await rig.gateway.stop()
    assert [s[3] for s in rig.relay.sent] == ["retry"]


async def test_over_the_hourly_limit_rcpt_gets_452_saying_when(db: Database) -> None:
    rig = await start_rig(db, hourly=2, daily=10)  # the clock stands at 13:04:30 UTC
    try:
        assert [(await submit(rig))[0] for _ in range(2)] == [250, 250]
        rig.clock.advance(minutes=1)
        code, text = await submit(rig)
        assert code == 452
        assert text == (
            f"4.5.3 Hourly limit of 2 emails (recipients) reached for {SENDER}; send to this recipient after 14:05 UTC"
        )
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
    assert (code, text) == (
        452,
        f"4.5.3 Daily limit of 2 emails (recipients) reached for {SENDER}; "
        "send to this recipient after 2026-01-06 13:05 UTC",
    )


async def test_too_big_is_552_and_handler_errors_are_451_not_500(db: Database) -> None:
    class BrokenLimits(SendingLimits):
        async def reserve(self, identity: Identity, recipient: str) -> LimitDecision:
            raise RuntimeError("database on fire: secret=hunter2")

    identity = await make_identity(db, SENDER)
    credentials = GatewayCredentials(db, secret_box())
    credential = await credentials.issue(identity.address)
    relay = RecordingRelay()
    gateway = SubmissionGateway(make_submission(db, relay, limits=BrokenLimits(db)), max_message_size=2000)
    await gateway.start("127.0.0.1", 0)
    rig = Rig(db, gateway, relay, Clock(), identity, credential, credentials)
    try:
        code, text = await submit(rig, size=5000)
        assert (code, text) == (451, "4.3.0 Temporary server error: try again later")  # at RCPT
        gateway.handler.submission.window = SendingLimits(db)  # with working limits, the size is what fails
        code, text = await submit(rig, size=5000)
        assert code == 552
    finally:
        await gateway.stop()
    assert relay.sent == []


async def test_off_loopback_the_gateway_needs_tls_and_offers_auth_only_after_starttls(db: Database) -> None:
    trustme = pytest.importorskip("trustme")
    identity = await make_identity(db, SENDER)
    credentials = GatewayCredentials(db, secret_box())
    credential = await credentials.issue(identity.address)
    relay = RecordingRelay()

    with pytest.raises(ValueError, match="TLS"):
        await SubmissionGateway(make_submission(db, relay)).start("0.0.0.0", 0)

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    gateway = SubmissionGateway(make_submission(db, relay), tls_context=server_tls)
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


async def test_burst_from_8_client_processes_through_2_gateway_processes_relays_exactly_the_limit(
    database_url: str,
) -> None:
    """8 client processes x 10 messages x 3 recipients (240 RCPTs) through 2 gateway processes, against a limit of
    40 emails (recipients) per hour: exactly 40 recipients are accepted and relayed."""
    db = Database(database_url)
    await db.upgrade()
    processes: list[asyncio.subprocess.Process] = []
    try:
        identity = await make_identity(db, SENDER, hourly=40, daily=200)
        credential = await GatewayCredentials(db, secret_box()).issue(SENDER)

        gateways = [await _spawn("serve", database_url) for _ in range(2)]
        processes += gateways
        ports = []
        for gateway in gateways:
            word, port = (await _line(gateway)).split()
            assert word == "listening"
            ports.append(port)

        clients = [
            await _spawn("send", ports[i % 2], credential.username, credential.password, SENDER, TO, "10", "3")
            for i in range(8)
        ]
        processes += clients
        for client in clients:
            assert await _line(client) == "ready"
        for client in clients:  # all at once: the burst
            assert client.stdin is not None
            client.stdin.write(b"go\n")
            await client.stdin.drain()
        replies = [reply for client in clients for reply in json.loads(await _line(client, timeout=90))]
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
            rows = list((await session.execute(select(SentRecipient))).scalars())
        first = min(row.sent_at for row in rows)
        retry = format_retry_at(first + timedelta(hours=1), first)
        expected_refusal = (
            f"4.5.3 Hourly limit of 40 emails (recipients) reached for {SENDER}; send to this recipient after {retry}"
        )
        rcpt_ok = [r for r in replies if tuple(r) == (250, "2.1.5 Ok")]
        refused = [r for r in replies if r[0] == 452]
        data = [r for r in replies if r[1].startswith("2.0.0")]
        assert len(rcpt_ok) + len(refused) == 240
        assert len(rcpt_ok) == 40 and len(refused) == 200, sorted({tuple(r) for r in replies})
        assert {r[1] for r in refused} == {expected_refusal}
        assert data and {tuple(r) for r in data} == {(250, "2.0.0 Ok: relayed")}
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
