"""Durability: the bot as a real process (`python -m bot run`) killed with SIGKILL and restarted, and real SMTP
clients (smtplib, swaks) talking to the inbound server.

The fake Slack and the customer's mail servers run in the test's own event loop; the bot runs as a subprocess and
reaches them over loopback. Readiness is the bot's own "listening on http://…" log line, read from its output as it
comes; every other wait is on an event (a Slack call, a delivery, a log line), bounded. Bot processes are killed in
the fixture's finally block, so none outlives its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import smtplib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from sqlalchemy import select

from bot.mail.messages import FORWARDED_HEADER, TOKEN_HEADER
from bot.sandbox import FakeSlack, SlackClient
from bot.services.incoming.drain import DRAIN_CONCURRENCY as MAX_CONCURRENT_PROCESSING
from handlers.verification.ids import Verification as V
from models import Database, Identity, InboundMessage, MessageKind, StepStatus, VerificationStep
from tests.companymail import CompanyMail, start_company_mail
from tests.conftest import BOT_TOKEN, PLATFORM_DOMAIN, SIGNING_SECRET, TEAM, TRACKING_DOMAIN, Bot
from tests.mailservers import Delivery, TestCA, free_port, mail_ca_fixture, start_smtp_server  # noqa: F401
from tests.test_company_identity import create_company_identity

START_TIMEOUT = 30.0  # the bot process must say "listening on http://…" within this
EVENT_TIMEOUT = 15.0  # any single awaited event (a Slack call, a delivery)
READY_LINE = "listening on http://"
RECOVERED_LINE = "left from before the restart"

# Every setting the bot reads: unset ones are passed empty so neither the caller's environment nor a .env file
# (load_dotenv never overrides a variable that is present) can change what the bot under test does.
CONFIG_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "SLACK_API_URL",
    "HOST",
    "PORT",
    "DATABASE_URL",
    "DATA_DIR",
    "SECRET_KEYS",
    "PLATFORM_DOMAIN",
    "TRACKING_DOMAIN",
    "INBOUND_SMTP",
    "SUBMISSION_SMTP",
    "RELAY_SMTP_URL",
    "INBOUND_TLS_CERT",
    "INBOUND_TLS_KEY",
    "SUBMISSION_TLS_CERT",
    "SUBMISSION_TLS_KEY",
    "OPS_CHANNEL",
    "APPROVALS_CHANNEL",
    "MANAGERS",
    "SMTP_ALLOW_PRIVATE_HOSTS",
    "SMTP_ALLOWED_PORTS",
    "SSL_CERT_FILE",
    "TRACKING_TIMEOUT",
    "SMTP_TIMEOUT",
    "HEALTH_INTERVAL",
    "DNS_RESOLVER",
    "HEALTH_MENTION",
    "LOG_LEVEL",
)


# ---------------------------------------------------------------------------------------------------------------
# The bot as a subprocess


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the test process dies first (Linux), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class BotProcess:
    """`python -m bot run` with a fixed environment (so fixed ports): start, SIGKILL, start again."""

    def __init__(self, env: dict[str, str], cwd: Path, fake: FakeSlack) -> None:
        self.env = env
        self.cwd = cwd
        self.fake = fake
        self.http_url = f"http://{env['HOST']}:{env['PORT']}"
        host, _, port = env["INBOUND_SMTP"].rpartition(":")
        self.inbound = (host, int(port))
        self.lines: list[str] = []  # everything every generation printed, in order
        self.generation_start = 0  # index in `lines` where the current generation's output begins
        self.proc: asyncio.subprocess.Process | None = None
        self.slack: SlackClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._eof = True
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        """Start the process and return once it serves HTTP (its "listening on http://" line), all servers up."""
        assert self.proc is None or self.proc.returncode is not None, "already running"
        self.generation_start = len(self.lines)
        self.lines.append(f"----- start #{sum(line.startswith('----- start') for line in self.lines) + 1} -----")
        self._eof = False
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
            preexec_fn=_die_with_parent,
        )
        self._reader = asyncio.create_task(self._read(self.proc))
        await self.wait_for_line(READY_LINE, timeout=START_TIMEOUT)
        async with aiohttp.ClientSession() as http, http.get(f"{self.http_url}/healthz") as resp:
            assert resp.status == 200, await resp.text()
        self.slack = SlackClient(self.http_url, SIGNING_SECRET, self.fake, team_id=TEAM)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                async with self._changed:
                    self.lines.append(line.decode("utf-8", "replace").rstrip())
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._eof = True
                self._changed.notify_all()

    def _find(self, text: str, since: int) -> int | None:
        for index in range(since, len(self.lines)):
            if text in self.lines[index]:
                return index
        return None

    async def wait_for_line(self, text: str, *, since: int | None = None, timeout: float = EVENT_TIMEOUT) -> str:
        """The first output line of this generation (from `since`) containing `text`; fails if the process exits."""
        start = self.generation_start if since is None else since
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: self._find(text, start) is not None or self._eof)
        except TimeoutError:
            raise AssertionError(f"bot printed no line with {text!r} within {timeout}s:\n{self.tail()}") from None
        found = self._find(text, start)
        if found is None:
            code = None
            if self.proc is not None:
                with contextlib.suppress(TimeoutError):
                    code = await asyncio.wait_for(self.proc.wait(), 5)
            raise AssertionError(f"bot exited ({code}) before printing {text!r}:\n{self.tail()}")
        return self.lines[found]

    def tail(self, count: int = 60) -> str:
        return "\n".join(self.lines[-count:])

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        if self.slack is not None:
            await self.slack.close()
            self.slack = None
        if self.proc is not None:
            if self.proc.returncode is None:
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
            self._reader = None

    def as_bot(self, db: Database, tmp_path: Path) -> Bot:
        """The conftest Bot shape the shared UI helpers (create_company_identity) expect; only .db, .fake and
        .slack are used."""
        assert self.slack is not None
        return Bot(SimpleNamespace(db=db), self.fake, self.slack, tmp_path)  # type: ignore[arg-type]


def bot_env(tmp_path: Path, database_url: str, fake: FakeSlack, ca: TestCA, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env.update({name: "" for name in CONFIG_VARIABLES})
    env.update(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": fake.url,
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "INBOUND_SMTP": f"127.0.0.1:{free_port()}",
            "SUBMISSION_SMTP": f"127.0.0.1:{free_port()}",
            "DATABASE_URL": database_url,
            "DATA_DIR": str(tmp_path / "data"),
            "PLATFORM_DOMAIN": PLATFORM_DOMAIN,
            "TRACKING_DOMAIN": TRACKING_DOMAIN,
            "SMTP_ALLOW_PRIVATE_HOSTS": "true",
            "SSL_CERT_FILE": ca.cert_file,
            "SMTP_TIMEOUT": "30",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


Spawn = Callable[..., Awaitable[BotProcess]]


@pytest.fixture
async def spawn(tmp_path: Path, fake_slack: FakeSlack, mail_ca: TestCA) -> AsyncIterator[Spawn]:
    """`await spawn(database_url, **env)` starts a bot process; all are SIGKILLed at the end, whatever happened."""
    started: list[BotProcess] = []

    async def _spawn(database_url: str, **overrides: str) -> BotProcess:
        process = BotProcess(bot_env(tmp_path, database_url, fake_slack, mail_ca, **overrides), tmp_path, fake_slack)
        started.append(process)
        await process.start()
        return process

    try:
        yield _spawn
    finally:
        for process in started:
            await process.kill()
            print(f"===== bot output =====\n{process.tail(200)}")  # shown by pytest when the test failed


@pytest.fixture
async def company(mail_ca: TestCA) -> AsyncIterator[CompanyMail]:
    """The customer's mail system. Its mailbox forwarder is NOT set up (forward_to=None): copies arrive only when
    a test delivers them, so the test decides when."""
    mail = await start_company_mail(mail_ca)
    try:
        yield mail
    finally:
        await mail.close()


@pytest.fixture
async def db_of(database_url: str) -> AsyncIterator[Callable[[], Database]]:
    """The test's own connection to the bot's database (opened lazily, after the bot has migrated it)."""
    opened: list[Database] = []

    def _db() -> Database:
        if not opened:
            opened.append(Database(database_url))
        return opened[0]

    try:
        yield _db
    finally:
        for database in opened:
            await database.dispose()


# ---------------------------------------------------------------------------------------------------------------
# Slack and mail helpers


def panel_of(fake: FakeSlack, identity: Identity) -> tuple[str, str]:
    """(channel, ts) of the newest verification panel posted for the identity."""

    def is_panel(call: Any) -> bool:
        blocks = str(call.args.get("blocks"))
        return call.ok and identity.address in blocks and V.send_test_email in blocks

    panels = [c for c in fake.calls if c.method == "chat.postMessage" and is_panel(c)]
    assert panels, "no verification panel was posted"
    return panels[-1].response["channel"], panels[-1].response["ts"]


async def click(process: BotProcess, identity: Identity, action: str) -> None:
    assert process.slack is not None
    channel, ts = panel_of(process.fake, identity)
    ack = await process.slack.click_message(channel, ts, action)
    assert ack.status == 200, ack


async def panel_says(fake: FakeSlack, identity: Identity, text: str, *, after: int) -> None:
    """Wait until the panel is updated in place with `text`."""
    _, ts = panel_of(fake, identity)
    await fake.wait_for(
        "chat.update",
        lambda c: c.args.get("ts") == ts and text in str(c.args.get("blocks")),
        after=after,
        timeout=EVENT_TIMEOUT,
    )


async def history_says(fake: FakeSlack, identity: Identity, text: str, *, after: int) -> None:
    """Wait for a reply with `text` in the panel's thread (the step history)."""
    _, ts = panel_of(fake, identity)
    await fake.wait_for(
        "chat.postMessage",
        lambda c: c.args.get("thread_ts") == ts and text in str(c.args.get("text")),
        after=after,
        timeout=EVENT_TIMEOUT,
    )


