"""Migrations keep what is stored: upgrading a database that holds data loses nothing, and the schema the
migrations build matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

import models.tables  # noqa: F401  (registers every table)
from models import AuditEvent, Database, IdentityKind, OtpChallenge, VerificationStep
from models.base import Base

ROWS_AT_0004 = [
    "INSERT INTO identities (id, team_id, kind, display_name, company_name, address, hourly_limit, daily_limit,"
    " forwarding_address, notices_channel, created_by, status, created_at, updated_at)"
    " VALUES (1, 'T1', 'platform', 'Jane', 'Acme', 'jane@p.example.com', 40, 200, 'j@acme.example.com', 'C1', 'U1',"
    " 'ready', '2026-11-01 10:00:00', '2026-11-01 10:00:00')",
    "INSERT INTO verification_steps (identity_id, step, status, attempt, detail, updated_at)"
    " VALUES (1, 'sending', 'verified', 1, '', '2026-11-01 10:00:00')",
    "INSERT INTO otp_challenges (identity_id, code_hmac, sent_to, created_at, expires_at, failed_attempts,"
    " closed_reason) VALUES (1, 'x$y', 'j@acme.example.com', '2026-11-01 10:00:00', '2026-11-01 10:10:00', 0,"
    " 'used')",
    "INSERT INTO audit_events (identity_id, actor, action, detail, created_at)"
    " VALUES (1, 'U1', 'identity.created', '{}', '2026-11-01 10:00:00')",
]


async def test_upgrading_a_database_with_data_keeps_every_row(blank_database_url: str) -> None:
    # SQLite rebuilds a table to add a CHECK constraint; with foreign keys on, dropping the old table would
    # cascade-delete every step, code and audit event of every identity.
    db = Database(blank_database_url)
    try:
        await db.upgrade("0004")
        async with db.transaction() as session:
            for statement in ROWS_AT_0004:
                await session.execute(text(statement))
        await db.upgrade()
        async with db.session() as session:
            counts = [
                await session.scalar(select(func.count()).select_from(t))
                for t in (VerificationStep, OtpChallenge, AuditEvent)
            ]
            kind = await session.scalar(text("SELECT kind FROM identities WHERE id = 1"))
            lifecycle = await session.scalar(text("SELECT lifecycle FROM identities WHERE id = 1"))
        assert counts == [1, 1, 1]
        assert kind == IdentityKind.PLATFORM
        assert lifecycle == "active"  # 0013: every identity that existed is in use
        if db.is_sqlite:
            async with db.engine.connect() as connection:
                assert (await connection.execute(text("PRAGMA foreign_key_check"))).all() == []
    finally:
        await db.dispose()


async def test_the_database_refuses_a_status_outside_its_vocabulary(db: Database) -> None:
    statement = ROWS_AT_0004[0].replace("'ready'", "'readyy'")
    try:
        async with db.transaction() as session:
            await session.execute(text(statement))
    except IntegrityError as exc:
        assert "status" in str(exc.orig)
    else:
        raise AssertionError("a status outside the vocabulary was stored")


async def test_migrations_build_the_schema_the_models_describe(db: Database) -> None:
    async with db.engine.connect() as connection:

        def differences(sync_connection):  # type: ignore[no-untyped-def]
            context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)

        assert await connection.run_sync(differences) == []


async def test_existing_suppressions_keep_working_for_their_team_after_0006(blank_database_url: str) -> None:
    from bot.services.gateway import Suppressions

    db = Database(blank_database_url)
    try:
        await db.upgrade("0005")
        async with db.transaction() as session:
            await session.execute(text(ROWS_AT_0004[0]))
            await session.execute(
                text(
                    "INSERT INTO inbound_messages (id, received_at, peer, mail_from, rcpt_tos, raw, size, dedup_key,"
                    " identity_id) VALUES (7, '2026-11-01 10:00:00', '', '', '[]', :raw, 1, 'k', 1)"
                ),
                {"raw": b"x"},
            )
            await session.execute(
                text(
                    "INSERT INTO suppressions (address, reason, source_message_id, created_at) VALUES"
                    " ('Sam+News@Customer.example.org', 'unsubscribe', 7, '2026-11-01 10:00:00'),"
                    " ('someone@else.example.org', 'hard_bounce', NULL, '2026-11-01 10:00:00')"
                )
            )
        await db.upgrade()
        suppressions = Suppressions(db)
        found = await suppressions.find("T1", "sam@customer.example.org")
        assert found is not None and found.team_id == "T1" and found.address_key == "sam@customer.example.org"
        assert await suppressions.find("T2", "sam@customer.example.org") is None, "it was the T1 team's opt-out"
        unknown = await suppressions.find("T2", "someone@else.example.org")
        assert unknown is not None and unknown.team_id is None, "a suppression whose team is unknown binds every team"
    finally:
        await db.dispose()


async def test_0009_carries_the_last_day_of_sent_messages_over_as_recipients(blank_database_url: str) -> None:
    """Upgrading must not hand out a fresh day of sending: every message of the last 24 h counts its recipients,
    whether it was only in sent_messages (before 0006) or already recorded per recipient (0006: not twice)."""
    from datetime import UTC, datetime, timedelta

    from bot.services.gateway import SendingLimits
    from models import SentRecipient

    now = datetime.now(UTC)
    db = Database(blank_database_url)
    try:
        await db.upgrade("0006")
        messages = [  # (minutes ago, recipients, state)
            (24 * 60 + 5, 5, "sent"),  # left the day window: not carried
            (23 * 60, 2, "sent"),  # in the day, before 0006 recorded anything
            (50, 3, "sent"),  # in the hour, before 0006
            (20, 1, "sent"),  # in the hour, under 0006: its recipient row exists
            (10, 2, "reserved"),  # in flight (or crashed) under 0006: no rows yet
        ]
        async with db.transaction() as session:
            await session.execute(text(ROWS_AT_0004[0]))
            for minutes, recipients, state in messages:
                await session.execute(
                    text(
                        "INSERT INTO sent_messages (identity_id, sent_at, recipients, state)"
                        " VALUES (1, :at, :n, :state)"
                    ),
                    {"at": _stored(db, now - timedelta(minutes=minutes)), "n": recipients, "state": state},
                )
            await session.execute(
                text(
                    "INSERT INTO sent_recipients (identity_id, team_id, recipient, recipient_key, message_id, state,"
                    " sent_at) VALUES (1, 'T1', 'a@x.example', 'a@x.example', '<m@x>', 'sent', :at)"
                ),
                {"at": _stored(db, now - timedelta(minutes=20) + timedelta(seconds=2))},
            )
        await db.upgrade()
        usage = await SendingLimits(db).usage(1)
        assert (usage.sent_last_hour, usage.sent_last_day) == (3 + 1 + 2, 2 + 3 + 1 + 2)
        async with db.session() as session:
            carried = list(await session.scalars(select(SentRecipient).where(SentRecipient.recipient == "")))
            tables = await session.run_sync(lambda s: inspect(s.connection()).get_table_names())
        assert len(carried) == 7 and {c.team_id for c in carried} == {"T1"}
        assert "sent_messages" not in tables and "unsubscribe_tokens" in tables
    finally:
        await db.dispose()


def _stored(db: Database, when: object) -> object:
    """A timestamp as the application stores it (SQLite keeps UTC text)."""
    from datetime import datetime

    assert isinstance(when, datetime)
    return when.replace(tzinfo=None).isoformat(" ") if db.is_sqlite else when
