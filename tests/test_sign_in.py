""" "Sign in with Microsoft / Google" end to end: a local OAuth 2.0 authorization server and an SMTP server that
accepts XOAUTH2 only (both started here), the bot over real HTTP, the fake Slack, both databases."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import aiosmtplib
import pytest
from sqlalchemy import func, select, text, update

from bot.mail.diagnosis import SUCCESS_PROMPT
from bot.mail.sign_in_diagnosis import SIGN_IN_AGAIN
from bot.sandbox import FakeSlack
from handlers.identity.ids import IdentityForm as F
from handlers.verification.ids import Verification as V
from models import AuditEvent, Identity, IdentityStatus, MailboxGrant, OAuthSignIn
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
from tests.test_verification import click, verify_all


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


# ---- refusals: nothing is saved ---------------------------------------------------------------------------------


async def callback_url(bot: Bot, view: dict, *, user: str = "U_LEAD") -> str:
    """Click Sign in and let the provider approve; the callback URL the browser would open next (not opened)."""
    ack = await bot.slack.click_view(view["id"], F.sign_in, user=user)
    assert ack.status == 200
    browser = Browser(bot)
    authorize = await browser.first_hop(sign_in_link(bot.fake.views[view["id"]]))
    return await browser.first_hop(authorize)


async def nothing_saved(bot: Bot) -> None:
    async with bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(MailboxGrant)) == 0
        assert await session.scalar(select(func.count()).select_from(Identity)) == 0


@pytest.mark.parametrize("provider", ["microsoft"], indirect=True)
async def test_replayed_expired_forged_and_verifierless_states_are_refused(obot: Bot, provider: Provider) -> None:
    bot = obot
    view = await open_signin_form(bot, provider)
    browser = Browser(bot)

    # Replayed: the first use signs in, the second is refused and changes nothing.
    first = await callback_url(bot, view)
    status, page = await browser.get(first)
    assert status == 200
    async with bot.db.session() as session:
        grants = (await session.scalars(select(MailboxGrant))).all()
    assert len(grants) == 1
    status, page = await browser.get(first)
    assert status == 400 and "already used" in page
    async with bot.db.session() as session:
        assert [g.id for g in (await session.scalars(select(MailboxGrant))).all()] == [grants[0].id]
        await session.execute(text("DELETE FROM mailbox_grants"))
        await session.commit()

    # Expired: ten minutes after the click the state no longer works.
    expired = await callback_url(bot, view)
    sign_in_service = bot.runtime.services.sign_in
    real_clock = sign_in_service.clock
    sign_in_service.clock = lambda: real_clock() + timedelta(minutes=10, seconds=1)
    try:
        status, page = await browser.get(expired)
    finally:
        sign_in_service.clock = real_clock
    assert status == 400 and "expired" in page
    await nothing_saved(bot)

    # Another Slack user's state: the state names its user and modal under our signature; changing it breaks it.
    other_view = await open_signin_form(bot, provider, user="U_OTHER")
    theirs = urlsplit(await callback_url(bot, other_view, user="U_OTHER"))
    state = parse_qs(theirs.query)["state"][0]
    version, payload, mac = state.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["u"], claims["v"] = "U_LEAD", view["id"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = theirs._replace(query=theirs.query.replace(state, f"{version}.{forged_payload}.{mac}")).geturl()
    mark = bot.fake.mark()
    status, page = await browser.get(forged)
    assert status == 400 and "not valid" in page
    await nothing_saved(bot)
    assert not [c for c in bot.fake.calls[mark:] if c.method == "views.update"], "no modal was touched"

    # No PKCE verifier on our side: refused before the code is redeemed; the provider refuses it without one too.
    verifierless = await callback_url(bot, view)
    async with bot.db.transaction() as session:
        await session.execute(
            update(OAuthSignIn).where(OAuthSignIn.view_id == view["id"]).values(code_verifier_encrypted=None)
        )
    before = len(provider.auth.token_requests)
    status, page = await browser.get(verifierless)
    assert status == 400 and len(provider.auth.token_requests) == before, "the code was never sent"
    code = parse_qs(urlsplit(verifierless).query)["code"][0]
    async with aiohttp.ClientSession() as http:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": PUBLIC_URL + "/oauth/callback",
            "client_id": provider.auth.client_id,
            "client_secret": provider.auth.client_secret,
        }
        async with http.post(provider.auth.base_url + "/token", data=form) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
    await nothing_saved(bot)
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors"
    await nothing_saved(bot)


@pytest.mark.parametrize("provider", ["google"], indirect=True)
async def test_declined_consent_and_an_unticked_scope_say_so_in_the_modal(sobot: Bot, provider: Provider) -> None:
    bot = sobot
    view = await open_signin_form(bot, provider)
    provider.auth.deny_next_authorization()
    status, page, updated = await sign_in(bot, view)
    assert status == 400 and "cancelled or not allowed" in page
    assert "cancelled or not allowed" in str(block(updated, F.sign_in_status)["text"]["text"])
    provider.auth.withheld_scopes.add("https://mail.google.com/")
    status, page, updated = await sign_in(bot, view)
    assert status == 400 and "permission to send email" in page
    assert "permission to send email" in str(block(updated, F.sign_in_status)["text"]["text"])
    await nothing_saved(bot)


@pytest.mark.parametrize("provider", ["microsoft"], indirect=True)
async def test_an_id_token_signed_with_another_key_is_refused(sobot: Bot, provider: Provider) -> None:
    bot = sobot
    provider.auth.sign_id_tokens_with_foreign_key = True
    view = await open_signin_form(bot, provider)
    status, page, updated = await sign_in(bot, view)
    assert status == 400 and "did not complete the sign-in" in page
    await nothing_saved(bot)


# ---- tokens over time: renewal, revocation, the tenant setting --------------------------------------------------


async def send_test_email(bot: Bot, identity: Identity) -> str:
    """Run the Sending step; the history entry of its outcome (a re-run of a verified step keeps "Sending Verified"
    on the panel while it runs, so the panel alone can't say this attempt finished)."""
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_test_email)
    call = await bot.fake.wait_for(
        "chat.postMessage",
        lambda c: (
            bool(c.args.get("thread_ts"))
            and ("Sending Verified" in c.args.get("text", "") or "Sending failed" in c.args.get("text", ""))
        ),
        after=mark,
        timeout=20,
    )
    return str(call.args.get("text"))


