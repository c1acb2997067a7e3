"""The identity-bot command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from models import Database, GatewayCredential, Identity, IdentityKind


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    clean.update({"DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "WARNING"}, **env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_db_upgrade_then_credentials_issue_prints_them_once_and_stores_a_hash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    done = await asyncio.to_thread(cli, tmp_path, "db", "upgrade", DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    db = Database(url)
    async with db.transaction() as session:
        session.add(
            Identity(
                team_id="T",
                kind=IdentityKind.PLATFORM,
                display_name="Lea",
                company_name="N",
                address="lea@mail.example.com",
                forwarding_address="l@n.example.com",
                notices_channel="C",
                created_by="U",
            )
        )
    issued = await asyncio.to_thread(cli, tmp_path, "credentials", "issue", "LEA@mail.example.com", DATABASE_URL=url)
    assert issued.returncode == 0, issued.stderr
    lines = issued.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["username", "password"]
    username, password = (line.split(": ", 1)[1] for line in lines)
    async with db.session() as session:
        stored = await session.scalar(select(GatewayCredential))
    assert stored is not None and stored.username == username and password not in stored.password_hash
    assert password not in issued.stderr

    revoked = await asyncio.to_thread(cli, tmp_path, "credentials", "revoke", username, DATABASE_URL=url)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    unknown = await asyncio.to_thread(cli, tmp_path, "credentials", "issue", "nobody@x.example.com", DATABASE_URL=url)
    assert unknown.returncode == 1 and "nobody@x.example.com" in unknown.stderr
    await db.dispose()


def test_generate_key_prints_a_fernet_key(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    out = cli(tmp_path, "secrets", "generate-key")
    assert out.returncode == 0
    Fernet(out.stdout.strip().encode())


def test_key_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    from bot.services.secrets import load_or_create_keys

    keys = load_or_create_keys(None, tmp_path / "data")
    path = tmp_path / "data" / "secret.key"
    assert len(keys) == 1 and path.exists()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_or_create_keys(None, tmp_path / "data") == keys, "the same key on the next start"


def test_settings_can_come_from_a_dotenv_file(tmp_path: Path) -> None:
    db_file = tmp_path / "from-dotenv.db"
    (tmp_path / ".env").write_text(f"DATABASE_URL=sqlite:///{db_file}\nLOG_LEVEL=WARNING\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",) and not k.startswith("SLACK_")}
    env["DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert db_file.exists(), "DATABASE_URL was read from .env"
