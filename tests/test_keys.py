"""One key for one database: the database records a fingerprint of its encryption key (never the key); a process
with other keys stops at start (exit 2 naming SECRET_KEYS); `secrets rotate` moves the fingerprint; processes
starting at once share one generated key file."""

from __future__ import annotations

import asyncio
import base64
import multiprocessing
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import delete, select

from bot.app import Runtime
from bot.config import ConfigError, load_settings
from bot.maintenance import rotate_secrets
from bot.sandbox import FakeSlack
from bot.services.secrets import KEY_FILE_NAME, SecretBox, key_fingerprint, load_or_create_keys
from models import Database, Identity, IdentityKind, KeyFingerprint
from tests.conftest import make_settings, start_bot
from tests.test_startup import run_bot

PASSWORD = "abcdwxyzefghstuv"


def new_key() -> str:
    return Fernet.generate_key().decode()


async def recorded(database_url: str) -> str | None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            return await session.scalar(select(KeyFingerprint.fingerprint))
    finally:
        await db.dispose()


async def start_with(tmp_path: Path, name: str, database_url: str, fake: FakeSlack, **env: str) -> Runtime:
    """A bot process of its own (own DATA_DIR) on the shared database; raises ConfigError if it may not start."""
    settings = make_settings(tmp_path / name, database_url, fake.url, **env)
    runtime = Runtime(settings)
    try:
        await runtime.start()
    except BaseException:
        await runtime.stop()
        raise
    return runtime


async def test_a_second_bot_with_another_key_exits_2_naming_secret_keys(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack
) -> None:
    first = await start_bot(tmp_path / "host-a", database_url, fake_slack)  # generates its key file
    try:
        key = (tmp_path / "host-a" / "data" / KEY_FILE_NAME).read_text().strip()
        assert await recorded(database_url) == key_fingerprint(key)
        assert key not in str(await recorded(database_url)), "a fingerprint, never the key"

        # Another host, no SECRET_KEYS: it would generate its own key file. It stops instead.
        (tmp_path / "host-b").mkdir()
        code, err = await run_bot(
            tmp_path / "host-b", fake_slack, SLACK_BOT_TOKEN="xoxb-test-token", DATABASE_URL=database_url
        )
        assert code == 2, err
        last = err.strip().splitlines()[-1]
        assert "SECRET_KEYS" in last and "same SECRET_KEYS" in last, last
        assert key not in err

        # With the first host's key it starts.
        second = await start_with(tmp_path, "host-c", database_url, fake_slack, SECRET_KEYS=key)
        await second.stop()
    finally:
        await first.slack.close()
        await first.runtime.stop()


async def test_rotation_new_key_first_needs_rotate_before_start(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack
) -> None:
    old, new = new_key(), new_key()
    runtime = await start_with(tmp_path, "a", database_url, fake_slack, SECRET_KEYS=old)
    await runtime.stop()

    # The rule: a process starts only when its FIRST key is the database's key. New key first, old still listed,
    # before `secrets rotate`: the rotation is not finished, and the process says what to run.
    with pytest.raises(ConfigError) as refused:
        await start_with(tmp_path, "b", database_url, fake_slack, SECRET_KEYS=f"{new},{old}")
    assert refused.value.variable == "SECRET_KEYS"
    assert "identity-bot secrets rotate" in str(refused.value)

    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "cli"), "SECRET_KEYS": f"{new},{old}"}
    await rotate_secrets(load_settings(env, require_slack=False))
    assert await recorded(database_url) == key_fingerprint(new)

    for keys in (f"{new},{old}", new):
        runtime = await start_with(tmp_path, "c", database_url, fake_slack, SECRET_KEYS=keys)
        await runtime.stop()
    with pytest.raises(ConfigError) as stale:  # a host left on the old key
        await start_with(tmp_path, "d", database_url, fake_slack, SECRET_KEYS=old)
    assert "same SECRET_KEYS" in str(stale.value)


async def test_rotate_refuses_keys_that_are_not_the_databases(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack
) -> None:
    old = new_key()
    runtime = await start_with(tmp_path, "a", database_url, fake_slack, SECRET_KEYS=old)
    await runtime.stop()
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(tmp_path / "cli"), "SECRET_KEYS": f"{new_key()},{new_key()}"}
    with pytest.raises(ConfigError) as refused:
        await rotate_secrets(load_settings(env, require_slack=False))
    assert refused.value.variable == "SECRET_KEYS"
    assert await recorded(database_url) == key_fingerprint(old), "nothing moved"


async def test_an_existing_database_records_its_key_on_first_start_if_the_key_reads_it(
    tmp_path: Path, database_url: str, fake_slack: FakeSlack
) -> None:
    key = new_key()
    db = Database(database_url)
    await db.upgrade()
    async with db.transaction() as session:  # a deployment from before fingerprints: a password, no fingerprint
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
                smtp_password_encrypted=SecretBox([key]).encrypt(PASSWORD),
            )
        )
        await session.execute(delete(KeyFingerprint))
    await db.dispose()

    with pytest.raises(ConfigError) as refused:  # a host with its own generated key file
        await start_with(tmp_path, "wrong", database_url, fake_slack)
    assert "can't be decrypted" in str(refused.value)
    assert await recorded(database_url) is None, "a key that can't read the data is not recorded"

    runtime = await start_with(tmp_path, "right", database_url, fake_slack, SECRET_KEYS=key)
    await runtime.stop()
    assert await recorded(database_url) == key_fingerprint(key)


def test_the_fingerprint_is_keyed_and_reveals_nothing() -> None:
    key = new_key()
    fingerprint = key_fingerprint(key)
    assert fingerprint == key_fingerprint(key) != key_fingerprint(new_key())
    assert key not in fingerprint and base64.urlsafe_b64decode(key).hex()[:16] not in fingerprint
    assert fingerprint not in SecretBox([key]).mac("otp"), "not the value the OTP HMACs use either"


# ---- the generated key file, with several processes starting at once --------------------------------------------


def _start_process(data_dir: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    barrier.wait(timeout=30)
    try:
        results.put(("ok", load_or_create_keys(None, Path(data_dir))))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", repr(exc)))


async def test_processes_starting_at_once_share_one_complete_key_file(tmp_path: Path) -> None:
    processes = 8
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    data_dir = tmp_path / "data"
    workers = [context.Process(target=_start_process, args=(str(data_dir), barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [await asyncio.to_thread(results.get, True, 60) for _ in workers]
    for worker in workers:
        await asyncio.to_thread(worker.join, 30)
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    keys = {tuple(value) for _, value in outcomes}
    assert len(keys) == 1 and len(next(iter(keys))) == 1, "every process got the same single key"
    path = data_dir / KEY_FILE_NAME
    assert path.read_text().strip() == next(iter(keys))[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME], "no temporary files left behind"


def test_an_empty_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_or_create_keys(None, tmp_path)
