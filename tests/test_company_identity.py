"""Company-domain identities end to end: the SMTP form, "Test email setup" against real mail servers,
encrypted passwords, the CC tracking address, and editing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.mail.diagnosis import SUCCESS_PROMPT
from bot.sandbox import FakeSlack
from handlers.identity.ids import IdentityForm as F
from models import AuditEvent, Identity, IdentityKind, SmtpSecurity
from tests.companymail import APP_PASSWORD, COMPANY_ADDRESS, FORWARDING_ADDRESS, CompanyMail, start_company_mail
from tests.conftest import CHANNEL, TRACKING_DOMAIN, Bot, start_bot
from tests.mailservers import TestCA, mail_ca, start_silent_server, start_smtp_server, untrusted_ca  # noqa: F401


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


async def running_bot(tmp_path: Path, url: str, fake: FakeSlack, company: CompanyMail, **env: str) -> Bot:
    return await start_bot(tmp_path, url, fake, RELAY_SMTP_URL=company.relay_url, SMTP_TIMEOUT="3", **env)


@pytest.fixture
async def cbot(tmp_path: Path, database_url: str, fake_slack: FakeSlack, company: CompanyMail) -> AsyncIterator[Bot]:
    bot = await running_bot(tmp_path, database_url, fake_slack, company)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


@pytest.fixture
async def sbot(tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail) -> AsyncIterator[Bot]:
    bot = await running_bot(tmp_path, sqlite_url, fake_slack, company)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


def block(view: dict, base: str) -> dict:
    for b in view["blocks"]:
        if b.get("block_id", "").split("#")[0] == base:
            return b
    raise AssertionError(f"no block {base}")


async def open_company_form(bot: Bot) -> str:
    view = await bot.open_new_identity_form()
    mark = bot.fake.mark()
    await bot.slack.choose(view["id"], F.kind, IdentityKind.COMPANY)
    updated = (await bot.fake.wait_for("views.update", after=mark)).response["view"]
    assert block(updated, F.smtp_host)["type"] == "input"
    assert TRACKING_DOMAIN in block(updated, F.tracking)["text"]["text"]
    return view["id"]


def fill_company(bot: Bot, view_id: str, company: CompanyMail, **overrides: str) -> None:
    fields = {
        F.display_name: "Jane Doe",
        F.company_name: "Acme Inc.",
        F.address: COMPANY_ADDRESS,
        F.forwarding_address: FORWARDING_ADDRESS,
        F.smtp_host: "127.0.0.1",
        F.smtp_port: str(company.submission.port),
        F.smtp_security: SmtpSecurity.STARTTLS,
        F.smtp_password: APP_PASSWORD,
    }
    fields.update(overrides)
    for name, value in fields.items():
        bot.slack.type(view_id, name, value)


async def test_setup(bot: Bot, view_id: str) -> str:
    """Click Test email setup; return what the modal finally says."""
    mark = bot.fake.mark()
    ack = await bot.slack.click_view(view_id, F.test_setup)
    assert ack.status == 200
    testing = await bot.fake.wait_for("views.update", after=mark)
    assert "Testing…" in block(testing.response["view"], F.test_result)["text"]["text"]
    done = await bot.fake.wait_for("views.update", after=mark + 1, timeout=20)
    assert done.ok, done.response
    return block(done.response["view"], F.test_result)["text"]["text"]


test_setup.__test__ = False  # type: ignore[attr-defined]


async def test_company_identity_tested_saved_and_announced(cbot: Bot, company: CompanyMail) -> None:
    bot = cbot
    view_id = await open_company_form(bot)
    fill_company(bot, view_id, company)
    result = await test_setup(bot, view_id)
    assert SUCCESS_PROMPT in result
    # The test session really sent a message as the identity.
    sent = await company.mailbox.wait_for(lambda m: m["Subject"] == "Email setup test")
    assert COMPANY_ADDRESS in str(sent["From"])

    mark = bot.fake.mark()
    ack = await bot.slack.submit(view_id)
    assert ack.body["response_action"] == "update", ack.body
    post = await bot.fake.wait_for("chat.postMessage", after=mark, predicate=lambda c: c.args["channel"] == CHANNEL)
    blocks = str(post.args["blocks"])
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity))
        assert identity is not None
        assert identity.kind == "company" and identity.address == COMPANY_ADDRESS
        assert (identity.smtp_host, identity.smtp_port, identity.smtp_security) == (
            "127.0.0.1",
            company.submission.port,
            "starttls",
        )
        assert identity.smtp_username == COMPANY_ADDRESS, "username defaults to the address"
        assert identity.smtp_password_encrypted and APP_PASSWORD not in identity.smtp_password_encrypted
        assert bot.runtime.services.identities.secrets.decrypt(identity.smtp_password_encrypted) == APP_PASSWORD
        assert identity.tracking_address and identity.tracking_address.endswith("@" + TRACKING_DOMAIN)
        events = (await session.scalars(select(AuditEvent))).all()
        assert all(APP_PASSWORD not in str(e.detail) for e in events)
        assert events[0].detail["password"] == "set"
    assert identity.tracking_address in blocks and "forwarder" in blocks
    # The password never went to Slack, in any call.
    assert all(APP_PASSWORD not in str(c.args) for c in bot.fake.calls)
    # Nor is it anywhere in the database files in clear (SQLite keeps recent writes in the -wal file).
    if bot.db.is_sqlite:
        path = Path(bot.db.engine.url.database or "")
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert stored and APP_PASSWORD.encode() not in stored


async def test_saving_needs_a_passing_test_of_the_same_settings(sbot: Bot, company: CompanyMail) -> None:
    bot = sbot
    view_id = await open_company_form(bot)
    fill_company(bot, view_id, company)
    ack = await bot.slack.submit(view_id)
    assert ack.body["response_action"] == "errors"
    password_block = block(bot.fake.views[view_id], F.smtp_password)["block_id"]
    assert "Test email setup" in ack.body["errors"][password_block]

    assert SUCCESS_PROMPT in await test_setup(bot, view_id)
    bot.slack.type(view_id, F.smtp_port, str(company.mx.port))  # changed after the test
    ack = await bot.slack.submit(view_id)
    assert ack.body["response_action"] == "errors"
    assert "not passed a test" in ack.body["errors"][password_block]
    async with bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Identity)) == 0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({F.smtp_password: "wrong-password-123"}, "app password"),
        ({F.smtp_security: "ssl"}, "STARTTLS"),  # SSL/TLS chosen against a STARTTLS port
    ],
)
async def test_failed_setup_test_explains_the_fix(
    sbot: Bot, company: CompanyMail, override: dict[str, str], expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot = sbot
    view_id = await open_company_form(bot)
    fill_company(bot, view_id, company, **override)
    result = await test_setup(bot, view_id)
    assert SUCCESS_PROMPT not in result
    assert expected in result
    assert "Traceback" not in result
    assert "wrong-password-123" not in result and "wrong-password-123" not in caplog.text
    ack = await bot.slack.submit(view_id)
    assert ack.body["response_action"] == "errors", "a failed test does not allow saving"


async def test_starttls_against_an_implicit_tls_port(sbot: Bot, mail_ca: TestCA) -> None:
    bot = sbot
    implicit = await start_smtp_server(
        security="ssl", tls_context=mail_ca.server_context(), auth={COMPANY_ADDRESS: APP_PASSWORD}
    )
    try:
        view_id = await open_company_form(bot)
        fill_company(bot, view_id, CompanyMail(mailbox=None, submission=implicit, mx=implicit))  # type: ignore[arg-type]
        result = await test_setup(bot, view_id)
        assert "SSL/TLS" in result and SUCCESS_PROMPT not in result
    finally:
        await implicit.close()


async def test_self_signed_certificate_closed_port_and_silent_server(
    sbot: Bot, untrusted_ca: TestCA, company: CompanyMail
) -> None:
    bot = sbot
    untrusted = await start_smtp_server(
        security="starttls", tls_context=untrusted_ca.server_context(), auth={COMPANY_ADDRESS: APP_PASSWORD}
    )
    silent = await start_silent_server()
    try:
        view_id = await open_company_form(bot)
        fill_company(bot, view_id, company, **{F.smtp_port: str(untrusted.port)})
        assert "certificate" in (await test_setup(bot, view_id)).lower()
        bot.slack.type(view_id, F.smtp_port, str(silent.port))
        assert "time" in (await test_setup(bot, view_id)).lower()  # answers within SMTP_TIMEOUT, modal updated
        await untrusted.close()
        bot.slack.type(view_id, F.smtp_port, str(untrusted.port))  # nothing listens there now
        assert "refused" in (await test_setup(bot, view_id)).lower()
    finally:
        await untrusted.close()
        await silent.close()


async def test_mail_from_refused_names_the_address(sbot: Bot, mail_ca: TestCA) -> None:
    bot = sbot
    strict = await start_smtp_server(
        security="starttls",
        tls_context=mail_ca.server_context(),
        auth={COMPANY_ADDRESS: APP_PASSWORD},
        refuse_mail_from={COMPANY_ADDRESS},
    )
    try:
        view_id = await open_company_form(bot)
        fill_company(bot, view_id, CompanyMail(mailbox=None, submission=strict, mx=strict))  # type: ignore[arg-type]
        result = await test_setup(bot, view_id)
        assert COMPANY_ADDRESS in result and "send as" in result
    finally:
        await strict.close()


async def test_private_hosts_are_refused_unless_allowed(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail
) -> None:
    bot = await running_bot(tmp_path, sqlite_url, fake_slack, company, SMTP_ALLOW_PRIVATE_HOSTS="false")
    try:
        view_id = await open_company_form(bot)
        fill_company(bot, view_id, company, **{F.smtp_port: "587"})
        result = await test_setup(bot, view_id)
        assert "private" in result.lower() or "internal" in result.lower()
        assert not company.mailbox.deliveries, "no connection was made"
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


@pytest.mark.parametrize(
    "field",
    [F.display_name, F.company_name, F.smtp_host, F.smtp_username, F.smtp_password, F.address],
)
async def test_cr_lf_in_any_text_field_is_refused(sbot: Bot, company: CompanyMail, field: str) -> None:
    bot = sbot
    view_id = await open_company_form(bot)
    fill_company(bot, view_id, company, **{field: "evil\r\nRCPT TO:<victim@example.com>"})
    ack = await bot.slack.submit(view_id)
    assert ack.body["response_action"] == "errors"
    target = block(bot.fake.views[view_id], field)["block_id"]
    assert target in ack.body["errors"], ack.body["errors"]
    async with bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Identity)) == 0


async def create_company_identity(bot: Bot, company: CompanyMail) -> Identity:
    view_id = await open_company_form(bot)
    fill_company(bot, view_id, company)
    assert SUCCESS_PROMPT in await test_setup(bot, view_id)
    ack = await bot.slack.submit(view_id)
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity).where(Identity.address == COMPANY_ADDRESS))
    assert identity is not None
    return identity


async def test_edit_keeps_the_password_when_left_empty_and_retests_changed_settings(
    cbot: Bot, company: CompanyMail
) -> None:
    bot = cbot
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}")
    view = await bot.loaded_form(mark, F.callback)
    assert view["title"]["text"] == "Edit email identity"
    assert APP_PASSWORD not in str(view), "a stored password is never put back into a view"
    assert block(view, F.smtp_password)["optional"] is True
    bot.slack.type(view["id"], F.display_name, "Jane D.")
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        stored = await session.get(Identity, identity.id)
        assert stored is not None and stored.display_name == "Jane D."
        assert bot.runtime.services.identities.secrets.decrypt(stored.smtp_password_encrypted or "") == APP_PASSWORD
        audit = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "identity.updated"))).all()
        assert audit[-1].detail["changes"]["display_name"] == {"from": "Jane Doe", "to": "Jane D."}

    # Changing the server needs a new passing test; a new password is stored encrypted, audited without it.
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}")
    view = await bot.loaded_form(mark, F.callback)
    bot.slack.type(view["id"], F.smtp_host, "localhost")
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors"


async def test_only_the_creator_or_a_manager_may_edit(cbot: Bot, company: CompanyMail) -> None:
    bot = cbot
    await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}", user="U_OTHER")
    refused = await bot.fake.wait_for("views.update", after=mark)
    assert "Only <@U_LEAD> or a manager can edit" in str(refused.response["view"]["blocks"])
    assert refused.response["view"].get("submit") is None, "nothing to submit"
    # A manager may.
    bot.runtime.managers.users.add("U_MANAGER")
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}", user="U_MANAGER")
    assert (await bot.loaded_form(mark, F.callback))["title"]["text"] == "Edit email identity"


async def test_secrets_rotate_reencrypts_under_the_new_key(tmp_path: Path, sqlite_url: str) -> None:
    from cryptography.fernet import Fernet

    from bot.config import load_settings
    from bot.maintenance import rotate_secrets
    from bot.services.secrets import SecretBox
    from models import Database

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    db = Database(sqlite_url)
    await db.upgrade()
    async with db.transaction() as session:
        session.add(
            Identity(
                team_id="T",
                kind=IdentityKind.COMPANY,
                display_name="J",
                company_name="A",
                address="j@a.example.com",
                forwarding_address="f@a.example.com",
                notices_channel="C",
                created_by="U",
                smtp_password_encrypted=SecretBox([old]).encrypt(APP_PASSWORD),
            )
        )
    env = {"DATABASE_URL": sqlite_url, "DATA_DIR": str(tmp_path / "d"), "SECRET_KEYS": f"{new},{old}"}
    assert await rotate_secrets(load_settings(env, require_slack=False)) == 1
    async with db.session() as session:
        token = await session.scalar(select(Identity.smtp_password_encrypted))
    await db.dispose()
    assert SecretBox([new]).decrypt(token or "") == APP_PASSWORD, "readable with the new key alone"
