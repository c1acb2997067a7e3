"""The three-step verification end to end: panel buttons, the OTP modal, our inbound server, the channel history."""

from __future__ import annotations

import re
import smtplib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.sandbox import FakeSlack
from bot.services.verification.otp import MAX_WRONG
from handlers.verification.ids import Verification as V
from models import Identity, IdentityStatus, InboundMessage, OtpChallenge, StepStatus, VerificationStep
from models.base import utcnow
from tests.companymail import FORWARDING_ADDRESS, CompanyMail, start_company_mail
from tests.conftest import CHANNEL, PLATFORM_DOMAIN, TRACKING_DOMAIN, Bot, start_bot
from tests.mailservers import TestCA, mail_ca, start_smtp_server  # noqa: F401
from tests.test_company_identity import create_company_identity


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


async def bot_for(tmp_path: Path, url: str, fake: FakeSlack, company: CompanyMail, **env: str) -> Bot:
    bot = await start_bot(tmp_path, url, fake, RELAY_SMTP_URL=company.relay_url, SMTP_TIMEOUT="5", **env)
    company.inbound = (bot.runtime.inbound.host, bot.runtime.inbound.port)
    return bot


@pytest.fixture
async def vbot(tmp_path: Path, database_url: str, fake_slack: FakeSlack, company: CompanyMail) -> AsyncIterator[Bot]:
    bot = await bot_for(tmp_path, database_url, fake_slack, company)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


@pytest.fixture
async def svbot(tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail) -> AsyncIterator[Bot]:
    bot = await bot_for(tmp_path, sqlite_url, fake_slack, company, TRACKING_TIMEOUT="1")
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def panel_of(bot: Bot, identity_id: int) -> tuple[str, str]:
    """The newest verification panel posted for the identity, as the channel sees it."""
    async with bot.db.session() as session:
        identity = await session.get(Identity, identity_id)
    assert identity is not None

    def is_panel(call: object) -> bool:
        blocks = str(call.args.get("blocks"))  # type: ignore[attr-defined]
        return call.ok and identity.address in blocks and V.send_test_email in blocks  # type: ignore[attr-defined]

    await bot.fake.wait_for("chat.postMessage", is_panel)
    newest = [c for c in bot.fake.calls if c.method == "chat.postMessage" and is_panel(c)][-1]
    return newest.response["channel"], newest.response["ts"]


async def click(bot: Bot, identity_id: int, action: str, **kw: str) -> None:
    channel, ts = await panel_of(bot, identity_id)
    ack = await bot.slack.click_message(channel, ts, action, **kw)
    assert ack.status == 200


async def panel_says(bot: Bot, identity_id: int, text: str, *, after: int, timeout: float = 15) -> dict:
    """Wait until the panel is updated in place with `text`; return the updated message."""
    channel, ts = await panel_of(bot, identity_id)
    call = await bot.fake.wait_for(
        "chat.update",
        lambda c: c.args.get("ts") == ts and text in str(c.args.get("blocks")),
        after=after,
        timeout=timeout,
    )
    return bot.fake.messages[(channel, call.args["ts"])]


def thread_replies(bot: Bot, channel: str, ts: str) -> list[str]:
    return [m["text"] for m in bot.fake.channel_messages(channel) if m.get("thread_ts") == ts]


async def open_otp_modal(bot: Bot, identity_id: int, **kw: str) -> dict:
    mark = bot.fake.mark()
    await click(bot, identity_id, V.enter_otp, **kw)
    call = await bot.fake.wait_for(
        "views.open", lambda c: c.ok and c.response["view"].get("callback_id") == V.otp_callback, after=mark
    )
    return call.response["view"]


async def enter_otp(bot: Bot, identity_id: int, code: str) -> dict:
    view = await open_otp_modal(bot, identity_id)
    bot.slack.type(view["id"], V.otp_block, code)
    ack = await bot.slack.submit(view["id"])
    assert ack.status == 200
    return ack.body


async def request_otp(bot: Bot, company: CompanyMail, identity_id: int) -> str:
    before = len(company.otp_codes())
    await click(bot, identity_id, V.send_otp)
    await company.mailbox.wait_for_delivery(
        lambda m: "verification code" in str(m["Subject"]) and len(company.otp_codes()) > before
    )
    return company.otp_codes()[-1]