def history(fake: FakeSlack, identity: Identity) -> list[str]:
    channel, ts = panel_of(fake, identity)
    return [m["text"] for m in fake.channel_messages(channel) if m.get("thread_ts") == ts]


async def tracking_step(db: Database, identity: Identity) -> VerificationStep:
    async with db.session() as session:
        step = await session.scalar(
            select(VerificationStep).where(
                VerificationStep.identity_id == identity.id, VerificationStep.step == "tracking"
            )
        )
    assert step is not None
    return step


async def stored_with(db: Database, marker: str) -> list[InboundMessage]:
    """Stored inbound messages whose raw bytes contain `marker` (a tracking token, a lead's Message-ID)."""
    async with db.session() as session:
        rows = (await session.scalars(select(InboundMessage).order_by(InboundMessage.id))).all()
    return [row for row in rows if marker.encode() in row.raw]


def is_response_email(message: EmailMessage) -> bool:
    return "Tracking verification" in str(message.get("Subject", ""))


async def send_response_email(process: BotProcess, company: CompanyMail, identity: Identity) -> Delivery:
    """Click "Send Response Email"; return the response email as the customer's MX received it, once the step
    is pending (its history says it is waiting for the copy)."""
    mark = process.fake.mark()
    await click(process, identity, V.send_response)
    response = await company.mailbox.wait_for_delivery(is_response_email, timeout=EVENT_TIMEOUT)
    await history_says(process.fake, identity, "waiting up to", after=mark)
    return response


