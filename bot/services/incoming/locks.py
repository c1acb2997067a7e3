"""Processing locks: "someone alive is processing this inbound message".

Whoever processes a message holds a lock that dies with its holder: a PostgreSQL session-level advisory lock on a
dedicated connection, or (SQLite) an flock on a file beside the database. The kernel or the database server releases
it when the process dies, so no timeout has to guess whether the holder is still alive."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url

from models import Database

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: SQLite then falls back to in-process locks
    fcntl = None  # type: ignore[assignment]


class ProcessingLocks(Protocol):
    def hold(self, message_id: int) -> AbstractAsyncContextManager[bool]:
        """Try to take the lock without waiting; yields whether we hold it. Released on exit, and by the OS or the
        database server if the process dies."""
        ...

    def done(self, message_id: int) -> None:
        """The message is processed (called while holding its lock): drop whatever the lock left behind."""
        ...


def processing_locks(db: Database) -> ProcessingLocks:
    if not db.is_sqlite:
        return AdvisoryLocks(db)
    path = make_url(db.url).database
    if path and path != ":memory:" and not path.startswith("file:") and fcntl is not None:
        return FileLocks(Path(f"{path}.processing"))
    return LocalLocks()


class AdvisoryLocks:
    """PostgreSQL: a session-level advisory lock, held on a dedicated connection while the message is processed.
    It belongs to the server-side session, so it vanishes with the connection when the process dies."""

    NAMESPACE = 0x1DB07  # first key of pg_try_advisory_lock(int, int): the inbound message locks of this product

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def hold(self, message_id: int) -> AsyncIterator[bool]:
        keys = {"ns": self.NAMESPACE, "id": message_id}
        async with self.db.engine.connect() as connection:
            held = bool(await connection.scalar(text("SELECT pg_try_advisory_lock(:ns, :id)"), keys))
            await connection.commit()  # the lock is session-level: do not sit idle in a transaction meanwhile
            if not held:
                yield False
                return
            try:
                yield True
            finally:
                try:
                    await connection.execute(text("SELECT pg_advisory_unlock(:ns, :id)"), keys)
                    await connection.commit()
                except BaseException:
                    # A pooled connection must never keep the lock: closing the session releases it.
                    await connection.invalidate()
                    raise

    def done(self, message_id: int) -> None:
        pass


class FileLocks:
    """SQLite: flock on one file per message in a directory beside the database (SQLite is local, so every process
    sharing it sees the same files). flock belongs to the open file, so it also excludes tasks of one process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @asynccontextmanager
    async def hold(self, message_id: int) -> AsyncIterator[bool]:
        assert fcntl is not None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / f"{message_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def done(self, message_id: int) -> None:
        # Safe while holding the lock: whoever opens the name afterwards locks a new file, then sees the row done.
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{message_id}.lock").unlink()


class LocalLocks:
    """In-memory SQLite or no flock: one process, so the lock only has to exclude this process's own tasks."""

    def __init__(self) -> None:
        self.held: set[int] = set()

    @asynccontextmanager
    async def hold(self, message_id: int) -> AsyncIterator[bool]:
        if message_id in self.held:
            yield False
            return
        self.held.add(message_id)
        try:
            yield True
        finally:
            self.held.discard(message_id)

    def done(self, message_id: int) -> None:
        pass