async def test_all_three_steps_verified_and_the_identity_becomes_ready(vbot: Bot, company: CompanyMail) -> None:
    bot = vbot
    identity = await create_company_identity(bot, company)
    channel, ts = await panel_of(bot, identity.id)
    panel = bot.fake.messages[(channel, ts)]
    assert channel == CHANNEL
    for label in ("Send Test Email", "Send Test Response Email", "Enter OTP", "Send Response Email"):
        assert label in str(panel["blocks"])

    # 1. Sending: a real test email through the customer's server.
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_test_email)
    updated = await panel_says(bot, identity.id, "Sending Verified", after=mark)
    assert re.search(r"Sending Verified\* on <!date\^\d+\^", str(updated["blocks"]))
    sent = await company.mailbox.wait_for(lambda m: m["Subject"] == "Sending verification")
    assert identity.address in str(sent["From"])

    # 2. Receiving: the OTP goes to the forwarding address; the right code verifies.
    mark = bot.fake.mark()
    code = await request_otp(bot, company, identity.id)
    answer = await enter_otp(bot, identity.id, code)
    assert answer["response_action"] == "update" and "Receiving Verified" in str(answer["view"])
    await panel_says(bot, identity.id, "Receiving Verified", after=mark)

    # 3. Tracking: the mailbox forwards a copy of the response email to the CC tracking address.
    company.forward_to = identity.tracking_address
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_response)
    await panel_says(bot, identity.id, "Tracking Verified", after=mark)
    ready = await bot.fake.wait_for("chat.postMessage", lambda c: "ready to use" in c.args.get("text", ""), after=mark)
    assert ready.args["channel"] == CHANNEL
    async with bot.db.session() as session:
        stored = await session.get(Identity, identity.id)
        assert stored is not None and stored.status == IdentityStatus.READY
        copies = (await session.scalars(select(InboundMessage))).all()
        assert any(identity.tracking_address in m.rcpt_tos for m in copies)

    history = thread_replies(bot, channel, ts)
    for text in ("Sending Verified", "Receiving Verified", "Tracking Verified"):
        assert any(text in h for h in history), history
    replies = [m for m in bot.fake.channel_messages(channel) if m.get("thread_ts") == ts]
    assert all("<!date^" in str(m["blocks"]) for m in replies), "every history entry carries its time"
    assert not bot.fake.warnings


async def test_sending_fails_with_the_diagnosis_when_the_server_refuses(
    svbot: Bot, company: CompanyMail, mail_ca: TestCA
) -> None:
    bot = svbot
    identity = await create_company_identity(bot, company)
    strict = await start_smtp_server(
        security="starttls",
        tls_context=mail_ca.server_context(),
        auth={identity.address: "abcdwxyzefghstuv"},
        refuse_mail_from={identity.address},
    )
    try:
        async with bot.db.transaction() as session:
            await session.execute(update(Identity).where(Identity.id == identity.id).values(smtp_port=strict.port))
        mark = bot.fake.mark()
        await click(bot, identity.id, V.send_test_email)
        updated = await panel_says(bot, identity.id, "Failed", after=mark)
        assert "may not send as" in str(updated["blocks"]) or "send as" in str(updated["blocks"])
    finally:
        await strict.close()


async def test_wrong_codes_lock_after_five_and_a_new_code_works(svbot: Bot, company: CompanyMail) -> None:
    bot = svbot
    identity = await create_company_identity(bot, company)
    code = await request_otp(bot, company, identity.id)
    wrong = "000000" if code != "000000" else "111111"
    for attempt in range(1, MAX_WRONG + 1):
        answer = await enter_otp(bot, identity.id, wrong)
        assert answer["response_action"] == "errors"
        message = answer["errors"][V.otp_block]
        if attempt < MAX_WRONG:
            assert f"{MAX_WRONG - attempt} attempt" in message
        else:
            assert "locked" in message
    # Even the right code no longer works once locked.
    answer = await enter_otp(bot, identity.id, code)
    assert answer["response_action"] == "errors" and "locked" in answer["errors"][V.otp_block]
    # A new code (after the resend throttle) replaces the locked one.
    async with bot.db.transaction() as session:
        await session.execute(update(OtpChallenge).values(created_at=utcnow() - timedelta(minutes=2)))
    new_code = await request_otp(bot, company, identity.id)
    answer = await enter_otp(bot, identity.id, new_code)
    assert answer["response_action"] == "update"
    async with bot.db.session() as session:
        stored = (await session.scalars(select(OtpChallenge))).all()
        assert all(code not in c.code_hmac and new_code not in c.code_hmac for c in stored), "only HMACs stored"