async def deliver(process: BotProcess, mail_from: str, rcpt: str, raw: bytes) -> aiosmtplib.SMTPResponse:
    """Hand `raw` to the bot's inbound server the way the customer's mailbox forwarder would; the DATA reply."""
    host, port = process.inbound
    client = aiosmtplib.SMTP(
        hostname=host, port=port, local_hostname="mx.acme.example.com", timeout=10, start_tls=False, use_tls=False
    )
    await client.connect()
    try:
        await client.mail(mail_from)
        await client.rcpt(rcpt)
        return await client.data(raw)
    finally:
        client.close()  # no QUIT: the caller may kill the bot the moment it has the reply


# ---------------------------------------------------------------------------------------------------------------
# 1. Killed, restarted: a pending tracking check completes when its copy arrives


async def test_a_pending_tracking_check_completes_when_its_copy_arrives_after_a_sigkill(
    tmp_path: Path, database_url: str, company: CompanyMail, spawn: Spawn, db_of: Callable[[], Database]
) -> None:
    bot = await spawn(database_url, RELAY_SMTP_URL=company.relay_url)
    db = db_of()
    identity = await create_company_identity(bot.as_bot(db, tmp_path), company)
    response = await send_response_email(bot, company, identity)
    token = str(response.message[TOKEN_HEADER])
    assert (await tracking_step(db, identity)).status == "pending"

    await bot.kill()
    assert await stored_with(db, token) == [], "no copy has arrived yet"
    await bot.start()

    # The customer's mailbox forwards the copy only now, to the restarted bot.
    mark = bot.fake.mark()
    reply = await deliver(bot, identity.address, identity.tracking_address, response.raw)
    assert reply.code == 250, reply
    await panel_says(bot.fake, identity, "Tracking Verified", after=mark)

    step = await tracking_step(db, identity)
    assert step.status == StepStatus.VERIFIED and step.verified_at is not None
    # (Its classification is written after the panel update, with nothing observable after it: not checked here;
    # the next test checks it once start-up recovery says it is done.)
    assert len(await stored_with(db, token)) == 1
    await history_says(bot.fake, identity, "Tracking Verified", after=mark)


