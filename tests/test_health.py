"""Identities that stay healthy, end to end: scheduled re-checks against the customer's real SMTP server, the CC
tracking probe through the customer's forwarder, DNS from a real DNS server on loopback (tests/fake_dns.py), bounce
rates that pause an identity at the gateway, a manager's Resume, and what the channel is told (once per change).

Intervals are fractions of a second to a few seconds; tests wait on events (a channel message, a finished run in the
database) with a bound, never on sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select, update

from bot.mail.diagnosis import SUCCESS_PROMPT
from bot.sandbox import FakeSlack
from bot.services.health.runs import HealthRuns
from handlers.health.ids import Health as H
from handlers.identity.ids import IdentityForm as F
from models import (
    AuditEvent,
    Database,
    HealthCheck,
    Identity,
    IdentityHealth,
    IdentityKind,
    IdentityLifecycle,
    IdentityStatus,
    VerificationStep,
)
from models.base import utcnow
from tests.companymail import COMPANY_ADDRESS, CompanyMail, start_company_mail
from tests.conftest import CHANNEL, LEAD, PLATFORM_DOMAIN, Bot, start_bot
from tests.fake_dns import FakeDNS, Zone, dns_server_fixture  # noqa: F401
from tests.mailservers import TestCA, mail_ca  # noqa: F401
from tests.test_company_identity import create_company_identity, test_setup

ACME = "acme.example.com"
NEW_PASSWORD = "qrstmnopijklefgh"


def good_acme_zone(zone: Zone) -> None:
    """What a customer whose mail goes out through its own server (127.0.0.1 here) publishes."""
    zone.add(ACME, "TXT", "v=spf1 ip4:127.0.0.1 -all")
    zone.add(f"_dmarc.{ACME}", "TXT", "v=DMARC1; p=reject")


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


async def health_bot(tmp_path: Path, url: str, fake: FakeSlack, company: CompanyMail, dns: FakeDNS, **env: str) -> Bot:
    # The probe's copy is waited for up to TRACKING_TIMEOUT: generous, so a loaded machine never fails a good probe (a
    # run ends when its copy arrives); the test of a missing copy moves the deadline instead of waiting for it.
    settings = {"HEALTH_INTERVAL": "0.5", "TRACKING_TIMEOUT": "20", "MANAGERS": "U_MANAGER", **env}
    bot = await start_bot(
        tmp_path, url, fake, RELAY_SMTP_URL=company.relay_url, SMTP_TIMEOUT="5", DNS_RESOLVER=dns.address, **settings
    )
    company.inbound = (bot.runtime.inbound.host, bot.runtime.inbound.port)
    return bot


@pytest.fixture
async def hbot(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, dns_server: FakeDNS
) -> AsyncIterator[Bot]:
    bot = await health_bot(tmp_path, sqlite_url, fake_slack, company, dns_server, HEALTH_MENTION="S0SALES")
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def make_ready(bot: Bot, identity_id: int, **values: object) -> None:
    """As if the three verification steps had passed (they are tested elsewhere)."""
    async with bot.db.transaction() as session:
        await session.execute(
            update(Identity).where(Identity.id == identity_id).values(status=IdentityStatus.READY, **values)
        )


async def ready_company_identity(bot: Bot, company: CompanyMail, **values: object) -> Identity:
    identity = await create_company_identity(bot, company)  # through the form: the password is saved encrypted
    company.forward_to = identity.tracking_address  # the customer's mailbox forwards copies to it
    await make_ready(bot, identity.id, **values)
    return identity


async def finished_runs(bot: Bot, identity_id: int, at_least: int, timeout: float = 30) -> list[HealthCheck]:
    """The identity's finished runs, once there are `at_least` (polling the database with a bound)."""
    async with asyncio.timeout(timeout):
        while True:
            async with bot.db.session() as session:
                rows = list(
                    await session.scalars(
                        select(HealthCheck)
                        .where(HealthCheck.identity_id == identity_id, HealthCheck.finished_at.is_not(None))
                        .order_by(HealthCheck.id)
                    )
                )
            if len(rows) >= at_least:
                return rows
            await asyncio.sleep(0.05)


