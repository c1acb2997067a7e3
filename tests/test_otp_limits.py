"""One-time passwords that can't be farmed: at most 10 codes per identity in 24 hours, and three locked codes in a
row lock the Receiving step for an hour (end to end through Slack, and the rules alone on a clock we move)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from bot.sandbox import FakeSlack
from bot.services.secrets import SecretBox
from bot.services.verification import DailyCodeLimit, OtpChallenges, ReceivingLocked
from bot.services.verification.otp import CODES_PER_DAY, LOCKS_IN_A_ROW, MAX_WRONG, RECEIVING_LOCK, CodeProblem
from handlers.verification.ids import Verification as V
from models import Database, Identity, IdentityKind, OtpChallenge, StepStatus, VerificationStep
from models.base import utcnow
from tests.companymail import CompanyMail, start_company_mail
from tests.conftest import CHANNEL, Bot, start_bot
from tests.mailservers import TestCA, mail_ca  # noqa: F401
from tests.test_company_identity import create_company_identity
from tests.test_permissions import history_says
from tests.test_verification import click, enter_otp, request_otp


@pytest.fixture
async def company(mail_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CompanyMail]:
    monkeypatch.setenv("SSL_CERT_FILE", mail_ca.cert_file)
    mail = await start_company_mail(mail_ca)
    yield mail
    await mail.close()


@pytest.fixture
async def obot(tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack, company: CompanyMail) -> AsyncIterator[Bot]:
    bot = await start_bot(tmp_path, sqlite_url, fake_slack, RELAY_SMTP_URL=company.relay_url)
    company.inbound = (bot.runtime.inbound.host, bot.runtime.inbound.port)
    yield bot
    await bot.slack.close()
    await bot.runtime.stop()


async def move_codes_back(bot: Bot, by: timedelta) -> None:
    """Every code was sent (and closed) `by` earlier than it was."""
    async with bot.db.transaction() as session:
        for challenge in (await session.scalars(select(OtpChallenge))).all():
            challenge.created_at -= by
            if challenge.closed_at is not None:
                challenge.closed_at -= by


async def ephemeral(bot: Bot, mark: int, marker: str) -> str:
    note = await bot.fake.wait_for("chat.postEphemeral", lambda c: marker in c.args["text"], after=mark)
    return str(note.args["text"])


async def test_the_eleventh_code_in_a_day_is_refused_with_the_time_of_the_next(obot: Bot, company: CompanyMail) -> None:
    bot = obot
    identity = await create_company_identity(bot, company)
    for _ in range(CODES_PER_DAY):
        await request_otp(bot, company, identity.id)
        await move_codes_back(bot, timedelta(hours=1))  # one an hour: the resend throttle never applies
    sent = len(company.otp_codes())
    assert sent == CODES_PER_DAY
    async with bot.db.session() as session:
        oldest = min((await session.scalars(select(OtpChallenge.created_at))).all())
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_otp)
    text = await ephemeral(bot, mark, "in the last 24 hours")
    assert f"{CODES_PER_DAY} one-time passwords" in text
    assert f"<!date^{int((oldest + timedelta(hours=24)).timestamp())}^" in text, "says when the next is possible"
    assert len(company.otp_codes()) == sent, "no 11th mail"

    # Once the oldest is more than 24 hours old, a code can be sent again.
    await move_codes_back(bot, timedelta(hours=14, minutes=1))
    await request_otp(bot, company, identity.id)
    assert len(company.otp_codes()) == sent + 1


async def test_three_locked_codes_in_a_row_lock_receiving_for_an_hour(obot: Bot, company: CompanyMail) -> None:
    bot = obot
    identity = await create_company_identity(bot, company)
    for n in range(1, LOCKS_IN_A_ROW + 1):
        code = await request_otp(bot, company, identity.id)
        wrong = "000000" if code != "000000" else "111111"
        for _ in range(MAX_WRONG):
            answer = await enter_otp(bot, identity.id, wrong)
        message = answer["errors"][V.otp_block]
        assert "locked" in message
        assert ("codes in a row were locked" in message) is (n == LOCKS_IN_A_ROW), message
        if n < LOCKS_IN_A_ROW:
            await move_codes_back(bot, timedelta(minutes=2))

    # The channel is told, with until when.
    told = await bot.fake.wait_for(
        "chat.postMessage", lambda c: c.args["channel"] == CHANNEL and "is locked" in c.args.get("text", "")
    )
    assert identity.address in told.args["text"]
    async with bot.db.session() as session:
        step = await session.scalar(select(VerificationStep).where(VerificationStep.step == "receiving"))
        last_lock = max(c for c in (await session.scalars(select(OtpChallenge.closed_at))).all() if c)
    assert step is not None and step.status == StepStatus.FAILED
    until = last_lock + RECEIVING_LOCK
    assert f"<!date^{int(until.timestamp())}^" in str(told.args["blocks"])

    # No new code for an hour, whoever asks; the button says until when.
    mails = len(company.otp_codes())
    mark = bot.fake.mark()
    await click(bot, identity.id, V.send_otp)
    text = await ephemeral(bot, mark, "Receiving is locked")
    assert f"<!date^{int(until.timestamp())}^" in text
    assert len(company.otp_codes()) == mails

    # An hour later it opens again, and a correct code verifies.
    await move_codes_back(bot, RECEIVING_LOCK + timedelta(minutes=1))
    code = await request_otp(bot, company, identity.id)
    mark = bot.fake.mark()
    assert (await enter_otp(bot, identity.id, code))["response_action"] == "update"
    await history_says(bot, "Receiving Verified", after=mark)


# ---- the rules alone, on a clock the test moves ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture
async def codes(db: Database) -> tuple[OtpChallenges, Clock, int]:
    clock = Clock()
    async with db.transaction() as session:
        identity = Identity(
            team_id="T",
            kind=IdentityKind.PLATFORM,
            display_name="Lea",
            company_name="N",
            address="lea@mail.example.com",
            forwarding_address="l@n.example.com",
            notices_channel="C",
            created_by="U",
        )
        session.add(identity)
        await session.flush()
        identity_id = identity.id
    return OtpChallenges(db, SecretBox([Fernet.generate_key().decode()]), clock=clock), clock, identity_id


async def lock_one(otp: OtpChallenges, clock: Clock, identity_id: int) -> None:
    _id, code = await otp.issue(identity_id, "l@n.example.com")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(MAX_WRONG):
        result = await otp.check(identity_id, wrong)
    assert result.problem == CodeProblem.LOCKED
    clock.advance(timedelta(minutes=2))


async def test_the_daily_limit_slides(codes: tuple[OtpChallenges, Clock, int]) -> None:
    otp, clock, identity_id = codes
    first = clock.now
    for _ in range(CODES_PER_DAY):
        await otp.issue(identity_id, "l@n.example.com")
        clock.advance(timedelta(minutes=30))
    with pytest.raises(DailyCodeLimit) as refused:
        await otp.issue(identity_id, "l@n.example.com")
    assert refused.value.next_at == first + timedelta(hours=24)
    clock.now = first + timedelta(hours=24, seconds=1)
    await otp.issue(identity_id, "l@n.example.com")  # the first has left the window


async def test_a_correct_code_ends_the_row_of_locks(codes: tuple[OtpChallenges, Clock, int]) -> None:
    otp, clock, identity_id = codes
    for _ in range(LOCKS_IN_A_ROW - 1):
        await lock_one(otp, clock, identity_id)
    _id, code = await otp.issue(identity_id, "l@n.example.com")
    assert (await otp.check(identity_id, code)).ok
    clock.advance(timedelta(minutes=2))
    await lock_one(otp, clock, identity_id)
    await otp.issue(identity_id, "l@n.example.com")  # two locks since the correct code: not locked


async def test_the_lock_lasts_an_hour_and_the_next_lock_renews_it(codes: tuple[OtpChallenges, Clock, int]) -> None:
    otp, clock, identity_id = codes
    for _ in range(LOCKS_IN_A_ROW):
        await lock_one(otp, clock, identity_id)
    with pytest.raises(ReceivingLocked) as locked:
        await otp.issue(identity_id, "l@n.example.com")
    clock.now = locked.value.until + timedelta(seconds=1)
    await lock_one(otp, clock, identity_id)  # still no correct code: a fourth lock in a row
    with pytest.raises(ReceivingLocked):
        await otp.issue(identity_id, "l@n.example.com")


async def test_codes_are_compared_in_constant_time(codes: tuple[OtpChallenges, Clock, int], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import hmac as hmac_module

    otp, _clock, identity_id = codes
    compared: list[tuple[str, str]] = []
    original = hmac_module.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr("bot.services.verification.otp.hmac.compare_digest", spy)
    _id, code = await otp.issue(identity_id, "l@n.example.com")
    assert (await otp.check(identity_id, code)).ok
    assert compared and all(re.fullmatch(r"[0-9a-f]{64}", a) for a, _ in compared), "HMACs, not codes, compared"
