"""Files only the bot may read: DATA_DIR 0700; the database, its WAL/SHM, key files and outbox mail 0600 — created
so, and tightened at start (with a log line) when an older install left them readable by other local users."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from bot.sandbox import FakeSlack
from handlers.verification.ids import Verification as V
from models import Database, Identity
from tests.conftest import PLATFORM_DOMAIN, Bot, start_bot
from tests.test_verification import click


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def embedded_url(data: Path) -> str:
    return f"sqlite:///{data / 'identity-bot.db'}"


@pytest.fixture(autouse=True)
def usual_umask() -> object:
    """Files as a default install makes them (umask 022: new files 0644, directories 0755)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_modes_after_start_and_after_the_first_mail_to_the_outbox(tmp_path: Path, fake_slack: FakeSlack) -> None:
    data = tmp_path / "data"
    bot = await start_bot(tmp_path, embedded_url(data), fake_slack)  # no RELAY_SMTP_URL: mail goes to the outbox
    try:
        assert mode(data) == 0o700
        db_file = data / "identity-bot.db"
        seen = Path(f"{db_file}-seen")  # the replay guard's own file (SQLite)
        databases = (db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm"), seen, Path(f"{seen}-wal"))
        for path in (*databases, data / "secret.key"):
            assert path.exists() and mode(path) == 0o600, (path.name, oct(mode(path)))

        await create_platform_identity(bot)
        async with bot.db.session() as session:
            identity = await session.scalar(select(Identity))
        assert identity is not None
        mark = bot.fake.mark()
        await click(bot, identity.id, V.send_otp)
        await bot.fake.wait_for("chat.postEphemeral", lambda c: "outbox" in c.args["text"], after=mark)
        mails = list((data / "outbox").glob("*.eml"))
        assert len(mails) == 1, "the code went to the outbox"
        assert mode(data / "outbox") == 0o700
        assert mode(mails[0]) == 0o600, oct(mode(mails[0]))
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


async def test_loose_files_are_tightened_at_start_with_a_log_line(
    tmp_path: Path, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    db = Database(embedded_url(data))  # an install from before: everything readable by every local user
    await db.upgrade()
    await db.dispose()
    (data / "outbox").mkdir(mode=0o755)
    (data / "outbox" / "1-old.eml").write_text("Subject: Your verification code\n\n123456\n")
    (data / "secret.key").write_text(Fernet.generate_key().decode() + "\n")
    loose = [data / "identity-bot.db", data / "secret.key", data / "outbox" / "1-old.eml"]
    for path in [data, data / "outbox", *loose]:
        path.chmod(0o755 if path.is_dir() else 0o644)

    caplog.set_level(logging.INFO)
    bot = await start_bot(tmp_path, embedded_url(data), fake_slack)
    try:
        assert mode(data) == 0o700 and mode(data / "outbox") == 0o700
        for path in loose:
            assert mode(path) == 0o600, (path.name, oct(mode(path)))
        said = [r.getMessage() for r in caplog.records if "tightened" in r.getMessage()]
        for path in [data, *loose]:
            assert any(str(path) in line and ("0644" in line or "0755" in line) for line in said), (path, said)
    finally:
        await bot.slack.close()
        await bot.runtime.stop()


async def create_platform_identity(bot: Bot) -> None:
    view = await bot.open_new_identity_form()
    await bot.fill_platform_form(view["id"], address=f"lea@{PLATFORM_DOMAIN}")
    ack = await bot.slack.submit(view["id"])
    assert ack.body["response_action"] == "update", ack.body
