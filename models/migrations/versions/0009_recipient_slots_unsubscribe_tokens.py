"""sending slots are recipients (sent_recipients); the per-message log goes; unsubscribe tokens

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 15:00:00

The limits now count recipients in `sent_recipients` instead of messages in `sent_messages`. So that an upgrade does
not hand out a fresh day of sending, every message of the last 24 hours that has no rows in `sent_recipients` yet
is carried over as one row per recipient it had (its `recipients` column), at the time it was sent, with an empty
recipient (such rows only count). Messages relayed by the 0006 code already have their rows, written just after
the relay: a sent message finding that many rows of its identity within RECORD_DELAY after it is not carried (so
nothing counts twice); messages still `reserved` (in flight, or left by a crash) never got any and are carried.
The 24 hours are the real clock's at upgrade time.

Downgrading rebuilds `sent_messages` from the last day of `sent_recipients`, one message per recipient (the old
code then counts at least as much as was sent).
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_WHEN = models.base.UTCDateTime(timezone=True)
_sent_messages = sa.table(
    "sent_messages",
    sa.column("id", sa.Integer),
    sa.column("identity_id", sa.Integer),
    sa.column("sent_at", _WHEN),
    sa.column("recipients", sa.Integer),
    sa.column("state", sa.String),
)
_sent_recipients = sa.table(
    "sent_recipients",
    sa.column("identity_id", sa.Integer),
    sa.column("team_id", sa.String),
    sa.column("recipient", sa.String),
    sa.column("recipient_key", sa.String),
    sa.column("state", sa.String),
    sa.column("sent_at", _WHEN),
)
_identities = sa.table("identities", sa.column("id", sa.Integer), sa.column("team_id", sa.String))
# The 0006 code writes a message's recipient rows after relaying it, within one SMTP session's deadline (at most 60 s).
RECORD_DELAY = timedelta(minutes=5)


def _carry_over_last_day() -> None:
    connection = op.get_bind()
    since = datetime.now(UTC) - timedelta(days=1)
    messages = connection.execute(
        sa.select(
            _sent_messages.c.identity_id,
            _identities.c.team_id,
            _sent_messages.c.sent_at,
            _sent_messages.c.recipients,
            _sent_messages.c.state,
        )
        .join(_identities, _identities.c.id == _sent_messages.c.identity_id)
        .where(_sent_messages.c.sent_at > since)
        .order_by(_sent_messages.c.sent_at)
    ).all()
    recorded: dict[int, list[datetime]] = {}
    for identity_id, sent_at in connection.execute(
        sa.select(_sent_recipients.c.identity_id, _sent_recipients.c.sent_at)
        .where(_sent_recipients.c.sent_at > since)
        .order_by(_sent_recipients.c.sent_at)
    ).all():
        recorded.setdefault(identity_id, []).append(sent_at)
    placeholders = []
    for identity_id, team_id, sent_at, recipients, state in messages:
        count = max(1, int(recipients or 1))
        if state == "sent" and _claim(recorded.get(identity_id, []), sent_at, count):
            continue  # relayed by the 0006 code: its recipients are already counted
        placeholders += [
            {
                "identity_id": identity_id,
                "team_id": team_id,
                "recipient": "",
                "recipient_key": "",
                "state": state,
                "sent_at": sent_at,
            }
        ] * count
    if placeholders:
        connection.execute(sa.insert(_sent_recipients), placeholders)


def _claim(recorded: list[datetime], sent_at: datetime, count: int) -> bool:
    """Take `count` recipient rows written within RECORD_DELAY after a message's slot was taken (the 0006 code
    records them once the relay is done); False, taking none, when there are not that many."""
    found = [i for i, at in enumerate(recorded) if sent_at <= at <= sent_at + RECORD_DELAY][:count]
    if len(found) < count:
        return False
    for i in reversed(found):
        del recorded[i]
    return True


def upgrade() -> None:
    _carry_over_last_day()
    with op.batch_alter_table("sent_messages") as batch:
        batch.drop_index("ix_sent_messages_identity_sent_at")
    op.drop_table("sent_messages")

    op.create_table(
        "unsubscribe_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=40), nullable=False),
        sa.Column("team_id", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("recipient_key", sa.String(length=320), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unsubscribe_tokens")),
        sa.UniqueConstraint("team_id", "recipient_key", name=op.f("uq_unsubscribe_tokens_team_id")),
        sa.UniqueConstraint("token", name=op.f("uq_unsubscribe_tokens_token")),
    )


def downgrade() -> None:
    op.drop_table("unsubscribe_tokens")
    op.create_table(
        "sent_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.CheckConstraint("state IN ('reserved', 'sent')", name=op.f("ck_sent_messages_state")),
        sa.ForeignKeyConstraint(
            ["identity_id"], ["identities.id"], name=op.f("fk_sent_messages_identity_id_identities"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_messages")),
    )
    with op.batch_alter_table("sent_messages") as batch:
        batch.create_index("ix_sent_messages_identity_sent_at", ["identity_id", "sent_at"], unique=False)
    connection = op.get_bind()
    since = datetime.now(UTC) - timedelta(days=1)
    rows = connection.execute(
        sa.select(_sent_recipients.c.identity_id, _sent_recipients.c.sent_at, _sent_recipients.c.state).where(
            _sent_recipients.c.sent_at > since
        )
    ).all()
    if rows:
        connection.execute(
            sa.insert(_sent_messages),
            [{"identity_id": i, "sent_at": at, "recipients": 1, "state": state} for i, at, state in rows],
        )