# ---------------------------------------------------------------------------------------------------------------
# 2. Killed right after answering 250, before processing: the stored copy is processed on start


class GatedRelay:
    """The platform relay (the customer's MX in these tests). Leads the bot forwards (they carry FORWARDED_HEADER)
    are held in DATA until `release()`; everything else goes to the company mailbox at once. Held messages are
    refused on release (their sender is gone by then), so only forwards made after it are delivered."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.held = 0
        self.url = ""
        self._released = False
        self._changed = asyncio.Condition()

    async def on_data(self, envelope: Any, message: EmailMessage) -> str | None:
        if message.get(FORWARDED_HEADER) is None or self._released:
            return None
        async with self._changed:
            self.held += 1
            self._changed.notify_all()
        await self.gate.wait()
        return "451 4.3.0 Held by the test and dropped"

    async def wait_held(self, count: int) -> None:
        async with asyncio.timeout(EVENT_TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: self.held >= count)

    def release(self) -> None:
        self._released = True
        self.gate.set()


@pytest.fixture
async def relay(company: CompanyMail) -> AsyncIterator[GatedRelay]:
    gated = GatedRelay()
    server = await start_smtp_server(mailbox=company.mailbox, on_data=gated.on_data)
    gated.url = f"smtp://{server.host}:{server.port}?security=none"
    try:
        yield gated
    finally:
        gated.release()
        await server.close()


def lead_reply(identity: Identity, number: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Pat Prospect {number} <pat{number}@prospect.example>"
    message["To"] = identity.address
    message["Subject"] = f"Re: our offer ({number})"
    message["Message-ID"] = make_msgid(domain="prospect.example")
    message.set_content(f"Sounds good, please call me on Tuesday. ({number})\n")
    return message


async def sigkill_while_processing_is_busy(
    bot: BotProcess, db: Database, tmp_path: Path, company: CompanyMail, relay: GatedRelay
) -> tuple[Identity, Delivery, list[EmailMessage]]:
    """Fill every processing slot with leads whose forwarding hangs in the relay, deliver the tracking copy (250:
    committed, its processing queued behind the busy slots) and SIGKILL the bot at once: deterministically "after
    250, before processing". Returns with the bot dead and the relay's gate open."""
    identity = await create_company_identity(bot.as_bot(db, tmp_path), company)
    response = await send_response_email(bot, company, identity)
    leads = [lead_reply(identity, n) for n in range(MAX_CONCURRENT_PROCESSING)]
    for n, lead in enumerate(leads):
        reply = await deliver(bot, f"pat{n}@prospect.example", identity.tracking_address, lead.as_bytes())
        assert reply.code == 250, reply
    await relay.wait_held(MAX_CONCURRENT_PROCESSING)  # every processing slot is now stuck forwarding a lead

    reply = await deliver(bot, identity.address, identity.tracking_address, response.raw)
    assert reply.code == 250, reply
    await bot.kill()
    relay.release()  # the relay works again for whatever runs next
    return identity, response, leads