async def test_an_expired_code_is_refused_and_a_used_code_cannot_be_reused(svbot: Bot, company: CompanyMail) -> None:
    bot = svbot
    identity = await create_company_identity(bot, company)
    code = await request_otp(bot, company, identity.id)
    async with bot.db.transaction() as session:
        await session.execute(update(OtpChallenge).values(expires_at=utcnow() - timedelta(seconds=1)))
    answer = await enter_otp(bot, identity.id, code)
    assert answer["response_action"] == "errors" and "expired" in answer["errors"][V.otp_block]

    async with bot.db.transaction() as session:
        await session.execute(update(OtpChallenge).values(created_at=utcnow() - timedelta(minutes=2)))
    code = await request_otp(bot, company, identity.id)
    assert (await enter_otp(bot, identity.id, code))["response_action"] == "update"
    again = await enter_otp(bot, identity.id, code)
    assert again["response_action"] == "errors" and "already used" in again["errors"][V.otp_block]


async def test_resending_a_code_right_away_is_throttled(svbot: Bot, company: CompanyMail) -> None:
    bot = svbot
    identity = await create_company_identity(bot, company)
    await request_otp(bot, company, identity.id)
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_otp)
    note = await bot.fake.wait_for("chat.postEphemeral", lambda c: "moments ago" in c.args["text"], after=mark)
    assert "seconds" in note.args["text"]
    assert len(company.otp_codes()) == 1


async def test_tracking_times_out_with_advice_when_the_forwarder_is_missing(svbot: Bot, company: CompanyMail) -> None:
    bot = svbot  # TRACKING_TIMEOUT=1
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_response)
    updated = await panel_says(bot, identity.id, "no copy arrived in time", after=mark)
    assert "forwarder" in str(updated["blocks"])
    async with bot.db.session() as session:
        step = await session.scalar(select(VerificationStep).where(VerificationStep.step == "tracking"))
        assert step is not None and step.status == StepStatus.FAILED
    # The timeout fired once: one failure entry in the history.
    channel, ts = await panel_of(bot, identity.id)
    assert sum("no copy arrived in time" in t for t in thread_replies(bot, channel, ts)) == 1


async def test_platform_identity_verified_through_the_relay_and_direct_inbound_delivery(
    vbot: Bot, company: CompanyMail
) -> None:
    bot = vbot
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=f"lea@{PLATFORM_DOMAIN}", forwarding_address=FORWARDING_ADDRESS)
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update"
    async with bot.db.session() as session:
        identity = await session.scalar(select(Identity))
    assert identity is not None
    await bot.fake.wait_for("chat.postMessage", lambda c: c.args["channel"] == CHANNEL)

    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_test_email)
    await panel_says(bot, identity.id, "Sending Verified", after=mark)
    code = await request_otp(bot, company, identity.id)  # via RELAY_SMTP_URL to the customer's mailbox
    assert (await enter_otp(bot, identity.id, code))["response_action"] == "update"
    await click(bot, identity.id, V.send_response)
    await panel_says(bot, identity.id, "Tracking Verified", after=mark)
    await bot.fake.wait_for("chat.postMessage", lambda c: "ready to use" in c.args.get("text", ""), after=mark)


async def test_changing_settings_resets_the_steps_they_affect(vbot: Bot, company: CompanyMail) -> None:
    bot = vbot
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_test_email)
    await panel_says(bot, identity.id, "Sending Verified", after=mark)
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {identity.address}")
    view = await bot.loaded_form(mark, "identity-form")
    bot.slack.type(view["id"], "forwarding_address", "other-inbox@acme.example.com")
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
    await panel_says(bot, identity.id, "the response forwarding address changed", after=mark)
    channel, ts = await panel_of(bot, identity.id)
    assert any("must be verified again" in t for t in thread_replies(bot, channel, ts))
    async with bot.db.session() as session:
        steps = {s.step: s.status for s in (await session.scalars(select(VerificationStep))).all()}
    assert steps["sending"] == StepStatus.VERIFIED and steps["receiving"] == StepStatus.NOT_RUN