async def test_an_expired_access_token_is_renewed_and_sending_goes_on(sobot: Bot, provider: Provider) -> None:
    bot = sobot
    provider.auth.access_token_lifetime = 120  # less than the five minutes before expiry when we renew
    identity = await signed_in_identity(bot, provider)
    assert len(provider.auth.refresh_requests()) == 1, "renewed before use, not after a refusal"
    assert all(ok for _, ok in provider.smtp.login_attempts)

    provider.auth.access_token_lifetime = 3600
    assert "Sending Verified" in await send_test_email(bot, identity)
    assert len(provider.auth.refresh_requests()) == 2 and all(ok for _, ok in provider.smtp.login_attempts)

    # The provider ends the token early (our clock says it is fresh): refused once, renewed, sent.
    provider.auth.expire_access_tokens()
    assert "Sending Verified" in await send_test_email(bot, identity)
    assert [ok for _, ok in provider.smtp.login_attempts][-2:] == [False, True]
    assert len(provider.auth.refresh_requests()) == 3

    # Again: Microsoft rotated the refresh token each time, and only the newest one works there.
    provider.auth.expire_access_tokens()
    assert "Sending Verified" in await send_test_email(bot, identity)
    assert [r.status for r in provider.auth.refresh_requests()] == [200, 200, 200, 200]


