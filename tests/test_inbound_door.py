"""The inbound server holds the door: session caps (421 4.7.0), an idle timeout, accept errors logged once per
burst, long lines accepted and forwarded, postmaster@ / abuse@ accepted and posted to OPS_CHANNEL, STARTTLS with
INBOUND_TLS_*, and a warning when the server is off loopback without a certificate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest

from bot.sandbox import FakeSlack
from bot.smtp.inbound import AcceptErrors
from models import Identity
from tests.conftest import PLATFORM_DOMAIN, TRACKING_DOMAIN, Bot, start_bot
from tests.gateway_helpers import make_identity
from tests.mailservers import Mailbox, RunningServer, TestCA, mail_ca_fixture, start_smtp_server  # noqa: F401

OPS = "C_OPS"
ADDRESS = f"jane@{PLATFORM_DOMAIN}"
FORWARD_TIMEOUT = 30.0
PAT = "pat@prospect.example"


@dataclass
class Door:
    bot: Bot
    relay: RunningServer
    mailbox: Mailbox
    identity: Identity

    async def send(
        self, raw: bytes, to: str = ADDRESS, sender: str = "pat@prospect.example"
    ) -> aiosmtplib.SMTPResponse:
        inbound = self.bot.runtime.inbound
        async with aiosmtplib.SMTP(hostname=inbound.host, port=inbound.port, start_tls=False, timeout=30) as client:
            _refused, response = await client.sendmail(sender, [to], raw)
        return aiosmtplib.SMTPResponse(250, response)


async def start_door(tmp_path: Path, database_url: str, fake: FakeSlack, **env: str) -> Door:
    mailbox = Mailbox()
    relay = await start_smtp_server(mailbox=mailbox)
    bot = await start_bot(
        tmp_path, database_url, fake, RELAY_SMTP_URL=f"smtp://{relay.host}:{relay.port}?security=none",
        OPS_CHANNEL=OPS, **env,
    )  # fmt: skip
    identity = await make_identity(bot.db, ADDRESS)
    return Door(bot, relay, mailbox, identity)


@pytest.fixture
async def door(tmp_path: Path, database_url: str, fake_slack: FakeSlack) -> AsyncIterator[Door]:
    running = await start_door(tmp_path, database_url, fake_slack)
    yield running
    await running.bot.slack.close()
    await running.bot.runtime.stop()
    await running.relay.close()


def lead(subject: str, body: str, message_id: str = "<lead-1@prospect.example>") -> bytes:
    message = EmailMessage()
    message["From"] = "Pat Prospect <pat@prospect.example>"
    message["To"] = ADDRESS
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message.set_content(body)
    return message.as_bytes()


async def banner(host: str, port: int, source: str) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    line = await asyncio.wait_for(reader.readline(), 10)
    return line, writer


async def test_300_idle_connections_the_excess_gets_421_and_healthz_and_the_gateway_still_answer(door: Door) -> None:
    inbound = door.bot.runtime.inbound
    # 300 connections from 15 loopback addresses (20 each): the per-address cap (20) admits all of one address,
    # the global cap (100) admits the first 100 overall.
    sources = [f"127.0.0.{n}" for n in range(2, 17)]
    results = await asyncio.gather(*(banner(inbound.host, inbound.port, s) for s in sources for _ in range(20)))
    writers = [w for _, w in results]
    try:
        lines = [line for line, _ in results]
        assert sum(line.startswith(b"220 ") for line in lines) == 100
        assert sum(line.startswith(b"421 4.7.0") for line in lines) == 200
        # One address alone cannot take more than its share.
        extra = [await banner(inbound.host, inbound.port, "127.0.0.2") for _ in range(1)]
        writers += [w for _, w in extra]
        assert extra[0][0].startswith(b"421 4.7.0")

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{door.bot.runtime.http_url}/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                assert r.status == 200
        gateway = door.bot.runtime.gateway
        line, writer = await banner(gateway.host, gateway.port, "127.0.0.1")
        writers.append(writer)
        assert line.startswith(b"220 ")
    finally:
        for writer in writers:
            writer.close()
    # Once the idle connections are gone, mail flows again.
    for writer in writers:
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    assert (await door.send(lead("Re: hello", "Still interested."))).code == 250


async def test_an_idle_session_is_closed_after_the_idle_timeout(db: object) -> None:
    from bot.mail.domains import PlatformDomains
    from bot.services.incoming import InboundStore
    from bot.smtp.inbound import InboundServer

    server = InboundServer(InboundStore(db, PlatformDomains(PLATFORM_DOMAIN, TRACKING_DOMAIN)), idle_timeout=0.3)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        assert (await reader.readline()).startswith(b"220 ")
        rest = await asyncio.wait_for(reader.read(), 10)  # returns at EOF: the server hung up
        assert b"421" in rest or rest == b""
        writer.close()
        assert server.gate.open == 0
    finally:
        await server.stop()


def test_accept_errors_are_logged_once_per_burst(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = AcceptErrors(loop, quiet=3600)
        context = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
        with caplog.at_level(logging.ERROR):
            for _ in range(1000):
                handler(loop, context)
        assert caplog.text.count("cannot accept connections") == 1
        assert handler.suppressed == 999
    finally:
        loop.close()


async def test_a_lead_with_a_2000_byte_line_is_accepted_and_forwarded(door: Door) -> None:
    long_line = "We would like a quote. " + "x" * 2000
    raw = (
        f"From: Pat Prospect <pat@prospect.example>\r\nTo: {ADDRESS}\r\nSubject: Re: pricing\r\n"
        f"Message-ID: <long-1@prospect.example>\r\n\r\n{long_line}\r\nPat\r\n"
    ).encode()
    assert (await door.send(raw)).code == 250

    forward = await door.mailbox.wait_for(lambda m: "pricing" in str(m["Subject"]), timeout=FORWARD_TIMEOUT)
    assert forward["To"] == door.identity.forwarding_address
    [attachment] = list(forward.iter_attachments())
    assert attachment.get_payload(decode=True) == raw  # the original, untouched
    assert "We would like a quote." in forward.get_body(("plain",)).get_content()
    delivered = door.mailbox.find(lambda m: "pricing" in str(m["Subject"]))
    assert delivered is not None and max(len(line) for line in delivered.raw.split(b"\n")) <= 1000


@pytest.mark.parametrize("mailbox", [f"postmaster@{PLATFORM_DOMAIN}", f"Abuse@{TRACKING_DOMAIN}"])
async def test_postmaster_and_abuse_are_accepted_and_reach_ops_channel(door: Door, mailbox: str) -> None:
    mark = door.bot.fake.mark()
    raw = lead("Spam from your network?", "Please look into this.", "<ops-1@isp.example>")
    assert (await door.send(raw, to=mailbox, sender="admin@isp.example")).code == 250
    call = await door.bot.fake.wait_for(
        "chat.postMessage", lambda c: c.args.get("channel") == OPS, after=mark, timeout=FORWARD_TIMEOUT
    )
    assert "Spam from your network?" in call.args["text"] and "pat@prospect.example" in call.args["text"]
    assert door.mailbox.deliveries == []  # not forwarded to any identity


async def test_starttls_is_offered_and_works_with_inbound_tls(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = mail_ca.server_files(tmp_path / "tls")
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    running = await start_door(tmp_path, sqlite_url, fake_slack, INBOUND_TLS_CERT=cert, INBOUND_TLS_KEY=key)
    try:
        inbound = running.bot.runtime.inbound
        # The default context verifies against SSL_CERT_FILE: the test CA.
        client = aiosmtplib.SMTP(hostname="localhost", port=inbound.port, start_tls=False, timeout=10)
        async with client:
            await client.ehlo()
            assert client.supports_extension("starttls")
            await client.starttls(tls_context=ssl.create_default_context())
            assert client.get_transport_info("peercert") is not None  # the session is encrypted now
            _refused, response = await client.sendmail(
                "pat@prospect.example", [ADDRESS], lead("Re: over TLS", "Encrypted hello.")
            )
        assert response.startswith("2.0.0")
        forward = await running.mailbox.wait_for(lambda m: "over TLS" in str(m["Subject"]), timeout=FORWARD_TIMEOUT)
        assert forward is not None
    finally:
        await running.bot.slack.close()
        await running.bot.runtime.stop()
        await running.relay.close()


async def test_start_up_warns_when_inbound_is_off_loopback_without_a_certificate(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_bot(tmp_path, sqlite_url, fake_slack, INBOUND_SMTP="0.0.0.0:0")
    try:
        assert "without INBOUND_TLS_CERT/INBOUND_TLS_KEY" in caplog.text
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


async def test_a_door_process_that_dies_is_replaced(door: Door, caplog: pytest.LogCaptureFixture) -> None:
    inbound = door.bot.runtime.inbound
    first = inbound.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    async with asyncio.timeout(30):
        while inbound.pid in (first, None) or not inbound.port:  # until the replacement listens
            await asyncio.sleep(0.05)
        while True:
            try:
                reply = await door.send(lead("Re: after the crash", "Still here."))
                break
            except (aiosmtplib.SMTPException, OSError):
                await asyncio.sleep(0.05)  # the replacement is still binding
    assert reply.code == 250
    assert "exited on its own" in caplog.text
    await door.mailbox.wait_for(lambda m: "after the crash" in str(m["Subject"]), timeout=FORWARD_TIMEOUT)


async def test_the_door_process_command_line_holds_no_database_url(door: Door) -> None:
    """Any local user can read a process's arguments (ps, /proc): DATABASE_URL may hold the database's password."""
    pid = door.bot.runtime.inbound.pid
    assert pid is not None
    arguments = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "bot.door" in arguments
    assert door.bot.runtime.settings.database_url not in arguments and "postgresql" not in arguments
    assert "sqlite" not in arguments