async def test_inbound_server_refuses_unknown_recipients_and_talks_to_real_clients(vbot: Bot) -> None:
    bot = vbot
    host, port = bot.runtime.inbound.host, bot.runtime.inbound.port

    def talk() -> tuple[int, bytes]:
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.ehlo("client.example.com")
            client.mail("someone@example.com")
            return client.rcpt(f"nobody@{PLATFORM_DOMAIN}")

    import asyncio

    code, text = await asyncio.to_thread(talk)
    assert code == 550 and b"5.1.1" in text


async def test_verify_command_posts_a_fresh_panel(vbot: Bot, company: CompanyMail) -> None:
    bot = vbot
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await bot.slack.command(f"verify {identity.address}")
    post = await bot.fake.wait_for("chat.postMessage", lambda c: c.args["channel"] == CHANNEL, after=mark)
    assert "Send Test Email" in str(post.args["blocks"])
    answer = await bot.fake.wait_for_response(lambda r: "verification panel" in r.get("text", ""))
    assert CHANNEL in answer["text"]


async def verify_all(bot: Bot, company: CompanyMail, identity: Identity) -> None:
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_test_email)
    await panel_says(bot, identity.id, "Sending Verified", after=mark)
    code = await request_otp(bot, company, identity.id)
    assert (await enter_otp(bot, identity.id, code))["response_action"] == "update"
    company.forward_to = identity.tracking_address
    await click(bot, identity.id, V.send_response)
    await bot.fake.wait_for("chat.postMessage", lambda c: "ready to use" in c.args.get("text", ""), after=mark)


async def status_of(bot: Bot, identity_id: int) -> str:
    async with bot.db.session() as session:
        identity = await session.get(Identity, identity_id)
    assert identity is not None
    return identity.status


async def test_a_code_sent_to_the_old_forwarding_address_does_not_verify_the_new_one(
    svbot: Bot, company: CompanyMail
) -> None:
    bot = svbot
    identity = await create_company_identity(bot, company)
    old_code = await request_otp(bot, company, identity.id)
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {identity.address}")
    view = await bot.loaded_form(mark, "identity-form")
    bot.slack.type(view["id"], "forwarding_address", "new-inbox@acme.example.com")
    assert (await bot.slack.submit(view["id"])).body["response_action"] == "update"
    answer = await enter_otp(bot, identity.id, old_code)
    assert answer["response_action"] == "errors"
    assert "forwarding address changed" in answer["errors"][V.otp_block]
    async with bot.db.session() as session:
        step = await session.scalar(select(VerificationStep).where(VerificationStep.step == "receiving"))
    assert step is not None and step.status == StepStatus.NOT_RUN


async def test_an_edit_resets_steps_even_when_slack_is_down(vbot: Bot, company: CompanyMail) -> None:
    bot = vbot
    identity = await create_company_identity(bot, company)
    await verify_all(bot, company, identity)
    assert await status_of(bot, identity.id) == IdentityStatus.READY
    mark = bot.fake.mark()
    await bot.slack.command(f"edit {identity.address}")
    view = await bot.loaded_form(mark, "identity-form")
    bot.slack.type(view["id"], "forwarding_address", "other-inbox@acme.example.com")
    for method in ("chat.postMessage", "chat.update"):
        bot.fake.inject_error(method, "fatal_error", status=500, times=20)
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update"
    # Whatever Slack does, the identity stopped being ready with the change itself.
    assert await status_of(bot, identity.id) == IdentityStatus.NOT_VERIFIED
    async with bot.db.session() as session:
        steps = {s.step: s.status for s in (await session.scalars(select(VerificationStep))).all()}
    assert steps == {"sending": "verified", "receiving": "not_run", "tracking": "verified"}


async def test_a_failing_rerun_makes_a_ready_identity_not_ready(
    svbot: Bot, company: CompanyMail, mail_ca: TestCA
) -> None:
    bot = svbot
    identity = await create_company_identity(bot, company)
    await verify_all(bot, company, identity)
    assert await status_of(bot, identity.id) == IdentityStatus.READY
    strict = await start_smtp_server(
        security="starttls",
        tls_context=mail_ca.server_context(),
        auth={identity.address: "abcdwxyzefghstuv"},
        refuse_mail_from={identity.address},
    )
    try:
        async with bot.db.transaction() as session:
            await session.execute(update(Identity).where(Identity.id == identity.id).values(smtp_port=strict.port))
        mark = bot.fake.mark()
        await click(bot, identity.id, V.send_test_email)
        await panel_says(bot, identity.id, "Failed", after=mark)
        assert await status_of(bot, identity.id) == IdentityStatus.NOT_VERIFIED, "the gateway must stop sending as it"
    finally:
        await strict.close()