async def test_a_revoked_grant_says_sign_in_again_and_signing_in_again_fixes_it(sobot: Bot, provider: Provider) -> None:
    bot = sobot
    identity = await signed_in_identity(bot, provider)
    provider.auth.revoke(COMPANY_ADDRESS, access_tokens_too=True)

    # The Sending step: the diagnosis says to sign in again.
    panel = await send_test_email(bot, identity)
    assert "Sending failed" in panel and f"Sign in with {provider.label}" in panel and "revoked" in panel
    # What the scheduled re-check will call.
    check = await bot.runtime.services.identities.check_login(identity)
    assert not check.ok and check.diagnosis is not None and check.diagnosis.code == SIGN_IN_AGAIN
    async with bot.db.session() as session:
        grant = await session.scalar(select(MailboxGrant).where(MailboxGrant.identity_id == identity.id))
    assert grant is not None and grant.revoked_at is not None

    # Test email setup in the edit form says so too; signing in again there fixes it.
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}")
    view = await bot.loaded_form(mark, F.callback)
    shown = str(block(view, F.sign_in_status)["text"]["text"])
    assert f"Signed in with {provider.label} as *{COMPANY_ADDRESS}*" in shown
    result = await run_test_setup(bot, view["id"])
    assert "sign in again" in result.lower() and SUCCESS_PROMPT not in result
    status, page, updated = await sign_in(bot, bot.fake.views[view["id"]])
    assert status == 200
    assert SUCCESS_PROMPT in await run_test_setup(bot, view["id"])
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        grants = (await session.scalars(select(MailboxGrant))).all()
        audit = (await session.scalars(select(AuditEvent).where(AuditEvent.action == "identity.updated"))).all()
    assert [(g.identity_id, g.revoked_at) for g in grants] == [(identity.id, None)], "the old grant is gone"
    assert "sign_in" in audit[-1].detail["changes"]
    assert (await bot.runtime.services.identities.check_login(identity)).ok


@pytest.mark.parametrize("provider", ["microsoft"], indirect=True)
async def test_smtp_auth_disabled_names_the_tenant_setting(sobot: Bot, provider: Provider) -> None:
    bot = sobot
    view = await open_signin_form(bot, provider)
    await sign_in(bot, view)
    provider.smtp.smtp_auth_disabled = True
    result = await run_test_setup(bot, view["id"])
    assert "535 5.7.139" in result and "SMTP AUTH is turned off" in result
    assert "SmtpClientAuthenticationDisabled $false" in result and "Set-TransportConfig" in result
    assert "Authenticated SMTP" in result
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors"


async def test_use_a_password_instead(sobot: Bot, provider: Provider, company: CompanyMail) -> None:
    bot = sobot
    view = await open_signin_form(bot, provider)
    await sign_in(bot, view)
    mark = bot.fake.mark()
    await bot.slack.click_view(view["id"], F.use_password)
    updated = (await bot.fake.wait_for("views.update", after=mark)).response["view"]
    assert has_block(updated, F.smtp_password) and has_block(updated, F.sign_in_block)
    async with bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(MailboxGrant)) == 0


# ---- where sign-in is (not) offered, Socket Mode, key rotation ------------------------------------------------


@pytest.mark.parametrize("provider", ["google"], indirect=True)
async def test_a_provider_without_its_client_id_is_not_offered(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, provider: Provider
) -> None:
    bot = await start_signin_bot(tmp_path, sqlite_url, fake_slack, company, [provider])
    try:
        microsoft = await start_provider("microsoft", TestCA(tmp_path / "ca"))
        await microsoft.close()
        view = await open_signin_form(bot, microsoft)  # only Google is configured
        assert not has_block(view, F.sign_in_block) and has_block(view, F.smtp_password)
        google = await open_signin_form(bot, provider)
        assert has_block(google, F.sign_in_block)
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


@pytest.mark.parametrize("provider", ["microsoft"], indirect=True)
async def test_sign_in_over_socket_mode(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail, provider: Provider
) -> None:
    from tests.conftest import APP_TOKEN

    bot = await start_signin_bot(tmp_path, sqlite_url, fake_slack, company, [provider], SLACK_APP_TOKEN=APP_TOKEN)
    try:
        assert bot.slack.socket
        view = await open_signin_form(bot, provider)
        status, page, updated = await sign_in(bot, view)
        assert status == 200 and COMPANY_ADDRESS in page
        assert f"Signed in with Microsoft as *{COMPANY_ADDRESS}*" in str(block(updated, F.sign_in_status)["text"])
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


