"""the database records its encryption key's fingerprint; signed Slack requests already seen

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 15:00:00

key_fingerprint: one row, a keyed fingerprint (never the key) of the key that encrypts this database's secrets;
processes whose SECRET_KEYS do not match refuse to start. An existing database gets its row on the first start.
seen_requests: signatures of handled Slack requests until they expire, so a replayed request acts once.
"""

from alembic import op
import sqlalchemy as sa
import models.base


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_fingerprint",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.String(length=80), nullable=False),
        sa.Column("recorded_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_key_fingerprint_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_fingerprint")),
    )
    op.create_table(
        "seen_requests",
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("expires_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("signature", name=op.f("pk_seen_requests")),
    )
    with op.batch_alter_table("seen_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seen_requests_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("seen_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seen_requests_expires_at"))
    op.drop_table("seen_requests")
    op.drop_table("key_fingerprint")