async def test_a_copy_accepted_right_before_a_sigkill_is_processed_on_restart(
    tmp_path: Path,
    database_url: str,
    company: CompanyMail,
    relay: GatedRelay,
    spawn: Spawn,
    db_of: Callable[[], Database],
) -> None:
    bot = await spawn(database_url, RELAY_SMTP_URL=relay.url)
    db = db_of()
    identity, response, _leads = await sigkill_while_processing_is_busy(bot, db, tmp_path, company, relay)
    token = str(response.message[TOKEN_HEADER])
    copies = await stored_with(db, token)
    assert len(copies) == 1, "250 was answered, so the copy is committed"
    assert copies[0].processed_at is None and copies[0].classification is None, "killed before processing"
    assert (await tracking_step(db, identity)).status == "pending"

    mark = bot.fake.mark()
    await bot.start()
    await panel_says(bot.fake, identity, "Tracking Verified", after=mark)
    await bot.wait_for_line(RECOVERED_LINE)
    step = await tracking_step(db, identity)
    assert step.status == StepStatus.VERIFIED and step.verified_at is not None
    copies = await stored_with(db, token)
    assert (
        len(copies) == 1 and copies[0].classification == MessageKind.VERIFICATION and copies[0].processed_at is not None
    )

    # The forwarder delivers the same copy again (a retry, a second MX): still one stored message.
    reply = await deliver(bot, identity.address, identity.tracking_address, response.raw)
    assert reply.code == 250, reply
    assert len(await stored_with(db, token)) == 1


async def test_leads_whose_forwarding_a_sigkill_cut_short_are_forwarded_once_after_restart(
    tmp_path: Path,
    database_url: str,
    company: CompanyMail,
    relay: GatedRelay,
    spawn: Spawn,
    db_of: Callable[[], Database],
) -> None:
    """The processing of the leads was under way (forward in flight) when the bot died: the restart takes over."""
    bot = await spawn(database_url, RELAY_SMTP_URL=relay.url)
    db = db_of()
    _identity, _response, leads = await sigkill_while_processing_is_busy(bot, db, tmp_path, company, relay)
    assert not [m for m in company.mailbox.messages if m.get(FORWARDED_HEADER) is not None]

    await bot.start()
    await bot.wait_for_line(RECOVERED_LINE)  # start-up recovery is done
    for lead in leads:
        wanted = str(lead["Message-ID"])

        def forward_of(message: EmailMessage, wanted: str = wanted) -> bool:
            return message.get(FORWARDED_HEADER) is not None and str(message.get("In-Reply-To")) == wanted

        try:
            await company.mailbox.wait_for(forward_of, timeout=EVENT_TIMEOUT)
        except TimeoutError:
            states = [(r.id, r.processed_at, r.classification) for r in await stored_with(db, wanted)]
            raise AssertionError(
                f"lead {wanted} (accepted with 250, forwarding cut short by SIGKILL) was not forwarded after the "
                f"restart; stored as (id, processed_at, classification): {states}"
            ) from None
        assert sum(forward_of(m) for m in company.mailbox.messages) == 1, "forwarded exactly once"
        rows = await stored_with(db, wanted)
        assert len(rows) == 1 and rows[0].classification == MessageKind.LEAD and rows[0].forwarded_at is not None


