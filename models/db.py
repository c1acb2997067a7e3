"""Engine, sessions and migrations for SQLite (one process) and PostgreSQL (several)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from models.base import Base

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def normalize_database_url(url: str) -> str:
    """Accept the usual spellings and pick the async driver: sqlite:// -> aiosqlite, postgresql:// -> asyncpg."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.render_as_string(hide_password=False)


class Database:
    """Owns the engine and hands out sessions. Every write on SQLite takes the write lock up front
    (BEGIN IMMEDIATE) so check-then-write decisions are atomic across processes, as row locks are on PostgreSQL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _sqlite_immediate_transactions(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, for SQLite on disk; None otherwise."""
        name = make_url(self.url).database if self.is_sqlite else None
        return Path(name) if name and name != ":memory:" and not name.startswith("file:") else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> bool:
        """Whether the database answers (the health check). Never raises."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            log.exception("health check: database unreachable")
            return False
        return True

    async def upgrade(self, revision: str = "head") -> None:
        """Apply every pending migration (idempotent; safe to call on each start).

        On SQLite, foreign keys are off while migrations run: SQLite changes a table by rebuilding it, and dropping
        the old copy with foreign keys on would cascade-delete every row that refers to it. The references are
        checked once the migrations are done."""
        async with self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection if self.is_sqlite else None
            if driver is not None:
                await driver.execute("PRAGMA foreign_keys=OFF")  # outside any transaction, where SQLite honours it
            try:
                async with conn.begin():
                    await conn.run_sync(_run_upgrade, revision)
                    if driver is not None:
                        broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                        if broken:
                            raise RuntimeError(f"migration left {len(broken)} broken reference(s); rolled back")
            finally:
                if driver is not None:
                    await driver.execute("PRAGMA foreign_keys=ON")

    async def create_tables(self, *tables: type[Base]) -> None:
        """Create these tables where missing: for a database outside the migrations (the replay guard's own SQLite
        file, whose rows live minutes and which may be deleted at any time)."""
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all, tables=[t.__table__ for t in tables])

    async def dispose(self) -> None:
        await self.engine.dispose()


def dialect_insert(db: Database) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO NOTHING on both SQLite and PostgreSQL."""
    return sqlite.insert if db.is_sqlite else postgresql.insert


def without_sql_parameters(error: BaseException) -> BaseException:
    """Make SQLAlchemy errors in the chain print without their bound parameters: those can be message bodies or
    addresses, which never go to the log. Returns the same error, for `exc_info=`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StatementError):
            current.hide_parameters = True
        current = current.__cause__ or current.__context__
    return error


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _run_upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), revision)


def _sqlite_immediate_transactions(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
