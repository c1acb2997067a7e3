"""Gateway credentials: a keyed fast hash (HMAC-SHA-256 under a key derived from SECRET_KEYS), credentials issued
with scrypt moved over at their next login, re-keying after a key rotation, and the AUTH cut-off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiosmtplib
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, select, update

from bot.cli import main as cli_main
from bot.services.errors import NotFound
from bot.services.gateway.credentials import GatewayCredentials, hash_password, verify_password
from bot.services.secrets import SecretBox
from bot.smtp.gateway import AUTH_FAILURE_DELAY, MAX_AUTH_ATTEMPTS, SubmissionGateway
from models import AuditEvent, Database, GatewayCredential
from tests.gateway_helpers import TEST_SECRET_KEY, RecordingRelay, make_identity, make_submission, secret_box

SENDER = "jane@acme.example.com"


async def stored_hash(db: Database, username: str) -> str:
    async with db.session() as session:
        return str(
            await session.scalar(select(GatewayCredential.password_hash).where(GatewayCredential.username == username))
        )


async def test_credentials_store_only_a_keyed_hash_and_authenticate(db: Database) -> None:
    identity = await make_identity(db, "Mixed.Case@acme.example.com")
    credentials = GatewayCredentials(db, secret_box())
    issued = await credentials.issue("  mixed.case@ACME.example.com ", actor="U_LEAD")
    assert issued.username.startswith("mixed.case-") and len(issued.username) == len("mixed.case-") + 6
    assert issued.password not in repr(issued)

    async with db.session() as session:
        row = (await session.execute(select(GatewayCredential))).scalar_one()
        events = list((await session.execute(select(AuditEvent))).scalars())
    assert row.identity_id == identity.id and row.created_by == "U_LEAD"
    scheme, digest = row.password_hash.split("$")
    assert scheme == "hmac-sha256" and len(digest) == 64 and issued.password not in row.password_hash
    # Keyed: without the secret key the stored value can't be checked (another key gives another value).
    other = GatewayCredentials(db, SecretBox([Fernet.generate_key().decode()]))
    assert await other.authenticate(issued.username, issued.password) is None
    assert [(e.action, e.actor, e.identity_id) for e in events] == [
        ("gateway.credential_issued", "U_LEAD", identity.id)
    ]
    assert issued.password not in json.dumps(events[0].detail)

    assert await credentials.authenticate(issued.username, issued.password) == identity.id
    assert await credentials.authenticate(issued.username, issued.password + "x") is None
    assert await credentials.authenticate("nobody-000000", issued.password) is None

    second = await credentials.issue(identity.address)
    assert second.username != issued.username and second.password != issued.password
    assert await credentials.authenticate(second.username, issued.password) is None, "passwords are per credential"
    assert await credentials.revoke(issued.username) is True
    assert await credentials.authenticate(issued.username, issued.password) is None
    assert await credentials.authenticate(second.username, second.password) == identity.id

    with pytest.raises(NotFound):
        await credentials.issue("unknown@acme.example.com")


async def test_a_credential_issued_with_scrypt_works_once_more_and_is_then_stored_keyed(db: Database) -> None:
    identity = await make_identity(db, SENDER)
    credentials = GatewayCredentials(db, secret_box())
    issued = await credentials.issue(SENDER)
    # As the code before the keyed hash stored it.
    async with db.transaction() as session:
        await session.execute(
            update(GatewayCredential)
            .where(GatewayCredential.username == issued.username)
            .values(password_hash=hash_password(issued.password))
        )
    assert (await stored_hash(db, issued.username)).startswith("scrypt$16384$8$1$")

    assert await credentials.authenticate(issued.username, "wrong") is None
    assert (await stored_hash(db, issued.username)).startswith("scrypt$"), "a wrong password changes nothing"
    assert await credentials.authenticate(issued.username, issued.password) == identity.id
    assert (await stored_hash(db, issued.username)).startswith("hmac-sha256$")
    assert await credentials.authenticate(issued.username, issued.password) == identity.id
    assert await credentials.authenticate(issued.username, "wrong") is None

    assert not verify_password("x", "scrypt$notanumber$8$1$AA==$AA==")
    assert not verify_password("x", "scrypt$1073741824$8$1$AA==$AA==")  # absurd cost from a tampered row


async def test_after_a_key_rotation_credentials_still_work_and_move_to_the_new_key(db: Database) -> None:
    identity = await make_identity(db, SENDER)
    issued = await GatewayCredentials(db, secret_box()).issue(SENDER)
    before = await stored_hash(db, issued.username)

    new_key = Fernet.generate_key().decode()
    rotated = GatewayCredentials(db, SecretBox([new_key, TEST_SECRET_KEY]))
    assert await rotated.authenticate(issued.username, issued.password) == identity.id
    after = await stored_hash(db, issued.username)
    assert after != before and after.startswith("hmac-sha256$")
    # Now keyed under the new key: it works once the old key is dropped.
    assert await GatewayCredentials(db, SecretBox([new_key])).authenticate(issued.username, issued.password) == (
        identity.id
    )


async def test_a_wrong_auth_is_answered_after_a_pause_and_counts_towards_the_cut_off(db: Database) -> None:
    await make_identity(db, SENDER)
    credentials = GatewayCredentials(db, secret_box())
    issued = await credentials.issue(SENDER)
    gateway = SubmissionGateway(make_submission(db, RecordingRelay()))
    assert gateway.handler.auth_failure_delay == AUTH_FAILURE_DELAY == 1.0
    pauses: list[str] = []

    async def pause() -> None:  # the real one sleeps AUTH_FAILURE_DELAY; here it only records
        pauses.append("pause")

    gateway.handler.refused_auth_pause = pause  # type: ignore[method-assign]
    await gateway.start("127.0.0.1", 0)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.port, start_tls=False, timeout=10)
    try:
        await client.connect()
        await client.ehlo()
        for n in range(MAX_AUTH_ATTEMPTS):  # one AUTH command each
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
                await client.auth_plain(issued.username, "wrong")
            assert refused.value.code == 535 and len(pauses) == n + 1
        # The next AUTH on this connection - even with the right password - is refused and the connection ends.
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as cut:
            await client.auth_plain(issued.username, issued.password)
        assert cut.value.code == 421
        # A right password on a new connection is answered at once.
        fresh = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.port, start_tls=False, timeout=10)
        await fresh.connect()
        await fresh.ehlo()
        assert (await fresh.auth_plain(issued.username, issued.password)).code == 235
        fresh.close()
        assert len(pauses) == MAX_AUTH_ATTEMPTS
    finally:
        client.close()
        await gateway.stop()


async def test_credentials_cli_prints_username_and_password_once(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECRET_KEYS", TEST_SECRET_KEY)

    def issue_credentials_cli(address: str) -> int:
        return cli_main(["credentials", "issue", address])

    db = Database(sqlite_url)
    await db.upgrade()
    identity = await make_identity(db, SENDER)
    await db.dispose()

    assert await asyncio.to_thread(issue_credentials_cli, SENDER) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("username: ") and out[1].startswith("password: ")
    username, password = out[0].removeprefix("username: "), out[1].removeprefix("password: ")

    db = Database(sqlite_url)
    try:
        assert await GatewayCredentials(db, secret_box()).authenticate(username, password) == identity.id
    finally:
        await db.dispose()

    assert await asyncio.to_thread(issue_credentials_cli, "nobody@acme.example.com") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "nobody@" in captured.err


async def test_wrong_auths_are_refused_from_memory_but_a_revocation_counts_at_once(db: Database) -> None:
    identity = await make_identity(db, SENDER)
    gateway_process = GatewayCredentials(db, secret_box())
    cli_process = GatewayCredentials(db, secret_box())  # another process: its own memory
    issued = await cli_process.issue(SENDER)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "gateway_credentials" in statement:
            statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await gateway_process.authenticate(issued.username, "wrong") is None
        assert len(statements) == 1
        for _ in range(5):  # the flood: no more queries
            assert await gateway_process.authenticate(issued.username, "wrong") is None
            assert await gateway_process.authenticate("nobody-000000", "wrong") is None
        assert len(statements) == 2  # the unknown username was looked up once too
        assert await gateway_process.authenticate(issued.username, issued.password) == identity.id
        assert len(statements) == 3, "an acceptance always reads the database"

        await cli_process.revoke(issued.username)
        assert await gateway_process.authenticate(issued.username, issued.password) is None, "revoked: at once"
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