# ---------------------------------------------------------------------------------------------------------------
# 3. Killed while a tracking check is pending and no copy comes: it still times out, once


async def test_a_pending_tracking_check_still_times_out_once_after_a_restart(
    tmp_path: Path, database_url: str, company: CompanyMail, spawn: Spawn, db_of: Callable[[], Database]
) -> None:
    bot = await spawn(database_url, RELAY_SMTP_URL=company.relay_url, TRACKING_TIMEOUT="2")
    db = db_of()
    identity = await create_company_identity(bot.as_bot(db, tmp_path), company)
    await send_response_email(bot, company, identity)
    await bot.kill()
    pending = await tracking_step(db, identity)
    assert pending.status == StepStatus.PENDING, "the killed process must not have decided the step"

    mark = bot.fake.mark()
    await bot.start()
    await panel_says(bot.fake, identity, "no copy arrived in time", after=mark)
    await history_says(bot.fake, identity, "no copy arrived in time", after=mark)  # posted after the panel update
    assert (await tracking_step(db, identity)).status == "failed"
    assert sum("no copy arrived in time" in text for text in history(bot.fake, identity)) == 1

    # A second attempt that also times out: by the time its failure shows, the restarted process has swept
    # many times since the first one fired, so a duplicate of the first would be in the history by now.
    mark = bot.fake.mark()
    await send_response_email(bot, company, identity)
    await panel_says(bot.fake, identity, "no copy arrived in time", after=mark)
    await history_says(bot.fake, identity, "no copy arrived in time", after=mark)
    step = await tracking_step(db, identity)
    assert step.status == StepStatus.FAILED and step.attempt == pending.attempt + 1
    assert sum("no copy arrived in time" in text for text in history(bot.fake, identity)) == 2


# ---------------------------------------------------------------------------------------------------------------
# 4. Real SMTP clients talk to the inbound server


async def platform_identity(bot: Bot, local: str) -> str:
    view = await bot.open_new_identity_form()
    address = f"{local}@{PLATFORM_DOMAIN}"
    await bot.fill_platform_form(view["id"], address=address)
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    return address


async def stored_for(bot: Bot, address: str) -> list[InboundMessage]:
    async with bot.db.session() as session:
        rows = (await session.scalars(select(InboundMessage))).all()
    return [row for row in rows if address in row.rcpt_tos]


async def test_smtplib_delivers_to_a_served_address_and_is_refused_for_an_unserved_one(bot: Bot) -> None:
    served = await platform_identity(bot, "lea")
    host, port = bot.runtime.inbound.host, bot.runtime.inbound.port
    message = EmailMessage()
    message["From"] = "Pat Prospect <pat@prospect.example>"
    message["To"] = served
    message["Subject"] = "Hello from smtplib"
    message["Message-ID"] = make_msgid(domain="prospect.example")
    message.set_content("A line.\n.A line starting with a dot.\n")

    def talk() -> tuple[dict[str, tuple[int, bytes]], BaseException | None]:
        with smtplib.SMTP(host, port, timeout=10) as client:
            refused = client.send_message(message, "pat@prospect.example", [served, f"nobody@{PLATFORM_DOMAIN}"])
        try:
            with smtplib.SMTP(host, port, timeout=10) as client:
                client.send_message(message, "pat@prospect.example", [f"nobody@{PLATFORM_DOMAIN}"])
        except smtplib.SMTPRecipientsRefused as exc:
            return refused, exc
        return refused, None

    refused, error = await asyncio.to_thread(talk)
    unserved = f"nobody@{PLATFORM_DOMAIN}"
    assert list(refused) == [unserved] and refused[unserved][0] == 550 and b"5.1.1" in refused[unserved][1]
    assert isinstance(error, smtplib.SMTPRecipientsRefused), "the only recipient refused: nothing to send"
    assert error.recipients[unserved][0] == 550

    rows = await stored_for(bot, served)
    assert len(rows) == 1
    assert rows[0].rcpt_tos == [served], "only the accepted recipient is recorded"
    assert rows[0].message_id == str(message["Message-ID"])
    assert b"\r\n.A line starting with a dot." in rows[0].raw, "dot-stuffing undone"
    assert not await stored_for(bot, f"nobody@{PLATFORM_DOMAIN}")


