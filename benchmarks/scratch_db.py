"""Scratch databases for the benchmarks: a fresh SQLite file, or a PostgreSQL database created for the run and
dropped after it (PostgreSQL at TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def prepare_database(kind: str, workdir: Path) -> tuple[str, str | None]:
    """A fresh database URL (and, for PostgreSQL, the scratch database's name)."""
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}", None
    import asyncpg

    name = f"idbot_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}", name


async def drop_database(name: str | None) -> None:
    if name is None:
        return
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
