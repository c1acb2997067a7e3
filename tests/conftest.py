"""Shared fixtures: databases (SQLite and PostgreSQL), the fake Slack, and the running bot over real HTTP."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import Runtime
from bot.config import Settings, load_settings
from bot.logs import quiet_libraries
from bot.sandbox import FakeSlack, SlackClient
from models import Database

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"  # the app-level token the fake Slack accepts for Socket Mode
PLATFORM_DOMAIN = "platform.example.com"
TRACKING_DOMAIN = "track.example.com"
TEAM = "T0TEST"
LEAD = "U_LEAD"
CHANNEL = "C_TEAM"

_pg_state: dict[str, str | None] = {}

# Whole-run checks (scopes, secrets in the log) live in tests/suite_checks.py, a plugin: no test has to run last.
pytest_plugins = ["tests.suite_checks"]


def pytest_configure(config: pytest.Config) -> None:
    quiet_libraries()  # as the runtime does; also keeps the test mail servers from logging AUTH lines


async def postgres_problem() -> str | None:
    """None when PostgreSQL is reachable, else why not (checked once per session)."""
    if "problem" not in _pg_state:
        import asyncpg

        try:
            conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
            await conn.close()
            _pg_state["problem"] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
            _pg_state["problem"] = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc!r}"
    return _pg_state["problem"]


async def _fresh_postgres_database(*, prefix: str = "idbot", template: str | None = None) -> tuple[str, str]:
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


async def _drop_postgres_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# Migrating a fresh database costs ~0.4 s (SQLite rebuilds tables to add constraints); most tests need the schema,
# not the migration. So each session migrates one template per database once, and tests get copies of it:
# `database_url` / `sqlite_url` are migrated to head, `blank_database_url` is empty (migration tests).
_templates: dict[str, str] = {}


async def _migrated(url: str) -> None:
    database = Database(url)
    try:
        await database.upgrade()
    finally:
        await database.dispose()  # SQLite checkpoints the WAL into the file when its last connection closes


async def _sqlite_copy(tmp_path: Path) -> str:
    if "sqlite" not in _templates:
        directory = Path(tempfile.mkdtemp(prefix="idbot-template-"))
        await _migrated(f"sqlite:///{directory / 'template.db'}")
        _templates["sqlite"] = str(directory / "template.db")
    target = tmp_path / "bot.db"
    assert not Path(_templates["sqlite"] + "-wal").exists(), "the template's WAL was not checkpointed"
    shutil.copyfile(_templates["sqlite"], target)
    target.chmod(0o600)
    return f"sqlite:///{target}"


async def _postgres_template() -> str:
    if "postgresql" not in _templates:
        name, url = await _fresh_postgres_database(prefix="idbot_template")
        await _migrated(url)
        _templates["postgresql"] = name
    return _templates["postgresql"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    name = _templates.get("postgresql")
    if name:
        import asyncio

        asyncio.run(_drop_postgres_database(name))


async def _database(request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield await _sqlite_copy(tmp_path) if migrated else f"sqlite:///{tmp_path / 'bot.db'}"
        return
    problem = await postgres_problem()
    if problem:
        pytest.skip(problem)
    name, url = await _fresh_postgres_database(template=await _postgres_template() if migrated else None)
    try:
        yield url
    finally:
        await _drop_postgres_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database migrated to head: SQLite file, or a new PostgreSQL database (skipped with the reason when
    none is reachable)."""
    async for url in _database(request, tmp_path, migrated=True):
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def blank_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database (no tables): for tests of the migrations themselves."""
    async for url in _database(request, tmp_path, migrated=False):
        yield url


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database migrated to head."""
    return await _sqlite_copy(tmp_path)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    yield database
    await database.dispose()


def make_settings(tmp_path: Path, database_url: str, slack_api_url: str, **overrides: str) -> Settings:
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_api_url,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url,
        "PLATFORM_DOMAIN": PLATFORM_DOMAIN,
        "TRACKING_DOMAIN": TRACKING_DOMAIN,
        "INBOUND_SMTP": "127.0.0.1:0",
        "SUBMISSION_SMTP": "127.0.0.1:0",
        "SMTP_ALLOW_PRIVATE_HOSTS": "true",
        "LOG_LEVEL": "DEBUG",
    }
    env.update(overrides)
    return load_settings(env)


@dataclass
class Bot:
    """The running app, the fake Slack it talks to, and a client that plays Slack towards it."""

    runtime: Runtime
    fake: FakeSlack
    slack: SlackClient
    tmp_path: Path

    @property
    def db(self) -> Database:
        return self.runtime.db

    async def open_new_identity_form(self, *, user: str = LEAD, channel: str = CHANNEL) -> dict[str, Any]:
        mark = self.fake.mark()
        ack = await self.slack.command("new", user=user, channel=channel)
        assert ack.status == 200, ack
        call = await self.fake.wait_for("views.open", after=mark)
        assert call.ok, call.response
        return call.response["view"]

    async def loaded_form(self, mark: int, callback_id: str) -> dict[str, Any]:
        """Modals that need data open with "Loading…" and are then filled in: the filled view."""
        call = await self.fake.wait_for(
            "views.update", lambda c: c.ok and c.response["view"].get("callback_id") == callback_id, after=mark
        )
        return call.response["view"]

    async def fill_platform_form(self, view_id: str, **fields: str) -> None:
        values = {
            "display_name": "Jane Doe",
            "company_name": "Acme Inc.",
            "forwarding_address": "jane@acme.example.com",
        }
        values.update(fields)
        for block, value in values.items():
            self.slack.type(view_id, block, value)


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(token=BOT_TOKEN, team_id=TEAM, app_token=APP_TOKEN)
    await fake.start()
    for user in (LEAD, "U_OTHER", "U_MANAGER", "U_MANAGER2"):
        fake.add_user(user)
    yield fake
    from tests.suite_checks import COLLECTOR

    COLLECTOR.methods.update(call.method for call in fake.calls)
    await fake.stop()


async def start_bot(tmp_path: Path, database_url: str, fake: FakeSlack, **overrides: str) -> Bot:
    settings = make_settings(tmp_path, database_url, fake.url, **overrides)
    runtime = Runtime(settings)
    await runtime.start()
    assert runtime.http_url
    if settings.socket_mode:  # SLACK_APP_TOKEN given: requests go as envelopes over the app's websocket
        return Bot(runtime, fake, SlackClient.socket_mode(fake, team_id=TEAM), tmp_path)
    return Bot(runtime, fake, SlackClient(runtime.http_url, SIGNING_SECRET, fake, team_id=TEAM), tmp_path)


@pytest.fixture
async def bot(tmp_path: Path, database_url: str, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    """The bot on both databases."""
    b = await start_bot(tmp_path, database_url, fake_slack)
    yield b
    await b.slack.close()
    await b.runtime.stop()


@pytest.fixture
async def sqlite_bot(tmp_path: Path, sqlite_url: str, fake_slack: FakeSlack) -> AsyncIterator[Bot]:
    """The bot on SQLite only (for behaviour that does not depend on the database)."""
    b = await start_bot(tmp_path, sqlite_url, fake_slack)
    yield b
    await b.slack.close()
    await b.runtime.stop()
