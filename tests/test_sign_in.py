""" "Sign in with Microsoft / Google" end to end: a local OAuth 2.0 authorization server and an SMTP server that
accepts XOAUTH2 only (both started here), the bot over real HTTP, the fake Slack, both databases."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiosmtplib
import pytest
from sqlalchemy import func, select, text

from bot.mail.diagnosis import SUCCESS_PROMPT
from bot.sandbox import FakeSlack
from handlers.identity.ids import IdentityForm as F
from models import Identity, MailboxGrant, OAuthSignIn
from tests.companymail import COMPANY_ADDRESS, CompanyMail, start_company_mail
from tests.conftest import Bot
from tests.mailservers import TestCA, mail_ca  # noqa: F401
from tests.signin_helpers import (
    PUBLIC_URL,
    Browser,
    Provider,
    block,
    has_block,
    open_signin_form,
    run_test_setup,
    sign_in,
    sign_in_link,
    start_provider,
    start_signin_bot,
)
from tests.test_verification import verify_all


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


@pytest.fixture(params=["microsoft", "google"])
async def provider(request: pytest.FixtureRequest, mail_ca: TestCA) -> AsyncIterator[Provider]:
    p = await start_provider(request.param, mail_ca)
    yield p
    await p.close()


@pytest.fixture
async def obot(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack, company: CompanyMail, provider: Provider
) -> AsyncIterator[Bot]:
    bot = await start_signin_bot(tmp_path, database_url, fake_slack, company, [provider])
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


@pytest.fixture
async def sobot(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, provider: Provider
) -> AsyncIterator[Bot]:
    bot = await start_signin_bot(tmp_path, sqlite_url, fake_slack, company, [provider])
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def signed_in_identity(bot: Bot, provider: Provider) -> Identity:
    view = await open_signin_form(bot, provider)
    status, page, _ = await sign_in(bot, view)
    assert status == 200, page
    assert SUCCESS_PROMPT in await run_test_setup(bot, view["id"])
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity).where(Identity.address == COMPANY_ADDRESS))
    assert identity is not None
    return identity


async def test_sign_in_test_save_verify_and_relay_with_xoauth2(
    obot: Bot, provider: Provider, company: CompanyMail, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot = obot
    view = await open_signin_form(bot, provider)
    assert block(view, F.sign_in_block)["elements"][0]["text"]["text"] == f"Sign in with {provider.label}"
    assert has_block(view, F.smtp_password), "the password stays possible beside the sign-in"

    # The link starts an authorization-code flow with PKCE (S256) and the scopes the issue names.
    location = await Browser(bot).first_hop(sign_in_link(view))
    assert location.startswith(provider.auth.base_url + "/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert "code_verifier" not in query and query["redirect_uri"] == PUBLIC_URL + "/oauth/callback"
    wanted = (
        ["https://outlook.office.com/SMTP.Send", "offline_access"]
        if provider.style == "microsoft"
        else (["https://mail.google.com/"])
    )
    assert set(query["scope"].split()) == {*wanted, "openid", "email"}

    status, page, updated = await sign_in(bot, view)
    assert status == 200 and f"Signed in with {provider.label} as {COMPANY_ADDRESS}" in page
    assert "close this tab" in page
    shown = str(block(updated, F.sign_in_status)["text"]["text"])
    assert f"Signed in with {provider.label} as *{COMPANY_ADDRESS}*" in shown and "not this identity" not in shown
    assert not has_block(updated, F.smtp_password), "signed in: no password to type"
    exchange = [r for r in provider.auth.token_requests if r.form.get("grant_type") == "authorization_code"]
    assert exchange[-1].status == 200 and len(exchange[-1].form["code_verifier"]) == 64

    # Test email setup: a real session, XOAUTH2, the test message sent as the identity.
    assert SUCCESS_PROMPT in await run_test_setup(bot, view["id"])
    sent = await provider.smtp.wait_for_message("Email setup test")
    assert sent.mailbox == COMPANY_ADDRESS and sent.mail_from == COMPANY_ADDRESS
    assert provider.smtp.login_attempts[-1] == (COMPANY_ADDRESS, True)

    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity).where(Identity.address == COMPANY_ADDRESS))
        assert identity is not None and identity.smtp_password_encrypted is None
        assert (identity.esp_provider, identity.smtp_port) == (provider.style, provider.smtp_port)
        grant = await session.scalar(select(MailboxGrant).where(MailboxGrant.identity_id == identity.id))
        assert grant is not None and grant.mailbox == COMPANY_ADDRESS and grant.provider == provider.style

    # The three verification steps: Sending goes out over XOAUTH2.
    await verify_all(bot, company, identity)
    assert (await provider.smtp.wait_for_message("Sending verification")).mailbox == COMPANY_ADDRESS

    # Gateway mail for the identity is relayed with XOAUTH2.
    issued = await bot.runtime.services.credentials.issue(COMPANY_ADDRESS, actor="U_LEAD")
    gateway = bot.runtime.gateway
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.port, start_tls=False, timeout=10) as client:
        await client.login(issued.username, issued.password)
        message = (
            f"From: {COMPANY_ADDRESS}\r\nTo: lead@customer.example.org\r\nSubject: Campaign hello\r\n"
            "Message-ID: <campaign-1@acme.example.com>\r\n\r\nHi!\r\n"
        )
        await client.sendmail(COMPANY_ADDRESS, ["lead@customer.example.org"], message)
    relayed = await provider.smtp.wait_for_message("Campaign hello")
    assert relayed.mailbox == COMPANY_ADDRESS and relayed.rcpt_tos == ["lead@customer.example.org"]

    await assert_no_token_leaked(bot, provider, caplog.text)


async def assert_no_token_leaked(bot: Bot, provider: Provider, log_text: str) -> None:
    """No access or refresh token in the database in clear, in the log, or in any Slack call."""
    tokens = set(provider.auth._access) | set(provider.auth._grants_by_refresh)
    assert tokens
    secrets = tokens | {base64.b64encode(t.encode()).decode() for t in tokens}
    slack = " ".join(str(c.args) + str(c.response) for c in bot.fake.calls)
    assert not [s for s in secrets if s in slack], "a token went to Slack"
    assert not [s for s in secrets if s in log_text], "a token was logged"
    rows: list[str] = []
    async with bot.db.session() as session:
        for table in ("mailbox_grants", "oauth_sign_ins", "identities", "audit_events"):
            rows += [str(row) for row in (await session.execute(text(f"SELECT * FROM {table}"))).all()]
    dump = " ".join(rows)
    assert not [s for s in tokens if s in dump], "a token is stored in clear"
    if bot.db.is_sqlite:
        path = Path(bot.db.engine.url.database or "")
        stored = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())
        assert stored and not [s for s in tokens if s.encode() in stored]


async def test_a_different_mailbox_is_shown_and_not_saved(sobot: Bot, provider: Provider) -> None:
    bot = sobot
    provider.auth.sign_in_as("someone.else@acme.example.com")
    view = await open_signin_form(bot, provider)
    status, _, updated = await sign_in(bot, view)
    assert status == 200
    shown = str(block(updated, F.sign_in_status)["text"]["text"])
    assert "someone.else@acme.example.com" in shown and "not this identity's address" in shown
    result = await run_test_setup(bot, view["id"])
    assert "someone.else@acme.example.com" in result and SUCCESS_PROMPT not in result
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors"
    assert any("someone.else@acme.example.com" in e for e in ack.body["errors"].values())
    async with bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Identity)) == 0


async def test_saving_needs_a_sign_in_and_a_passing_test(sobot: Bot, provider: Provider) -> None:
    bot = sobot
    view = await open_signin_form(bot, provider)
    await sign_in(bot, view)
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors"
    assert any("Test email setup" in e for e in ack.body["errors"].values())
    async with bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Identity)) == 0
        assert await session.scalar(select(func.count()).select_from(OAuthSignIn)) == 1
