"""A saved SMTP password goes only to the server it was saved with: changing host, port, security or username in
the edit form means the password must be typed again, and Test email setup and Save refuse without it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.mail.diagnosis import SUCCESS_PROMPT
from bot.sandbox import FakeSlack
from handlers.identity.ids import IdentityForm as F
from models import Identity
from tests.companymail import APP_PASSWORD, COMPANY_ADDRESS, CompanyMail, start_company_mail
from tests.conftest import Bot, start_bot
from tests.mailservers import Mailbox, RunningServer, TestCA, mail_ca, start_smtp_server  # noqa: F401
from tests.test_company_identity import block, create_company_identity, test_setup

OTHER_HOST = "127.0.0.2"  # another loopback address: a different server, with a certificate for its own name


class RecordingLogins(dict[str, str]):
    """The test server's user table; remembers every login it was asked about (every AUTH attempt)."""

    def __init__(self, users: dict[str, str]) -> None:
        super().__init__(users)
        self.tried: list[str] = []

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.tried.append(key)
        return super().get(key, default)


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


@pytest.fixture
async def other_server(mail_ca: TestCA) -> AsyncIterator[tuple[RunningServer, RecordingLogins, Mailbox]]:
    logins = RecordingLogins({COMPANY_ADDRESS: APP_PASSWORD})
    box = Mailbox()
    server = await start_smtp_server(
        mailbox=box,
        security="starttls",
        tls_context=mail_ca.server_context((OTHER_HOST,)),
        auth=logins,
        hostname=OTHER_HOST,
    )
    yield server, logins, box
    await server.close()


@pytest.fixture
async def ebot(tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail) -> AsyncIterator[Bot]:
    bot = await start_bot(tmp_path, sqlite_url, fake_slack, RELAY_SMTP_URL=company.relay_url, SMTP_TIMEOUT="5")
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def open_edit(bot: Bot) -> dict:
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}")
    return await bot.loaded_form(mark, F.callback)


async def test_a_changed_host_with_an_empty_password_sends_no_auth_anywhere(
    ebot: Bot, company: CompanyMail, other_server: tuple[RunningServer, RecordingLogins, Mailbox]
) -> None:
    bot = ebot
    server, logins, box = other_server
    await create_company_identity(bot, company)
    view = await open_edit(bot)
    bot.slack.type(view["id"], F.smtp_host, OTHER_HOST)
    bot.slack.type(view["id"], F.smtp_port, str(server.port))
    result = await test_setup(bot, view["id"])
    assert "type the password again" in result.lower(), result
    assert SUCCESS_PROMPT not in result
    assert logins.tried == [] and not box.deliveries, "the new host received no AUTH"
    assert server._tracked.protocols == [], "no connection was even made"
    form = bot.fake.views[view["id"]]
    password = block(form, F.smtp_password)
    assert "type the password again" in password["hint"]["text"].lower(), "the form says so on the password"
    assert password["optional"] is False

    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors"
    assert "password again" in ack.body["errors"][password["block_id"]]

    # Typed again, it goes to the new server, and the edit saves.
    bot.slack.type(view["id"], F.smtp_password, APP_PASSWORD)
    assert SUCCESS_PROMPT in await test_setup(bot, view["id"])
    assert logins.tried == [COMPANY_ADDRESS]
    mark = bot.fake.mark()
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    await bot.fake.wait_for(
        "chat.postMessage", lambda c: "must be verified again" in c.args.get("text", ""), after=mark
    )
    async with bot.db.session() as session:
        stored = await session.get(Identity, 1)
    assert stored is not None and (stored.smtp_host, stored.smtp_port) == (OTHER_HOST, server.port)


@pytest.mark.parametrize(
    "change",
    [{F.smtp_username: "someone-else@acme.example.com"}, {F.smtp_security: "ssl"}, {F.smtp_port: "2525"}],
    ids=["username", "security", "port"],
)
async def test_any_change_of_where_the_password_goes_needs_it_typed_again(
    ebot: Bot, company: CompanyMail, change: dict[str, str]
) -> None:
    bot = ebot
    await create_company_identity(bot, company)
    view = await open_edit(bot)
    for field, value in change.items():
        bot.slack.type(view["id"], field, value)
    deliveries = len(company.mailbox.deliveries)
    result = await test_setup(bot, view["id"])
    assert "type the password again" in result.lower(), result
    assert len(company.mailbox.deliveries) == deliveries


async def test_unchanged_server_keeps_the_saved_password(ebot: Bot, company: CompanyMail) -> None:
    bot = ebot
    await create_company_identity(bot, company)
    view = await open_edit(bot)
    assert block(view, F.smtp_password)["optional"] is True
    assert SUCCESS_PROMPT in await test_setup(bot, view["id"]), "the saved password, to its own server"
    assert "keep" in block(bot.fake.views[view["id"]], F.smtp_password)["hint"]["text"]