@pytest.mark.parametrize("provider", ["microsoft"], indirect=True)
async def test_secrets_rotate_reencrypts_the_sign_in_tokens(sobot: Bot, provider: Provider, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    from bot.maintenance import rotate_secrets
    from bot.services.secrets import SecretBox

    bot = sobot
    identity = await signed_in_identity(bot, provider)
    key_file = Path(bot.runtime.settings.data_dir) / "secret.key"
    old = key_file.read_text().strip()
    new = Fernet.generate_key().decode()
    settings = bot.runtime.settings
    from dataclasses import replace as changed

    assert await rotate_secrets(changed(settings, secret_keys=(new, old))) == 1
    async with bot.db.session() as session:
        grant = await session.scalar(select(MailboxGrant).where(MailboxGrant.identity_id == identity.id))
    assert grant is not None
    refresh_token = SecretBox([new]).decrypt(grant.refresh_token_encrypted)
    assert refresh_token in provider.auth._grants_by_refresh, "readable with the new key alone"


@pytest.mark.parametrize("provider", ["microsoft"], indirect=True)
async def test_a_password_identity_moves_to_sign_in_and_back(
    sobot: Bot, provider: Provider, company: CompanyMail
) -> None:
    from tests.test_company_identity import create_company_identity

    bot = sobot
    identity = await create_company_identity(bot, company)  # a password, on the customer's own server
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}")
    view = await bot.loaded_form(mark, F.callback)
    mark = bot.fake.mark()
    await bot.slack.choose(view["id"], F.provider, "microsoft")
    view = (await bot.fake.wait_for("views.update", after=mark)).response["view"]
    assert has_block(view, F.sign_in_block), "Microsoft 365 customers can switch before basic auth goes"
    await sign_in(bot, view)
    assert SUCCESS_PROMPT in await run_test_setup(bot, view["id"])
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    async with bot.db.session() as session:
        stored = await session.get(Identity, identity.id)
        grant = await session.scalar(select(MailboxGrant).where(MailboxGrant.identity_id == identity.id))
    assert stored is not None and stored.smtp_password_encrypted is None and grant is not None
    assert (stored.smtp_host, stored.smtp_port) == ("127.0.0.1", provider.smtp_port)

    # Back to a password: the sign-in is deleted with the save, and the password is required again.
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {COMPANY_ADDRESS}")
    view = await bot.loaded_form(mark, F.callback)
    mark = bot.fake.mark()
    await bot.slack.click_view(view["id"], F.use_password)
    view = (await bot.fake.wait_for("views.update", after=mark)).response["view"]
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "errors" and any("SMTP password" in e for e in ack.body["errors"].values())
    async with bot.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(MailboxGrant)) == 1, "nothing changed yet"


async def test_gateway_mail_after_the_grant_was_revoked_is_refused_for_good_with_the_fix(
    sobot: Bot, provider: Provider
) -> None:
    """A 451 would make the mailer retry for days, in vain: nothing can send until someone signs in again."""
    bot = sobot
    identity = await signed_in_identity(bot, provider)
    async with bot.db.transaction() as session:
        await session.execute(update(Identity).where(Identity.id == identity.id).values(status=IdentityStatus.READY))
    issued = await bot.runtime.services.credentials.issue(COMPANY_ADDRESS, actor="U_LEAD")
    provider.auth.revoke(COMPANY_ADDRESS, access_tokens_too=True)
    gateway = bot.runtime.gateway
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.port, start_tls=False, timeout=10) as client:
        await client.login(issued.username, issued.password)
        message = f"From: {COMPANY_ADDRESS}\r\nTo: lead@customer.example.org\r\nSubject: Hello\r\n\r\nHi!\r\n"
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await client.sendmail(COMPANY_ADDRESS, ["lead@customer.example.org"], message)
    assert refused.value.code == 554
    assert "sign in again" in refused.value.message.lower()
