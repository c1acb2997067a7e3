"""Who may act on an identity: its creator and managers run the steps, ask for and enter codes, edit and change
limits; everyone else sees the panel read-only. A re-run keeps a ready identity in service until it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from bot.sandbox import FakeSlack
from handlers.limits.ids import Limits as L
from handlers.verification.ids import Verification as V
from models import AuditEvent, Identity, IdentityStatus, OtpChallenge, StepStatus, VerificationStep
from models.base import utcnow
from tests.companymail import CompanyMail, start_company_mail
from tests.conftest import CHANNEL, LEAD, Bot, start_bot
from tests.mailservers import TestCA, mail_ca  # noqa: F401
from tests.test_company_identity import create_company_identity
from tests.test_verification import (
    click,
    enter_otp,
    open_otp_modal,
    panel_of,
    panel_says,
    request_otp,
    status_of,
    verify_all,
)

STRANGER = "U_OTHER"
MANAGER = "U_MANAGER"


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


@pytest.fixture
async def pbot(tmp_path: Path, database_url: str, fake_slack: FakeSlack, company: CompanyMail) -> AsyncIterator[Bot]:
    bot = await start_bot(tmp_path, database_url, fake_slack, RELAY_SMTP_URL=company.relay_url, MANAGERS=MANAGER)
    company.inbound = (bot.runtime.inbound.host, bot.runtime.inbound.port)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def age_codes(bot: Bot) -> None:
    """Codes sent earlier were sent more than a minute ago (the resend throttle is not what these tests are about)."""
    async with bot.db.transaction() as session:
        await session.execute(update(OtpChallenge).values(created_at=utcnow() - timedelta(minutes=2)))


async def snapshot(bot: Bot, identity_id: int) -> tuple[object, ...]:
    """Everything a click could change: status, steps, codes, the audit trail."""
    async with bot.db.session() as session:
        identity = await session.get(Identity, identity_id)
        assert identity is not None
        steps = sorted(
            (s.step, s.status, s.attempt, s.token)
            for s in (
                await session.scalars(select(VerificationStep).where(VerificationStep.identity_id == identity_id))
            )
        )
        codes = await session.scalar(select(func.count()).select_from(OtpChallenge))
        audit = await session.scalar(select(func.count()).select_from(AuditEvent))
    return identity.status, identity.panel_ts, steps, codes, audit


async def history_says(bot: Bot, text: str, *, after: int):  # type: ignore[no-untyped-def]
    """The thread reply under the panel: the last thing an announcement posts."""
    return await bot.fake.wait_for(
        "chat.postMessage", lambda c: c.args.get("thread_ts") and text in c.args.get("text", ""), after=after
    )


async def refused(bot: Bot, mark: int, what: str) -> str:
    note = await bot.fake.wait_for(
        "chat.postEphemeral", lambda c: c.args.get("user") == STRANGER and "Only" in c.args["text"], after=mark
    )
    text = note.args["text"]
    assert f"Only <@{LEAD}> or a manager can {what}" in text, text
    return text


async def test_a_stranger_clicks_every_panel_button_and_nothing_changes(pbot: Bot, company: CompanyMail) -> None:
    bot = pbot
    identity = await create_company_identity(bot, company)
    await verify_all(bot, company, identity)
    assert await status_of(bot, identity.id) == IdentityStatus.READY
    before, mail_before = await snapshot(bot, identity.id), len(company.mailbox.deliveries)
    channel, ts = await panel_of(bot, identity.id)

    for action, what in (
        (V.send_test_email, "run the verification steps"),
        (V.send_otp, "ask for one-time passwords"),
        (V.enter_otp, "enter one-time passwords"),
        (V.send_response, "run the verification steps"),
        (L.open, "change the limits"),
    ):
        mark = bot.fake.mark()
        ack = await bot.slack.click_message(channel, ts, action, user=STRANGER)
        assert ack.status == 200
        await refused(bot, mark, what)
        assert not [c for c in bot.fake.calls[mark:] if c.method in ("views.open", "chat.update")], action

    # The OTP modal, submitted by someone who may not enter codes (opened by the creator, sent as the stranger).
    await age_codes(bot)
    code = await request_otp(bot, company, identity.id)
    view = await open_otp_modal(bot, identity.id)
    after_code = await snapshot(bot, identity.id)
    bot.slack.type(view["id"], V.otp_block, code)
    ack = await bot.slack.submit(view["id"], user=STRANGER)
    assert ack.body["response_action"] == "update", ack.body
    assert f"Only <@{LEAD}> or a manager can enter one-time passwords" in str(ack.body["view"])
    assert await snapshot(bot, identity.id) == after_code, "the code was not used up, nothing was recorded"
    # The creator's own code still works afterwards.
    mark = bot.fake.mark()
    assert (await enter_otp(bot, identity.id, code))["response_action"] == "update"
    await history_says(bot, "Receiving Verified", after=mark)

    status, panel_ts, steps, _codes, _audit = before
    assert (await status_of(bot, identity.id)) == status == IdentityStatus.READY
    assert len(company.mailbox.deliveries) == mail_before + 1, "only the creator's code was mailed"
    assert panel_ts == ts


async def test_a_manager_may_run_the_steps_of_someone_elses_identity(pbot: Bot, company: CompanyMail) -> None:
    bot = pbot
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_test_email, user=MANAGER)
    await panel_says(bot, identity.id, "Sending Verified", after=mark)
    reply = await history_says(bot, "Sending Verified", after=mark)
    assert f"<@{MANAGER}>" in str(reply.args["blocks"]), "the history says who ran it"


async def test_limits_command_tells_a_stranger_before_any_form(pbot: Bot, company: CompanyMail) -> None:
    bot = pbot
    identity = await create_company_identity(bot, company)
    mark = bot.fake.mark()
    await bot.slack.command(f"limits {identity.address}", user=STRANGER)
    shown = await bot.fake.wait_for("views.update", after=mark)
    assert f"Only <@{LEAD}> or a manager can change the limits" in str(shown.response["view"]["blocks"])
    assert shown.response["view"].get("submit") is None, "nothing to submit"


async def test_a_rerun_keeps_a_ready_identity_in_service_until_it_fails(pbot: Bot, company: CompanyMail) -> None:
    bot = pbot
    identity = await create_company_identity(bot, company)
    await verify_all(bot, company, identity)
    company.forward_to = None  # the forwarder is gone: this re-run will not get its copy
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_response)
    await panel_says(bot, identity.id, "waiting for the copy", after=mark)
    assert await status_of(bot, identity.id) == IdentityStatus.READY, "still in service while the re-run runs"
    await age_codes(bot)
    code = await request_otp(bot, company, identity.id)  # a code asked for and never entered
    assert code
    assert await status_of(bot, identity.id) == IdentityStatus.READY

    # The re-run fails: now the identity is out of service, and the channel hears it.
    async with bot.db.transaction() as session:
        await session.execute(
            update(VerificationStep)
            .where(VerificationStep.step == "tracking")
            .values(deadline=utcnow() - timedelta(seconds=1))
        )
    mark = bot.fake.mark()
    assert await bot.runtime.services.verification.expire_tracking() == 1
    assert await status_of(bot, identity.id) == IdentityStatus.NOT_VERIFIED
    told = await bot.fake.wait_for(
        "chat.postMessage",
        lambda c: c.args["channel"] == CHANNEL and "no longer ready to use" in c.args.get("text", ""),
        after=mark,
    )
    assert identity.address in told.args["text"]
    async with bot.db.session() as session:
        steps = {s.step: s.status for s in (await session.scalars(select(VerificationStep))).all()}
    assert steps["tracking"] == StepStatus.FAILED