async def test_a_tracking_copy_at_another_identitys_address_proves_nothing(svbot: Bot, company: CompanyMail) -> None:
    bot = svbot
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_response)
    await panel_says(bot, identity.id, "waiting for the copy", after=mark)
    response = await company.mailbox.wait_for(lambda m: "Tracking verification" in str(m["Subject"]))
    async with bot.db.transaction() as session:  # the copy lands at someone else's tracking address
        stored = InboundMessage(
            rcpt_tos=[f"cc-someone-else@{TRACKING_DOMAIN}"], raw=response.as_bytes(), size=1, dedup_key="x" * 64
        )
        session.add(stored)
        await session.flush()
        stored_id = stored.id
    token = str(response["X-Identity-Bot-Token"])
    await bot.runtime.services.verification.on_tokens([token], stored_id)
    async with bot.db.session() as session:
        step = await session.scalar(select(VerificationStep).where(VerificationStep.step == "tracking"))
    assert step is not None and step.status == StepStatus.PENDING


async def test_switching_provider_during_a_test_leaves_no_stale_result(svbot: Bot, company: CompanyMail) -> None:
    from tests.mailservers import start_silent_server
    from tests.test_company_identity import block, fill_company, open_company_form

    bot = svbot
    silent = await start_silent_server()
    try:
        view_id = await open_company_form(bot)
        fill_company(bot, view_id, company, smtp_port=str(silent.port))
        mark = bot.fake.mark()
        await bot.slack.click_view(view_id, "identity-test-setup")
        await bot.fake.wait_for("views.update", lambda c: "Testing" in str(c.response.get("view")), after=mark)
        await bot.slack.choose(view_id, "provider", "google")
        # The running test finishes (SMTP_TIMEOUT) against a view that changed: its result is not shown.
        await bot.fake.wait_for("views.update", lambda c: c.error == "hash_conflict", after=mark, timeout=20)
        result = block(bot.fake.views[view_id], "test_result")["text"]["text"]
        assert "Not tested yet" in result
        assert "smtp.gmail.com" in str(bot.fake.views[view_id]["blocks"])
    finally:
        await silent.close()


async def test_a_code_that_could_not_be_sent_says_so_and_what_to_do(
    tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail
) -> None:
    # The platform relay refuses the forwarding address: the person must hear that the code did NOT go out.
    refusing = await start_smtp_server(refuse_rcpt={FORWARDING_ADDRESS})
    bot = await start_bot(
        tmp_path, sqlite_url, fake_slack, RELAY_SMTP_URL=f"smtp://{refusing.host}:{refusing.port}?security=none"
    )
    try:
        identity = await create_company_identity(bot, company)
        channel, ts = await panel_of(bot, identity.id)
        mark = bot.fake.mark()
        await click(bot, identity.id, V.send_otp)
        told = await bot.fake.wait_for("chat.postEphemeral", after=mark)
        text = told.args["text"]
        assert "could not be emailed" in text and FORWARDING_ADDRESS in text, text
        assert "when it arrives" not in text and "Enter OTP" not in text, text
        assert "Send Test Response Email" in text, "the person is told what to do next"
        await panel_says(bot, identity.id, "Failed", after=mark)
        assert any("could not be emailed" in r for r in thread_replies(bot, channel, ts)), "a failed attempt is kept"
    finally:
        await bot.slack.close()
        await bot.runtime.stop()
        await refusing.close()


async def test_verify_tells_the_truth_when_the_panel_could_not_be_posted(vbot: Bot, company: CompanyMail) -> None:
    bot = vbot
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    bot.fake.inject_error("chat.postMessage", "channel_not_found", times=1)
    await bot.slack.command(f"verify {identity.address}")
    answer = await bot.fake.wait_for_response(lambda r: identity.address in r.get("text", ""))
    assert "could not" in answer["text"] and f"<#{CHANNEL}>" in answer["text"], answer["text"]
    assert "is in" not in answer["text"], answer["text"]
    assert not [c for c in bot.fake.calls[mark:] if c.method == "chat.postMessage" and c.ok]