async def identity_of(bot: Bot, identity_id: int) -> Identity:
    async with bot.db.session() as session:
        identity = await session.get(Identity, identity_id)
    assert identity is not None
    return identity


def posted(bot: Bot, words: str, after: int = 0) -> list[Any]:
    return [
        c for c in bot.fake.calls[after:] if c.method == "chat.postMessage" and c.ok and words in c.args.get("text", "")
    ]


async def wait_posted(bot: Bot, words: str, after: int, timeout: float = 30) -> Any:
    return await bot.fake.wait_for(
        "chat.postMessage", lambda c: words in c.args.get("text", ""), after=after, timeout=timeout
    )


def blocks_text(call: Any) -> str:
    """Every text of a message's blocks (sections, contexts, button labels), one per line."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(call.args.get("blocks") or [])
    return "\n".join(found)


async def click(bot: Bot, call: Any, action: str, *, user: str = LEAD) -> None:
    ack = await bot.slack.click_message(call.response["channel"], call.response["ts"], action, user=user)
    assert ack.status == 200


async def ephemeral(bot: Bot, predicate: Callable[[dict[str, Any]], bool], after: int) -> str:
    call = await bot.fake.wait_for("chat.postEphemeral", lambda c: predicate(c.args), after=after, timeout=30)
    return str(call.args.get("text")) + blocks_text(call)


# ---- the SMTP login ---------------------------------------------------------------------------------------------


async def test_a_refused_password_is_told_once_and_editing_it_makes_the_identity_healthy_again(
    hbot: Bot, company: CompanyMail, dns_server: FakeDNS
) -> None:
    bot = hbot
    good_acme_zone(dns_server.zone)
    identity = await ready_company_identity(bot, company)
    first = await finished_runs(bot, identity.id, 1)
    assert first[0].outcome == "passed" and first[0].started_by == "schedule"
    assert {f["check"] for f in first[0].findings} == {"login", "tracking", "spf", "dmarc"}
    assert not posted(bot, "needs attention")

    # The customer's IT revokes the app password.
    mark = bot.fake.mark()
    company.logins[COMPANY_ADDRESS] = "revoked-app-passwd"
    message = await wait_posted(bot, "needs attention", mark)
    blocks = blocks_text(message)
    assert message.args["channel"] == CHANNEL and COMPANY_ADDRESS in message.args["text"]
    assert "the mail server refused the password" in blocks and "app password was probably revoked" in blocks
    assert "create a new one and run *Edit*" in blocks
    stored = await identity_of(bot, identity.id)
    assert stored.health == IdentityHealth.NEEDS_ATTENTION
    assert stored.health_reason == "the mail server refused the password"
    assert stored.status == IdentityStatus.READY, "a check needing attention does not stop the identity"

    # Later checks find the same: nothing more is posted.
    seen = len(await finished_runs(bot, identity.id, 1))
    await finished_runs(bot, identity.id, seen + 2)
    assert len(posted(bot, "needs attention", mark)) == 1

    # Fixed: a new app password, entered with Edit (tested before saving). The identity stays in service.
    company.logins[COMPANY_ADDRESS] = NEW_PASSWORD
    mark = bot.fake.mark()
    await click(bot, message, H.edit)
    view = await bot.loaded_form(mark, F.callback)
    assert view["title"]["text"] == "Edit email identity"
    bot.slack.type(view["id"], F.smtp_password, NEW_PASSWORD)
    assert SUCCESS_PROMPT in await test_setup(bot, view["id"])
    assert (await bot.slack.submit(view["id"])).body["response_action"] == "update"
    assert (await identity_of(bot, identity.id)).status == IdentityStatus.READY, "a new password resets no step"

    await click(bot, message, H.rerun)  # Re-run checks (or the next scheduled run, whichever comes first)
    again = await wait_posted(bot, "healthy again", mark)
    assert COMPANY_ADDRESS in again.args["text"]
    stored = await identity_of(bot, identity.id)
    assert (stored.health, stored.health_reason) == (IdentityHealth.HEALTHY, "")
    async with bot.db.session() as session:
        changes = list(await session.scalars(select(AuditEvent).where(AuditEvent.action == "health.changed")))
    assert [c.detail["health"]["to"] for c in changes] == ["needs_attention", "healthy"]


async def test_only_the_creator_or_a_manager_may_rerun_the_checks(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, dns_server: FakeDNS
) -> None:
    bot = await health_bot(tmp_path, sqlite_url, fake_slack, company, dns_server, HEALTH_INTERVAL="3600")
    try:
        good_acme_zone(dns_server.zone)
        identity = await ready_company_identity(bot, company)
        mark = bot.fake.mark()
        await bot.slack.command(f"verify {COMPANY_ADDRESS}")
        panel = await wait_posted(bot, COMPANY_ADDRESS, mark)
        assert "*Health:*" in blocks_text(panel) and "Not checked" in blocks_text(panel)

        await click(bot, panel, H.rerun, user="U_OTHER")
        refusal = await ephemeral(bot, lambda a: a.get("user") == "U_OTHER", mark)
        assert "Only <@U_LEAD> or a manager can re-run the health checks" in refusal
        async with bot.db.session() as session:
            assert (await session.scalars(select(HealthCheck))).all() == [], "nothing ran"

        await click(bot, panel, H.rerun)
        answer = await ephemeral(bot, lambda a: "finished" in str(a.get("text")), mark)
        assert "nothing is broken" in answer
        [run] = await finished_runs(bot, identity.id, 1)
        assert run.started_by == LEAD and run.outcome == "passed"
        update_call = await bot.fake.wait_for(
            "chat.update", lambda c: "Last checked" in str(c.args.get("blocks")), after=mark
        )
        assert "every check passed" in str(update_call.args["blocks"]), "the panel shows the last check"
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


# ---- the CC tracking probe --------------------------------------------------------------------------------------


async def test_a_removed_forwarder_is_named_with_the_tracking_address_to_add_back(
    hbot: Bot, company: CompanyMail, dns_server: FakeDNS
) -> None:
    bot = hbot
    good_acme_zone(dns_server.zone)
    identity = await ready_company_identity(bot, company)
    [first] = (await finished_runs(bot, identity.id, 1))[:1]
    assert any(f["check"] == "tracking" and f["status"] == "ok" for f in first.findings)
    probes = probes_of(company)
    assert probes and probes[0]["To"].addresses[0].addr_spec == COMPANY_ADDRESS
    usage = await bot.runtime.services.window.usage(identity.id)
    assert (usage.sent_last_hour, usage.sent_last_day) == (0, 0), "the probe is platform mail: no limit counts it"

    mark = bot.fake.mark()
    company.forward_to = None  # IT removed the forwarder
    before = len(probes_of(company))
    async with asyncio.timeout(30):  # the next probe reaches the mailbox and is not forwarded any more
        while len(probes_of(company)) <= before:
            await asyncio.sleep(0.05)
    token = str(probes_of(company)[before]["X-Identity-Bot-Token"])
    async with bot.db.transaction() as session:  # its deadline passes (instead of waiting TRACKING_TIMEOUT)
        await session.execute(
            update(HealthCheck).where(HealthCheck.probe_token == token).values(probe_deadline=utcnow())
        )
    message = await wait_posted(bot, "needs attention", mark)
    blocks = blocks_text(message)
    assert f"`{identity.tracking_address}`" in blocks and "forwarder" in blocks and "back" in blocks
    assert "<!subteam^S0SALES>" in blocks, "HEALTH_MENTION is pinged for needs attention"
    stored = await identity_of(bot, identity.id)
    assert stored.health == IdentityHealth.NEEDS_ATTENTION and stored.status == IdentityStatus.READY
    assert "no copy of the probe reached the CC tracking address" in stored.health_reason
    async with bot.db.session() as session:
        steps = list(await session.scalars(select(VerificationStep.status)))
    assert set(steps) <= {"not_run"}, "the probe is not the Tracking step: no step changed"


def probes_of(company: CompanyMail) -> list[Any]:
    return [m for m in company.mailbox.messages if "Tracking check" in str(m["Subject"])]


# ---- DNS --------------------------------------------------------------------------------------------------------


async def test_missing_dmarc_spf_without_the_host_and_missing_dkim_are_named_with_the_record_to_publish(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, dns_server: FakeDNS
) -> None:
    bot = await health_bot(tmp_path, sqlite_url, fake_slack, company, dns_server, HEALTH_INTERVAL="3600")
    try:
        from bot.mail import dkim
        from tests.gateway_helpers import make_identity

        z = dns_server.zone
        z.add(ACME, "TXT", "v=spf1 ip4:192.0.2.0/24 -all")  # the customer's server (127.0.0.1) is not listed
        # No _dmarc.acme.example.com, and no google._domainkey.acme.example.com although mail goes through Google.
        identity = await ready_company_identity(bot, company, esp_provider="google")
        # The platform domain: our relay is listed, DMARC is p=none, and the DKIM record is not our key.
        z.add(PLATFORM_DOMAIN, "TXT", "v=spf1 ip4:127.0.0.1 ~all")
        z.add(f"_dmarc.{PLATFORM_DOMAIN}", "TXT", "v=DMARC1; p=none")
        z.add(f"identitybot._domainkey.{PLATFORM_DOMAIN}", "TXT", dkim.public_record(dkim.generate_key()))
        platform = await make_identity(bot.db, f"lea@{PLATFORM_DOMAIN}")
        health = bot.runtime.services.health

        mark = bot.fake.mark()
        assert await health.rerun(identity.id, LEAD) and await health.rerun(platform.id, LEAD)
        company_message = await wait_posted(bot, f"{COMPANY_ADDRESS} needs attention", mark)
        text = blocks_text(company_message)
        assert "acme.example.com has no DMARC record" in text
        assert (
            '_dmarc.acme.example.com. 3600 IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@acme.example.com"' in text
        )
        assert "does not list 127.0.0.1" in text
        assert 'acme.example.com. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip4:192.0.2.0/24 -all"' in text
        assert "acme.example.com has no DKIM record" in text and "google._domainkey" in text
        stored = await identity_of(bot, identity.id)
        assert stored.health_reason == (
            "SPF of acme.example.com does not let 127.0.0.1 send; acme.example.com has no usable DMARC record; "
            "acme.example.com has no usable DKIM record"
        )

        platform_message = await wait_posted(bot, f"lea@{PLATFORM_DOMAIN} needs attention", mark)
        text = blocks_text(platform_message)
        ours = dkim.zone_lines("identitybot", PLATFORM_DOMAIN, bot.runtime.signer.key())
        assert "not the key we sign with" in text and ours in text
        assert "p=none" in text and "p=quarantine" in text, "DMARC p=none: advice, with the stronger record"
        assert "Identity Bot administrator publishes" in text
        assert (await identity_of(bot, platform.id)).health_reason == "platform.example.com has no usable DKIM record"

        # A DNS server that fails says nothing about the records: the problems stand, nothing new is posted.
        z.mode = "servfail"
        mark = bot.fake.mark()
        assert await health.rerun(identity.id, LEAD)
        runs = await finished_runs(bot, identity.id, 2)
        assert runs[-1].outcome == "problems" and all(
            f["carried"] for f in runs[-1].findings if f["status"] == "problem"
        )
        assert (await identity_of(bot, identity.id)).health == IdentityHealth.NEEDS_ATTENTION
        answer = await ephemeral(bot, lambda a: "finished" in str(a.get("text")), mark)
        assert "still needs attention" in answer and "could not be checked this time" in answer
        assert not posted(bot, COMPANY_ADDRESS, mark), "no channel message: nothing changed"

        # Published: healthy again.
        z.mode = "normal"
        good_acme_zone(z)
        z.set(ACME, "TXT", "v=spf1 ip4:127.0.0.1 ip4:192.0.2.0/24 -all")
        z.add(f"google._domainkey.{ACME}", "TXT", dkim.public_record(dkim.generate_key()))
        assert await health.rerun(identity.id, LEAD)
        await wait_posted(bot, f"{COMPANY_ADDRESS} is healthy again", mark)
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


async def test_a_check_that_cannot_run_never_makes_a_healthy_identity_broken(
    hbot: Bot, company: CompanyMail, dns_server: FakeDNS
) -> None:
    bot = hbot
    dns_server.zone.mode = "servfail"  # every DNS answer fails
    identity = await ready_company_identity(bot, company)
    await company.mx.close()  # and our relay is down: the probe can't go
    runs = await finished_runs(bot, identity.id, 2)
    assert [r.outcome for r in runs[:2]] == ["incomplete", "incomplete"]
    unknown = {f["check"] for f in runs[0].findings if f["status"] == "unknown"}
    assert unknown == {"tracking", "spf", "dmarc"}
    assert (await identity_of(bot, identity.id)).health == IdentityHealth.HEALTHY
    assert not posted(bot, "needs attention")


# ---- bounce and complaint rates: pause and resume ---------------------------------------------------------------


async def gateway_session(bot: Bot, username: str, password: str) -> aiosmtplib.SMTP:
    gateway = bot.runtime.gateway
    client = aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False, timeout=10)
    await client.connect()
    await client.login(username, password)
    return client


async def test_hard_bounces_over_the_line_pause_the_identity_until_a_manager_resumes_it(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack, dns_server: FakeDNS
) -> None:
    from tests.gateway_helpers import make_identity, message_bytes
    from tests.mailservers import Mailbox, start_smtp_server
    from tests.test_attribution import dsn

    relay = await start_smtp_server(mailbox=Mailbox())
    bot = await start_bot(
        tmp_path, database_url, fake_slack, RELAY_SMTP_URL=f"smtp://{relay.host}:{relay.port}?security=none",
        MANAGERS="U_MANAGER", DNS_RESOLVER=dns_server.address,
    )  # fmt: skip
    address = f"jane@{PLATFORM_DOMAIN}"
    try:
        identity = await make_identity(bot.db, address)
        credential = await bot.runtime.services.credentials.issue(address, actor="test")
        client = await gateway_session(bot, credential.username, credential.password)
        for n in range(25):
            to = f"prospect{n}@customer.example.org"
            await client.sendmail(address, [to], message_bytes(address, to, subject=f"Hello {n}"))
        client.close()
        async with bot.db.session() as session:
            from models import SentRecipient

            tokens = list(await session.scalars(select(SentRecipient.verp_token).order_by(SentRecipient.id)))
        assert len(tokens) == 25 and all(tokens)

        # Two of them bounce for good (8 % of 25: over the 5 % line), reported to their return paths.
        mark = bot.fake.mark()
        inbound = bot.runtime.inbound
        async with aiosmtplib.SMTP(hostname=inbound.host, port=inbound.port, start_tls=False, timeout=10) as mx:
            for n in (3, 7):
                return_path = bot.runtime.services.domains.return_path(tokens[n] or "")
                await mx.sendmail("", [return_path], dsn([f"prospect{n}@customer.example.org"], to=return_path))
        paused = await wait_posted(bot, "is paused", mark)
        text = blocks_text(paused)
        assert "8% hard bounces (2 of 25 emails in 7 days; the line is 5%)" in text
        assert "2 hard bounces (8%)" in text and "451 4.7.1" in text
        assert (await identity_of(bot, identity.id)).health == IdentityHealth.PAUSED
        assert len(posted(bot, "is paused", mark)) == 1

        # The gateway defers the identity's mail: a temporary failure, the mailer keeps the message.
        client = await gateway_session(bot, credential.username, credential.password)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail(address, ["later@customer.example.org"], message_bytes(address, "later@x.example"))
        assert refused.value.code == 451 and refused.value.message.startswith("4.7.1")
        assert f"Identity {address} paused: 8% hard bounces" in refused.value.message
        client.close()

        # Resume is for managers only: the identity's own creator is refused, nothing changes.
        mark = bot.fake.mark()
        await click(bot, paused, H.resume, user=LEAD)
        refusal = await ephemeral(bot, lambda a: a.get("user") == LEAD, mark)
        assert f"Only a manager can resume {address}" in refusal
        assert (await identity_of(bot, identity.id)).health == IdentityHealth.PAUSED

        await click(bot, paused, H.resume, user="U_MANAGER")
        resumed = await wait_posted(bot, "was resumed", mark)
        assert "<@U_MANAGER>" in resumed.args["text"]
        client = await gateway_session(bot, credential.username, credential.password)
        await client.sendmail(address, ["after@customer.example.org"], message_bytes(address, "after@x.example"))
        client.close()
        async with bot.db.session() as session:
            trail = list(
                await session.scalars(
                    select(AuditEvent).where(AuditEvent.action.like("health.%")).order_by(AuditEvent.id)
                )
            )
        assert [(e.action, e.actor) for e in trail] == [("health.paused", "health"), ("health.resumed", "U_MANAGER")]
        assert trail[0].detail["hard_bounces"] == 2 and trail[0].detail["sent"] == 25
        # The old bounces don't pause it again: its rates count from the resume.
        assert not await bot.runtime.services.health.judge_rates(identity.id)
    finally:
        await bot.slack.close()
        await bot.runtime.stop()
        await relay.close()


# ---- several processes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_processes_on_postgresql_run_each_check_once_per_interval(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack, company: CompanyMail, dns_server: FakeDNS
) -> None:
    from bot.app import Runtime
    from tests.conftest import make_settings

    good_acme_zone(dns_server.zone)
    first = await health_bot(tmp_path / "a", database_url, fake_slack, company, dns_server)
    key = (tmp_path / "a" / "data" / "secret.key").read_text().strip()
    env = {"RELAY_SMTP_URL": company.relay_url, "DNS_RESOLVER": dns_server.address, "SECRET_KEYS": key}
    second = Runtime(make_settings(tmp_path / "b", database_url, fake_slack.url, HEALTH_INTERVAL="0.5", **env))
    await second.start()
    try:
        identity = await ready_company_identity(first, company)
        runs = await finished_runs(first, identity.id, 5)
        starts = [r.started_at for r in runs]
        gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
        # Both processes look for due checks four times an interval; a check run twice would start twice at once.
        assert min(gaps) > 0.25, gaps
        assert all(r.outcome == "passed" and r.started_by == "schedule" for r in runs)
        assert len(posted(first, "needs attention")) == 0
    finally:
        await second.stop()
        await first.slack.close()
        await first.runtime.stop()


# ---- a revoked sign-in ------------------------------------------------------------------------------------------


async def test_a_revoked_sign_in_needs_attention_with_a_sign_in_again_button(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, mail_ca: TestCA, dns_server: FakeDNS
) -> None:
    from tests.signin_helpers import start_provider, start_signin_bot
    from tests.test_sign_in import signed_in_identity

    provider = await start_provider("microsoft", mail_ca)
    bot = await start_signin_bot(
        tmp_path, sqlite_url, fake_slack, company, [provider], DNS_RESOLVER=dns_server.address, HEALTH_INTERVAL="3600"
    )
    try:
        identity = await signed_in_identity(bot, provider)
        company.forward_to = identity.tracking_address
        await make_ready(bot, identity.id)
        provider.auth.revoke(COMPANY_ADDRESS, access_tokens_too=True)
        mark = bot.fake.mark()
        assert await bot.runtime.services.health.rerun(identity.id, LEAD)
        message = await wait_posted(bot, "needs attention", mark)
        text = blocks_text(message)
        assert "Microsoft no longer accepts this identity's sign-in" in text and "Sign in again" in text
        edit = [
            e
            for b in message.args["blocks"]
            if b.get("block_id") == H.actions
            for e in b["elements"]
            if e["action_id"] == H.edit
        ]
        assert [e["text"]["text"] for e in edit] == ["Sign in again"]
        mark = bot.fake.mark()
        await click(bot, message, H.edit)
        view = await bot.loaded_form(mark, F.callback)
        assert "Signed in with Microsoft" in str(view["blocks"]), "the form where the sign-in button is"
    finally:
        await bot.slack.close()
        await bot.runtime.stop()
        await provider.close()


# ---- the rules, alone -------------------------------------------------------------------------------------------


def test_the_lines_and_what_an_unknown_check_carries() -> None:
    from bot.services.health.state import carry, outcome_of, pause_reason
    from bot.services.notifier import HealthFinding
    from bot.services.rates import Rates

    assert not Rates(19, 19, 0).over_the_line, "judged from 20 emails on"
    assert not Rates(20, 1, 0).over_the_line, "5 % is the line, not over it"
    assert pause_reason(Rates(25, 2, 0)) == "8% hard bounces (2 of 25 emails in 7 days; the line is 5%)"
    assert pause_reason(Rates(300, 0, 1)) == "0.33% spam complaints (1 of 300 emails in 7 days; the line is 0.3%)"
    assert pause_reason(Rates(40, 3, 1)).count(" and ") == 1

    login = HealthFinding("login", "problem", "smtp.acme.example.com:587", "auth_failed", "refused")
    unknown_login = HealthFinding("login", "unknown", "smtp.acme.example.com:587", "timeout")
    dmarc_ok = HealthFinding("dmarc", "ok", "acme.example.com")
    kept = carry([unknown_login, dmarc_ok], [login])
    assert kept[-1].carried and kept[-1].code == "auth_failed" and outcome_of(kept) == "problems"
    assert carry([HealthFinding("login", "ok", "smtp.acme.example.com:587"), dmarc_ok], [login])[-1] == dmarc_ok
    assert outcome_of([unknown_login, dmarc_ok]) == "incomplete"
    assert outcome_of([HealthFinding("dmarc", "warning", "acme.example.com")]) == "warnings"


async def test_only_identities_in_use_are_claimed_for_scheduled_checks(db: Database) -> None:
    """A disabled identity sends nothing and a deleted one has its checks stopped: neither is logged in to, probed or
    announced on schedule. Both databases: the claim is SQL."""
    ids: dict[IdentityLifecycle, int] = {}
    async with db.transaction() as session:
        for n, lifecycle in enumerate(IdentityLifecycle):
            row = Identity(
                team_id="T",
                kind=IdentityKind.PLATFORM,
                display_name="Lea",
                company_name="N",
                address=f"lea{n}@mail.example.com",
                forwarding_address="l@n.example.com",
                notices_channel="C",
                created_by="U",
                status=IdentityStatus.READY,
                lifecycle=lifecycle,
                health_due_at=utcnow() - timedelta(minutes=1),
            )
            session.add(row)
            await session.flush()
            ids[lifecycle] = row.id
    claimed = await HealthRuns(db).claim_due(timedelta(hours=6), limit=10)
    assert claimed == [ids[IdentityLifecycle.ACTIVE]]