async def swaks(*args: str) -> tuple[int, str]:
    path = shutil.which("swaks")
    assert path is not None
    proc = await asyncio.create_subprocess_exec(
        path,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, output.decode("utf-8", "replace")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (.ci/run installs it)")
async def test_swaks_delivers_to_a_served_address_and_reports_550_for_an_unserved_one(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    served = await platform_identity(bot, "sam")
    host, port = bot.runtime.inbound.host, bot.runtime.inbound.port
    common = [
        "--server",
        host,
        "--port",
        str(port),
        "--helo",
        "client.example.com",
        "--from",
        "pat@prospect.example",
        "--timeout",
        "10",
    ]

    code, output = await swaks(
        *common, "--to", served, "--header", "Subject: Hello from swaks", "--body", "Interested, call me."
    )
    assert code == 0, output
    assert "250 2.0.0 Ok: queued" in output
    rows = await stored_for(bot, served)
    assert len(rows) == 1 and b"Subject: Hello from swaks" in rows[0].raw

    code, output = await swaks(*common, "--to", f"nobody@{PLATFORM_DOMAIN}")
    assert code == 24, output  # swaks: "no RCPTs accepted"
    assert "550 5.1.1" in output
    assert not await stored_for(bot, f"nobody@{PLATFORM_DOMAIN}")


# ---------------------------------------------------------------------------------------------------------------
# 5. Killed twice while leads stream in: every lead answered 250 is forwarded; a repeat is the same message


async def test_leads_streaming_in_across_two_sigkills_are_all_forwarded_and_repeats_keep_their_message_id(
    tmp_path: Path, database_url: str, spawn: Spawn, db_of: Callable[[], Database]
) -> None:
    from tests.gateway_helpers import make_identity
    from tests.mailservers import Mailbox

    mailbox = Mailbox()
    relay = await start_smtp_server(mailbox=mailbox)
    try:
        bot = await spawn(database_url, RELAY_SMTP_URL=f"smtp://{relay.host}:{relay.port}?security=none")
        identity = await make_identity(db_of(), f"stream@{PLATFORM_DOMAIN}")
        accepted: list[str] = []
        number = 0

        async def stream(count: int) -> None:
            nonlocal number
            for _ in range(count):
                lead = lead_reply(identity, number)
                number += 1
                try:
                    reply = await deliver(bot, f"pat{number}@prospect.example", identity.address, lead.as_bytes())
                except (aiosmtplib.SMTPException, OSError):
                    continue  # the bot is down or died mid-session: not answered 250, the sender would retry
                if reply.code == 250:
                    accepted.append(str(lead["Message-ID"]))

        for _kill in range(2):
            streaming = asyncio.ensure_future(stream(60))
            async with asyncio.timeout(60):
                while len(accepted) < 20 * (_kill + 1):  # some accepted, some processing under way: kill now
                    await asyncio.sleep(0.01)
            await bot.kill()
            await streaming
            await bot.start()
        await stream(20)

        for wanted in accepted:
            try:
                await mailbox.wait_for(lambda m, w=wanted: str(m.get("In-Reply-To")) == w, timeout=EVENT_TIMEOUT * 2)
            except TimeoutError:
                raise AssertionError(f"lead {wanted} was answered 250 but never forwarded") from None
        by_lead: dict[str, set[str]] = {}
        for message in mailbox.messages:
            by_lead.setdefault(str(message["In-Reply-To"]), set()).add(str(message["Message-ID"]))
        assert all(len(ids) == 1 for ids in by_lead.values()), "a repeated forward is the same message"
        assert len(accepted) >= 40
    finally:
        await relay.close()
